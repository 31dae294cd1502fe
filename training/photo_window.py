"""Where the training photos lie in the canonical crop (`qmask.align.TRAINING_PHOTO_WINDOW`).

    python -m training.photo_window cache/utkface_pack.npz

UTKFace's aligned photos cover only the middle of the crop; the rest is their mirrored
surroundings, which an inpainter trained with `erase_outside_photo` gets erased. So it has only
ever seen context inside that window, and the pipeline erases what lies outside it too (README,
"How it works"). Printed: the 10th percentile of the photos' left and top edges in the crop and the
90th of their right and bottom edges (x0, y0, x1, y1), over a fixed sample of the pack.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qmask.align import eyes_to_crop, inside_photo, mesh_eyes
from training.pack import FacePack


def photo_window(pack: FacePack, count: int = 2000, percent: float = 10, seed: int = 0) -> tuple[int, ...]:
    """(x0, y0, x1, y1) in crop pixels (x1, y1 exclusive) from `count` photos of the pack."""
    rng = np.random.default_rng(seed)
    edges = []
    for index in rng.choice(len(pack), min(count, len(pack)), replace=False):
        inside = inside_photo(pack.image(int(index)).shape, eyes_to_crop(mesh_eyes(pack.mesh(int(index)))))
        ys, xs = np.nonzero(inside > 0.5)
        edges.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    edges = np.array(edges)
    low = np.percentile(edges[:, :2], percent, axis=0)
    high = np.percentile(edges[:, 2:], 100 - percent, axis=0)
    return tuple(round(float(v)) for v in (*low, *high))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pack", type=Path, help="the training pack (python -m training.pack)")
    parser.add_argument("--count", type=int, default=2000, help="photos sampled")
    args = parser.parse_args()
    print(photo_window(FacePack.load(args.pack), args.count))


if __name__ == "__main__":
    main()
