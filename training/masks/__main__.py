"""Preview a grid of masked faces (the synthetic masks of `training.masks`):

    python -m training.masks --faces ../shared/data/train/utkface --landmarks cache/utkface.npz \
        --split train --out out/mask_preview_train.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.masks.renderer import MaskRenderer


def _preview(args: argparse.Namespace) -> None:
    # Imported here: it loads MediaPipe, which rendering itself does not need.
    from training.landmarks import load_landmarks

    meshes = load_landmarks(args.landmarks)
    names = sorted(n for n in meshes if (args.faces / n).exists())
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(names), size=min(args.n, len(names)), replace=False)
    renderer = MaskRenderer(args.templates, split=args.split)
    tiles, alphas = [], []
    for i in picks:
        rgb = np.asarray(Image.open(args.faces / names[i]).convert("RGB"))
        out = renderer.render(rgb, meshes[names[i]], rng)
        tile = cv2.resize(out.image, (200, 200), interpolation=cv2.INTER_AREA)
        cv2.putText(
            tile, out.kind[:32], (3, 195), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 0), 1, cv2.LINE_AA
        )
        tiles.append(tile)
        alpha = cv2.resize((out.alpha * 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_AREA)
        alphas.append(np.repeat(alpha[..., None], 3, -1))
    cols = args.cols
    rows = [tiles[k : k + cols] for k in range(0, len(tiles), cols)] + [alphas[:cols]]
    blank = np.zeros((200, 200, 3), np.uint8)
    grid = np.vstack([np.hstack(r + [blank] * (cols - len(r))) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"{len(tiles)} faces -> {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = Path(__file__).resolve().parents[3] / "shared" / "data"
    parser.add_argument("--faces", type=Path, required=True, help="folder of the face images")
    parser.add_argument("--landmarks", type=Path, required=True, help="mesh cache from training.landmarks")
    parser.add_argument(
        "--templates", type=Path, default=data / "mask-templates", help="mask-templates folder"
    )
    parser.add_argument("--split", choices=["train", "heldout"], default="train")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    _preview(parser.parse_args())


if __name__ == "__main__":
    main()
