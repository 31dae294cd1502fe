"""Shared fixtures: the real data beside the repo (../shared/data), one face detector and one real
TorchServe for the serving and frontend tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import data
from qmask.faces import FaceDetector
from tests.torchserve_fixture import Server, torchserve

# One data root for the tests and the benchmarks (benchmarks/data.py).
REPO, DATA, BENCH, REAL_MASKED = data.REPO, data.DATA, data.BENCH, data.REAL_MASKED
UTKFACE = DATA / "train" / "utkface"
LFW = DATA / "eval" / "lfw"


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="session")
def real_masked_sample() -> list[Path]:
    """A fixed sample: every fifth real masked photo in name order."""
    return sorted(REAL_MASKED.iterdir())[::5]


TINY_SEGMENTER = {"in_channels": 3, "out_channels": 1, "base_channels": 8, "max_channels": 32, "depth": 3,
                  "bottleneck_blocks": 1}  # fmt: skip
TINY_INPAINTER = TINY_SEGMENTER | {"in_channels": 4, "out_channels": 3}


def tiny_networks(seed: int = 0) -> dict:
    """Tiny untrained segmenter and inpainter (for plumbing tests, not quality). The segmenter's
    last bias is raised so that it marks most of every crop as mask: every face gets painted."""
    import torch

    from qmask.model import Inpainter, Segmenter, UNetConfig

    torch.manual_seed(seed)
    segmenter = Segmenter(UNetConfig(**TINY_SEGMENTER))
    with torch.no_grad():
        segmenter.net.head[0].bias.fill_(3.0)
    return {"segmenter": segmenter, "inpainter": Inpainter(UNetConfig(**TINY_INPAINTER))}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A model file with both stages tiny and untrained, its inpainter recorded as every shipped one
    since 2.4 is (trained with the surroundings erased), so the pipeline tests take the path that
    production takes: the training window erased, the edit beyond it filled."""
    from qmask.model import save_networks

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    record = {"config": {"stage": "inpainter", "erase_outside_photo": True}}
    save_networks(path, tiny_networks(), meta={"version": "0.0-test", "stages": {"inpainter": record}})
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    """One TorchServe for the whole session: test_serve.py and test_frontend*.py share its start-up
    (tests that change its model versions put them back)."""
    with torchserve(tmp_path_factory.mktemp("torchserve")) as running:
        yield running
