"""Shared fixtures: the real data beside the repo (../shared/data) and one face detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qmask.faces import FaceDetector

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
