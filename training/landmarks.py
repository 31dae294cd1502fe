"""Compute the face mesh of every training image once and cache it.

The renderer fits synthetic masks to these landmarks, and the dataset aligns each crop from the
mesh's eyes exactly as inference does, so the mesh comes from the same `FaceDetector.detect`.

    python -m training.landmarks ../shared/data/train/utkface cache/utkface.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from qmask.faces import FaceDetector
from qmask.imageio import FORMAT_BY_SUFFIX


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FORMAT_BY_SUFFIX)


def compute_landmarks(files: list[Path]) -> tuple[list[str], np.ndarray]:
    """Names of the images where a mesh fitted, and their meshes (N, 478, 2) float32."""
    names, meshes = [], []
    with FaceDetector() as detector:
        for path in tqdm(files, desc="landmarks", unit="img"):
            rgb = np.asarray(Image.open(path).convert("RGB"))
            faces = [f for f in detector.detect(rgb) if f.mesh is not None]
            if faces:
                names.append(path.name)
                meshes.append(faces[0].mesh.astype(np.float32))
    return names, np.stack(meshes) if meshes else np.zeros((0, 478, 2), np.float32)


def load_landmarks(cache: Path) -> dict[str, np.ndarray]:
    data = np.load(cache)
    return dict(zip(data["names"].tolist(), data["meshes"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("faces", type=Path, help="folder of unmasked face photos")
    parser.add_argument("out", type=Path, help="cache file (.npz)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args()
    files = list_images(args.faces)[: args.limit]
    names, meshes = compute_landmarks(files)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, names=np.array(names), meshes=meshes)
    print(f"{len(names)}/{len(files)} faces fitted -> {args.out}")


if __name__ == "__main__":
    main()
