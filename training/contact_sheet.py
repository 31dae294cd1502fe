"""Before/after contact sheets, for looking at outputs on real photos.

    python -m training.contact_sheet ../shared/data/real-masked out/unmasked out/sheets/real

Writes PREFIX_01.png, PREFIX_02.png, ...: each tile is the input beside the output, labelled with
the file name; a missing output (no face found) is shown as a red tile.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.landmarks import list_images


def tile(path: Path, size: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    image.thumbnail((size, size))
    canvas = np.full((size, size, 3), 40, np.uint8)
    arr = np.asarray(image)
    y, x = (size - arr.shape[0]) // 2, (size - arr.shape[1]) // 2
    canvas[y : y + arr.shape[0], x : x + arr.shape[1]] = arr
    return canvas


def pair(before: Path, after: Path, size: int) -> np.ndarray:
    right = tile(after, size) if after.is_file() else np.full((size, size, 3), (150, 0, 0), np.uint8)
    out = np.hstack([tile(before, size), right])
    cv2.putText(out, before.stem, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def write_sheets(
    before_dir: Path, after_dir: Path, prefix: Path, size: int = 160, cols: int = 4, rows: int = 6
) -> list[Path]:
    files = list_images(before_dir)
    per_sheet = cols * rows
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for n, start in enumerate(range(0, len(files), per_sheet), 1):
        tiles = [pair(f, after_dir / f.name, size) for f in files[start : start + per_sheet]]
        tiles += [np.zeros_like(tiles[0])] * (per_sheet - len(tiles))
        grid = np.vstack([np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(rows)])
        path = prefix.with_name(f"{prefix.name}_{n:02d}.png")
        Image.fromarray(grid).save(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    for path in write_sheets(args.before, args.after, args.prefix, args.size):
        print(path)


if __name__ == "__main__":
    main()
