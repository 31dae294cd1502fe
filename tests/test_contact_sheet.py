"""The before/after sheets used to look at outputs on the real photos."""

import numpy as np
from PIL import Image

from tests.conftest import REAL_MASKED
from training.contact_sheet import tile, write_sheets


def test_a_small_photo_is_scaled_up_to_fill_its_tile():
    small = min(REAL_MASKED.iterdir(), key=lambda p: max(Image.open(p).size))
    assert max(Image.open(small).size) < 160
    cell = tile(small, 320)
    filled = np.any(cell != 40, axis=2)
    assert filled.any(axis=0).all() or filled.any(axis=1).all()  # one side spans the whole tile


def test_sheets_hold_every_photo_with_its_outputs_and_mark_missing_ones(tmp_path):
    photos = sorted(REAL_MASKED.iterdir())[:3]
    after = tmp_path / "after"
    after.mkdir()
    for photo in photos[:2]:  # the third has no output
        (after / photo.name).write_bytes(photo.read_bytes())
    [sheet] = write_sheets(
        REAL_MASKED, [after], tmp_path / "sheet", size=64, cols=1, only=[p.name for p in photos]
    )
    grid = np.asarray(Image.open(sheet))
    assert grid.shape == (3 * 64, 2 * 64, 3)
    assert np.all(grid[2 * 64 + 20 :, 64:] == (150, 0, 0))  # the missing output is a red tile
