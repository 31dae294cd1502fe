"""A floor under the shipped weights: three frozen-benchmark photos through the whole pipeline stay
above a pinned PSNR and below a pinned LPIPS, so a bad weights commit fails CI. The pins sit a
margin under what the shipped model measured (docs/results.md); retrain, measure, then move them."""

from __future__ import annotations

import numpy as np
import pytest

from qmask.pipeline import UnmaskPipeline
from tests.conftest import BENCH, load_rgb
from training.evaluate import psnr
from training.perceptual import LPIPS

# Bench pair: (PSNR at least, LPIPS at most), over the whole photo as ../shared/bench/score.py scores it.
# Model 3.8 measured 22.51 / 0.170, 30.20 / 0.102 and 27.81 / 0.116 (3.7: 22.64 / 0.170, 30.25 / 0.103,
# 27.82 / 0.114).
FLOOR = {"0003": (20.0, 0.190), "0010": (28.0, 0.122), "0042": (26.3, 0.136)}


@pytest.fixture(scope="module")
def scores() -> dict[str, tuple[float, float]]:
    lpips = LPIPS()
    out = {}
    with UnmaskPipeline() as pipeline:
        for item in FLOOR:
            result = pipeline.unmask_array(load_rgb(BENCH / f"{item}_masked.png"))
            truth = load_rgb(BENCH / f"{item}_target.png")
            mse = float(((result.image.astype(np.float64) - truth) ** 2).mean())
            out[item] = (psnr(mse), lpips.images(result.image, truth))
    return out


@pytest.mark.parametrize("item", FLOOR)
def test_the_shipped_model_stays_above_its_floor(scores, item):
    got_psnr, got_lpips = scores[item]
    least_psnr, most_lpips = FLOOR[item]
    assert got_psnr >= least_psnr, f"PSNR {got_psnr:.2f} < {least_psnr}"
    assert got_lpips <= most_lpips, f"LPIPS {got_lpips:.4f} > {most_lpips}"
