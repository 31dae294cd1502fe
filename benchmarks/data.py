"""Where the benchmarks find the data: QMASK_DATA, else ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QMASK_DATA", REPO.parent / "shared" / "data"))
BENCH = DATA / "bench" / "lfw-synthetic"
REAL_MASKED = DATA / "real-masked"
