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
