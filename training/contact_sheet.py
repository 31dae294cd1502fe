"""Before/after contact sheets, for looking at outputs on real photos.

    python -m training.contact_sheet ../shared/data/real-masked out/unmasked out/sheets/real
    python -m training.contact_sheet ../shared/data/real-masked out/unmasked-1.1 out/unmasked \
        docs/compare --only 1237.png 1805.png --cols 1 --label 1.1 --label 2.0

Writes PREFIX_01.png, PREFIX_02.png, ...: each tile is the input beside its outputs (one per
output folder, labelled with `--label`), marked with the file name; a missing output (no face
found) is shown as a red tile.
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
    # Scaled to fit the tile, up as well as down: a small face photo shrunk only would stay too
    # small to judge beside the large ones.
    scale = size / max(image.size)
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS
    )
    canvas = np.full((size, size, 3), 40, np.uint8)
    arr = np.asarray(image)
    y, x = (size - arr.shape[0]) // 2, (size - arr.shape[1]) // 2
    canvas[y : y + arr.shape[0], x : x + arr.shape[1]] = arr
    return canvas


def _label(image: np.ndarray, text: str) -> None:
    cv2.putText(image, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)


def row(before: Path, afters: list[Path], size: int, labels: list[str]) -> np.ndarray:
    tiles = [tile(before, size)]
    _label(tiles[0], before.stem)
    for index, after_dir in enumerate(afters):
        after = after_dir / before.name
        tiles.append(
            tile(after, size) if after.is_file() else np.full((size, size, 3), (150, 0, 0), np.uint8)
        )
        if index < len(labels):
            _label(tiles[-1], labels[index])
    return np.hstack(tiles)


def write_sheets(
    before_dir: Path,
    after_dirs: list[Path],
    prefix: Path,
    size: int = 160,
    cols: int = 4,
    rows: int = 6,
    only: list[str] | None = None,
    labels: list[str] | None = None,
) -> list[Path]:
    files = list_images(before_dir)
    if only:
        files = [before_dir / name for name in only]
    per_sheet = cols * min(rows, -(-len(files) // cols))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for n, start in enumerate(range(0, len(files), per_sheet), 1):
        tiles = [row(f, after_dirs, size, labels or []) for f in files[start : start + per_sheet]]
        tiles += [np.zeros_like(tiles[0])] * (per_sheet - len(tiles))
        grid = np.vstack([np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(per_sheet // cols)])
        path = prefix.with_name(f"{prefix.name}_{n:02d}.png")
        Image.fromarray(grid).save(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path, help="folder of input photos")
    parser.add_argument("after", type=Path, nargs="+", help="one or more folders of outputs")
    parser.add_argument("prefix", type=Path, help="sheets are written as PREFIX_01.png, ...")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--only", nargs="+", help="these input file names only, in this order")
    parser.add_argument("--label", action="append", help="label of each output folder, in order")
    args = parser.parse_args()
    sheets = write_sheets(
        args.before, args.after, args.prefix, args.size, args.cols, only=args.only, labels=args.label
    )
    for path in sheets:
        print(path)


if __name__ == "__main__":
    main()
