"""Shared fixtures: the real data beside the repo (../shared/data), one face detector and one real
TorchServe for the serving and frontend tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qmask.faces import FaceDetector
from tests.torchserve_fixture import Server, torchserve

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REAL_MASKED = DATA / "real-masked"
UTKFACE = DATA / "train" / "utkface"
LFW = DATA / "eval" / "lfw"
BENCH = DATA / "bench" / "lfw-synthetic"


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


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> Path:
    """Weights of a tiny, untrained mask-aware generator (for plumbing tests, not quality)."""
    from qmask.model import GeneratorConfig, build_generator, save_generator

    config = GeneratorConfig(base_channels=8, max_channels=32, depth=3, bottleneck_blocks=1)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_generator(path, build_generator(config), config)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    """One TorchServe for the whole session: test_serve.py and test_frontend*.py share its start-up
    (tests that change its model versions put them back)."""
    with torchserve(tmp_path_factory.mktemp("torchserve")) as running:
        yield running
