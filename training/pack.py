"""A face pack: the training photos' JPEG bytes and face meshes in one file.

    python -m training.pack ../shared/data/train/utkface cache/utkface.npz cache/utkface_pack.npz
    python -m training.pack ... cache/gpu/pack.npz --max-mib 36   # what a GPU run carries (make gpu-pack)

Training reads the pack into memory once, so the CPU cores spend their time on the networks, not
on opening 23k files, and a GPU machine (which cannot see ../shared) gets everything it needs in
one file. The photos keep their JPEG bytes (decoding a 200 px JPEG costs well under a millisecond;
decoded they would be 15 times larger), the meshes are stored in half precision (an eighth of a
pixel at this size). The held-out slice (`is_heldout`) never goes into a pack.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import cv2
import numpy as np


def _name_hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


def is_heldout(name: str) -> bool:
    """A fixed 5% of the training folder never trained on, for the per-group evaluation."""
    return _name_hash(name) % 100 < 5


class FacePack:
    """Photos (decoded on demand) and meshes of a pack, all held in memory."""

    def __init__(self, names: list[str], blobs: np.ndarray, offsets: np.ndarray, meshes: np.ndarray) -> None:
        self.names, self._blobs, self._offsets, self._meshes = names, blobs, offsets, meshes

    @classmethod
    def load(cls, path: Path, limit: int | None = None) -> FacePack:
        with np.load(path) as data:
            names = data["names"].tolist()[:limit]
            offsets = data["offsets"][: len(names) + 1]
            return cls(names, data["blobs"][: offsets[-1]], offsets, data["meshes"][: len(names)])

    def __len__(self) -> int:
        return len(self.names)

    def image(self, index: int) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        blob = self._blobs[self._offsets[index] : self._offsets[index + 1]]
        return cv2.cvtColor(cv2.imdecode(blob, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def mesh(self, index: int) -> np.ndarray:
        """(478, 2) float32 image pixels."""
        return self._meshes[index].astype(np.float32)


def build_pack(faces_dir: Path, landmarks: Path, out: Path, max_bytes: int | None = None) -> int:
    """Write the pack of every face with a cached mesh (held-out slice excluded), stopping before
    `max_bytes`; returns the number of faces packed.

    The faces go in the order of their names' hashes, not of their names: UTKFace's names begin
    with the age, so a pack cut by size in name order held only faces under 27 and over 99."""
    # Imported here: training.landmarks needs the face detector (mediapipe), which training itself
    # does not, and a GPU machine may lack.
    from training.landmarks import load_landmarks

    meshes = load_landmarks(landmarks)
    names, blobs, kept = [], [], []
    size = 0
    for name in sorted((n for n in meshes if not is_heldout(n)), key=_name_hash):
        blob = (faces_dir / name).read_bytes()
        size += len(blob) + 478 * 2 * 2
        if max_bytes is not None and size > max_bytes:
            break
        names.append(name)
        blobs.append(np.frombuffer(blob, np.uint8))
        kept.append(meshes[name].astype(np.float16))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        names=np.array(names),
        blobs=np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
        offsets=offsets,
        meshes=np.stack(kept) if kept else np.zeros((0, 478, 2), np.float16),
    )
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("faces", type=Path, help="folder of unmasked face photos")
    parser.add_argument("landmarks", type=Path, help="their cached meshes (python -m training.landmarks)")
    parser.add_argument("out", type=Path, help="the pack (.npz)")
    parser.add_argument("--max-mib", type=float, default=None, help="stop before the pack reaches this size")
    args = parser.parse_args()
    max_bytes = None if args.max_mib is None else int(args.max_mib * 2**20)
    count = build_pack(args.faces, args.landmarks, args.out, max_bytes)
    print(f"{count} faces -> {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
