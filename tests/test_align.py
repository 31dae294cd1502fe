import numpy as np

from qmask.align import (
    CANONICAL_EYES,
    eyes_to_crop,
    fill_holes,
    grow_region,
    inside_photo,
    invert,
    mask_region,
    match_monochrome,
    paste_back,
    transform_points,
    warp_to_crop,
)
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
    weight = grow_region(mask_region(prob), grow=4, feather=4)
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


def test_grow_region_is_hard_inside_and_zero_beyond_the_feather():
    prob = np.zeros((64, 64), np.float32)
    prob[20:40, 20:40] = 0.6
    prob[30, 30] = 0.2  # a soft hole inside the mask must still be fully replaced
    weight = grow_region(mask_region(prob, threshold=0.5), grow=3, feather=4)
    assert weight[30, 30] == 1.0
    assert weight[17:43, 30].min() == 1.0 and weight[30, 17:43].min() == 1.0  # grown by 3 px at full weight
    assert weight[:10].max() == 0.0 and weight[:, 50:].max() == 0.0
    assert 0 < weight[20, 44] < 1  # feathered edge


def test_holes_in_the_predicted_mask_are_filled():
    hard = np.zeros((100, 100), np.uint8)
    hard[20:80, 20:80] = 1
    hard[40:60, 40:60] = 0  # a valve the segmentation missed
    hard[0:10, 0:30] = 1  # a separate piece at the border stays as it is
    filled = fill_holes(hard)
    assert filled[20:80, 20:80].all()
    assert filled[0:10, 0:30].all() and not filled[12:18, 90:].any()


def test_outside_the_photo_the_crop_is_mirrored_and_flagged():
    photo = load_rgb(BENCH / "0002_target.png")  # 256x256, the face fills it
    matrix = eyes_to_crop(np.array([[100.0, 110.0], [156.0, 110.0]]))  # a pure shift up by 18 px
    crop, inside = warp_to_crop(photo, matrix), inside_photo(photo.shape, matrix)
    assert (inside[:200] == 1).all() and (inside[-10:] == 0).all()
    # Crop row 240 is photo row 258, three rows past the last one (255): mirrored, row 252.
    assert np.abs(crop[240].astype(int) - photo[252].astype(int)).max() <= 1


def test_faces_in_monochrome_photos_take_the_photos_tone_and_colour_ones_keep_their_colour():
    colour = load_rgb(BENCH / "0003_target.png")
    grey = np.repeat(colour.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    sepia = np.clip(grey * np.array([1.0, 0.85, 0.65]) + np.array([20, 10, 0]), 0, 255).astype(np.uint8)
    masked_grey = grey.copy()
    masked_grey[150:220, 80:180] = (30, 40, 120)  # a coloured mask on a grey photo
    prob = np.zeros((256, 256), np.float32)
    prob[150:220, 80:180] = 1.0
    face = load_rgb(BENCH / "0004_target.png")
    photo = np.stack([prob < 0.5] * 3)
    out = match_monochrome(np.stack([masked_grey, sepia, colour]), np.stack([face] * 3), photo)
    assert np.abs(out[0].astype(int) - out[0][..., :1]).max() <= 1  # grey
    # Sepia: the face's channels follow the photo's tone, red above green above blue.
    assert out[1][..., 0].mean() > out[1][..., 1].mean() > out[1][..., 2].mean()
    assert np.array_equal(out[2], face)
    assert np.array_equal(match_monochrome(colour, face), face)


def test_only_pieces_of_the_mask_region_that_reach_the_mouth_are_kept():
    prob = np.zeros((256, 256), np.float32)
    prob[120:200, 80:176] = 0.9  # the mask over nose, mouth and chin
    prob[0:12, :] = 0.8  # a stray band at the crop's top edge
    prob[40:60, 200:240] = 0.7  # and a blob beside the eyes
    region = mask_region(prob)
    assert region[120:200, 80:176].all()
    assert not region[:12].any() and not region[40:60, 200:240].any()
    assert not mask_region(np.where(np.arange(256)[:, None] < 12, 0.9, 0.0)).any()
