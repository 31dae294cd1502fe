import numpy as np

from qmask.align import (
    CANONICAL_EYES,
    eyes_to_crop,
    inside_photo,
    invert,
    paste_back,
    transform_points,
    warp_to_crop,
)
from qmask.blend import blend_weight, mask_region
from tests.conftest import BENCH, load_rgb


def test_eyes_land_on_the_canonical_positions():
    eyes = np.array([[310.5, 402.25], [401.0, 380.0]])
    matrix = eyes_to_crop(eyes)
    assert np.abs(transform_points(eyes, matrix) - CANONICAL_EYES).max() < 1e-9


def test_align_unalign_round_trip_under_one_pixel():
    rng = np.random.default_rng(0)
    for _ in range(50):
        eyes = rng.uniform(50, 900, size=(2, 2))
        matrix = eyes_to_crop(eyes)
        points = rng.uniform(0, 1000, size=(20, 2))
        back = transform_points(transform_points(points, matrix), invert(matrix))
        assert np.abs(back - points).max() < 1.0


def test_image_round_trip_through_the_crop():
    photo = load_rgb(BENCH / "0000_target.png")
    matrix = eyes_to_crop(np.array([[100.0, 110.0], [150.0, 108.0]]))  # close to scale 1
    crop = warp_to_crop(photo, matrix)
    weight = np.zeros((256, 256), np.float32)
    weight[80:200, 60:200] = 1.0
    out = paste_back(photo.copy(), crop, weight, matrix)
    # Pasting the crop of the photo back onto itself changes pixels by interpolation error only.
    assert np.abs(out.astype(int) - photo.astype(int)).mean() < 1.0


def test_paste_back_changes_only_pixels_inside_the_region():
    photo = load_rgb(BENCH / "0001_target.png")
    matrix = eyes_to_crop(np.array([[95.0, 105.0], [160.0, 100.0]]))
    generated = np.full((256, 256, 3), 255, np.uint8)
    prob = np.zeros((256, 256), np.float32)
    prob[150:210, 80:180] = 0.9
    weight = blend_weight(mask_region(prob), grow=4, feather=4)
    out = paste_back(photo.copy(), generated, weight, matrix)
    # Where the weight warped back to the photo is zero, pixels are byte-identical.
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    crop_xy = transform_points(np.stack([xx.ravel(), yy.ravel()], 1).astype(float), matrix)
    far = (
        (crop_xy[:, 0] < 80 - 10)
        | (crop_xy[:, 0] > 180 + 10)
        | (crop_xy[:, 1] < 150 - 10)
        | (crop_xy[:, 1] > 210 + 10)
    ).reshape(h, w)
    assert np.array_equal(out[far], photo[far])
    changed = np.any(out != photo, axis=2)
    assert changed.sum() > 0.5 * 60 * 100 * 0.8  # the region itself was replaced


def test_outside_the_photo_the_crop_is_mirrored_and_flagged():
    photo = load_rgb(BENCH / "0002_target.png")  # 256x256, the face fills it
    matrix = eyes_to_crop(np.array([[100.0, 110.0], [156.0, 110.0]]))  # a pure shift up by 18 px
    crop, inside = warp_to_crop(photo, matrix), inside_photo(photo.shape, matrix)
    assert (inside[:200] == 1).all() and (inside[-10:] == 0).all()
    # Crop row 240 is photo row 258, three rows past the last one (255): mirrored, row 252.
    assert np.abs(crop[240].astype(int) - photo[252].astype(int)).max() <= 1
