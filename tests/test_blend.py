from dataclasses import replace

import cv2
import numpy as np

from qmask.align import eyes_to_crop, mesh_eyes, transform_points
from qmask.blend import (
    EYE_CLEARANCE,
    SYMMETRIC_TOP_MIN_STEP,
    BlendConfig,
    blend_weight,
    fill_holes,
    fill_unseen,
    mask_region,
    match_monochrome,
    meet_border,
    plan_edit,
    symmetric_top,
)
from qmask.loops import EAR_POINTS, ear_loops, ridge_strength, strongest_path
from qmask.mesh_points import FACE_OUTLINE, NOSE_AREA, NOSE_TIP
from tests.conftest import BENCH, REAL_MASKED, load_rgb


def test_blend_weight_is_hard_inside_and_zero_beyond_the_feather():
    prob = np.zeros((64, 64), np.float32)
    prob[20:40, 20:40] = 0.6
    prob[30, 30] = 0.2  # a soft hole inside the mask must still be fully replaced
    weight = blend_weight(mask_region(prob, threshold=0.5), grow=3, feather=4)
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


def test_a_face_is_edited_only_above_the_minimum_mask_fraction():
    config = BlendConfig(min_mask_fraction=0.08)
    prob = np.zeros((256, 256), np.float32)
    prob[130:170, 100:156] = 0.9  # 3.4% of the crop: a speck at the mouth, not a mask
    small = plan_edit(prob, config)
    assert not small.edited and small.fraction > 0 and not small.weight.any() and not small.hole.any()
    prob[110:220, 60:196] = 0.9  # 23%: a mask
    large = plan_edit(prob, config)
    assert large.edited and large.fraction > 0.2
    # The hole is the region grown at full weight; the feather beyond it is blended.
    assert np.array_equal(large.hole > 0, large.weight >= 1) and large.hole[115, 70] == 1
    assert large.hole.sum() < (large.weight > 0).sum()


def test_the_erased_region_reaches_the_face_outline_from_half_way_down_the_nose(detector):
    # A navy mask whose white rims at both cheeks the segmenter missed (real-masked/1523).
    photo = load_rgb(REAL_MASKED / "1523.png")
    face = detector.detect(photo)[0]
    matrix = eyes_to_crop(face.eyes)
    crop_mesh = transform_points(face.mesh, matrix)
    outline = np.zeros((256, 256), np.uint8)
    cv2.fillPoly(outline, [np.round(crop_mesh[list(FACE_OUTLINE)]).astype(np.int32)], 1)
    prob = np.zeros((256, 256), np.float32)
    prob[100:230, 100:156] = 0.9  # only the middle of the mask was seen
    config = BlendConfig(grow_px=0, feather_px=1)
    narrow, wide = plan_edit(prob, config), plan_edit(prob, config, crop_mesh)
    assert wide.edited and wide.fraction == narrow.fraction  # the decision is the segmenter's
    assert np.array_equal(wide.region, narrow.region)
    assert (wide.weight >= narrow.weight).all()
    top = round((92 + crop_mesh[NOSE_TIP, 1]) / 2)
    assert 100 < top < 140
    # From half-way down the nose, every row of the mask spans the face from side to side...
    chin = min(229, np.nonzero(outline.any(axis=1))[0].max())
    for row in (top, 180, chin):
        xs = np.nonzero(outline[row])[0]
        assert (wide.weight[row, xs.min() : xs.max() + 1] >= 1).all()
    # ...above it the cheeks under the eyes are left, and so is everything outside the mask's rows.
    assert np.array_equal(wide.weight[: top - 1], narrow.weight[: top - 1])
    assert not wide.weight[232:].any()
    # Within the photo only: its mirrored surroundings never show.
    inside = np.ones((256, 256), np.float32)
    inside[:, :80] = 0
    assert np.nonzero(outline[125])[0].min() < 75 and wide.weight[125, 75:80].all()
    clipped = plan_edit(prob, config, crop_mesh, inside)
    assert not clipped.weight[:, :78].any() and np.array_equal(clipped.weight[:, 82:], wide.weight[:, 82:])
    # A bare face stays bare whatever its mesh says.
    bare = plan_edit(np.zeros((256, 256), np.float32), config, crop_mesh)
    assert not bare.edited and not bare.weight.any()
    assert np.array_equal(
        plan_edit(prob, BlendConfig(widen_from=None), crop_mesh).weight, plan_edit(prob, BlendConfig()).weight
    )


def test_the_hole_follows_the_mask_colour_up_the_nose_and_under_the_eyes_but_no_further(detector):
    photo = load_rgb(BENCH / "0003_target.png")
    face = detector.detect(photo)[0]
    crop_mesh = transform_points(face.mesh, eyes_to_crop(face.eyes))
    rows = np.arange(256)[:, None]
    tip_row, eye_row = round(crop_mesh[NOSE_TIP, 1]), round(mesh_eyes(crop_mesh)[:, 1].mean())
    nose = np.zeros((256, 256), np.uint8)
    cv2.fillConvexPoly(nose, cv2.convexHull(np.round(crop_mesh[list(NOSE_AREA)]).astype(np.int32)), 1)
    piece_top = (np.nonzero(nose.any(axis=1))[0].min() + tip_row) // 2
    crop = photo.copy()
    crop[tip_row - 12 :, 60:196] = 235  # a white mask...
    crop[piece_top:] = np.where(nose[piece_top:, :, None] > 0, 235, crop[piece_top:])  # its nose piece
    crop[eye_row - 4 : tip_row - 12, 66:92] = 235  # and its top edge on a cheek, up into the eye
    prob = np.zeros((256, 256), np.float32)
    prob[tip_row - 12 :, 60:196] = 1.0  # the segmenter saw the mask up to just above the nose tip
    # The painted mask's straight edges would pass for ear loops; only the colour rule is tested.
    config = BlendConfig(grow_px=0, feather_px=1, symmetric_top_max_yaw=None, ear_loop_min_contrast=None)
    off = replace(config, mask_colour_distance=None)
    followed, plain = (
        plan_edit(prob, config, crop_mesh, crop=crop),
        plan_edit(prob, off, crop_mesh, crop=crop),
    )
    assert np.array_equal(followed.region, plain.region) and followed.edited == plain.edited
    piece = (nose > 0) & (rows >= piece_top)
    cheek = np.zeros((256, 256), bool)
    cheek[eye_row + EYE_CLEARANCE : tip_row - 12, 66:92] = True
    assert (followed.weight[piece | cheek] >= 1).all()
    assert not (plain.weight[(piece | cheek) & (rows < tip_row - 12)] > 0).any()
    # The skin of the nose above the piece, the eye and lower lid, the other cheek stay.
    assert not followed.weight[: piece_top - 1, 100:156].any()
    assert not followed.weight[: eye_row + EYE_CLEARANCE - 1, :100].any()
    assert np.array_equal(followed.weight[:, 156:], plain.weight[:, 156:])
    # A mask worn under the nose keeps the nose and cheeks, however they are coloured.
    under = np.zeros((256, 256), np.float32)
    under[tip_row + 6 :, 60:196] = 1.0
    assert np.array_equal(
        plan_edit(under, config, crop_mesh, crop=crop).weight, plan_edit(under, off, crop_mesh).weight
    )


def frontal_mesh(nose_x: float = 128.0) -> np.ndarray:
    """A face mesh in crop pixels with only what the top-edge rule reads: the eye corners at the
    canonical eye centres (92 px down), the nose tip at `nose_x`, the nose from the eyes down."""
    mesh = np.zeros((478, 2))
    for (outer, inner), x in zip(((33, 133), (362, 263)), (100.0, 156.0), strict=True):
        mesh[outer], mesh[inner] = (x - 8, 92), (x + 8, 92)
    mesh[list(NOSE_AREA)] = np.stack(
        [np.linspace(116, 140, len(NOSE_AREA)), np.linspace(96, 140, len(NOSE_AREA))], 1
    )
    mesh[NOSE_TIP] = (nose_x, 140)
    return mesh


def test_the_top_edge_is_raised_to_its_mirror_image_only_where_the_pixels_are_not_skin():
    skin, white, dark = (200, 150, 130), (235, 235, 235), (30, 30, 30)
    crop = np.full((256, 256, 3), skin, np.uint8)
    crop[100:220, 70:186] = white  # the mask, with a dark binding along its top edge
    crop[100:104, 70:186] = dark
    crop[104:116, 176:186] = skin  # beside the binding's end on the right: skin
    erased = np.zeros((256, 256), np.uint8)
    erased[100:220, 70:128] = 1  # the segmenter took the binding on the left...
    erased[116:220, 128:186] = 1  # ...and stopped 16 px lower on the right
    raised = symmetric_top(erased, crop, frontal_mesh(), max_yaw=0.1)
    lowest = 92 + EYE_CLEARANCE  # never into the lower lids
    assert raised[lowest:116, 140:176].all() and not raised[:lowest, 136:].any()
    assert not raised[:112, 181:186].any()  # skin is never taken (beyond the corner's rounding)
    assert np.array_equal(raised[:, :128], erased[:, :128])
    # A face turned aside keeps its region: its far side is narrower, its edge lower.
    assert np.array_equal(symmetric_top(erased, crop, frontal_mesh(nose_x=128 + 0.2 * 56), 0.1), erased)
    # So does an edge whose two sides differ by less than the segmenter's noise.
    level = erased.copy()
    level[: 116 - SYMMETRIC_TOP_MIN_STEP + 1, :128] = 0  # the left edge now 1 px short of the step
    assert np.array_equal(symmetric_top(level, crop, frontal_mesh(), 0.1), level)
    # In the plan, from the segmenter's probabilities; off, the plan is as before.
    prob = erased.astype(np.float32)
    on = plan_edit(prob, BlendConfig(grow_px=0, feather_px=1), frontal_mesh(), crop=crop)
    off = plan_edit(
        prob, BlendConfig(grow_px=0, feather_px=1, symmetric_top_max_yaw=None), frontal_mesh(), crop=crop
    )
    assert (on.weight[lowest:116, 140:176] >= 1).all() and not (off.weight[lowest:115, 140:176] > 0).any()


def test_what_the_inpainter_painted_blind_is_filled_from_around_it():
    crop = np.full((64, 64, 3), (40, 60, 200), np.uint8)  # the photo: a blue backdrop
    painted = np.full((64, 64, 3), (200, 150, 130), np.uint8)  # the painted face: skin...
    painted[:, 48:] = (255, 120, 0)  # ...and, beyond the window, a blind orange patch
    weight = np.zeros((64, 64), np.float32)
    weight[16:48, 8:56] = 1
    unseen = (weight > 0) & (np.arange(64) >= 48)[None]
    filled = fill_unseen(crop, painted, weight, unseen, radius=5)
    assert np.array_equal(filled[~unseen], painted[~unseen])
    # Each filled pixel lies between the skin and the backdrop around it (to Telea's rounding),
    # none is orange.
    low = np.minimum(crop[0, 0], painted[0, 0]).astype(int) - 3
    high = np.maximum(crop[0, 0], painted[0, 0]).astype(int) + 3
    assert ((filled[unseen] >= low) & (filled[unseen] <= high)).all()
    assert np.array_equal(fill_unseen(crop, painted, weight, np.zeros_like(unseen), 5), painted)
    # The photo's mirrored surroundings (here white mask beside the patch) are never drawn from.
    outside = np.zeros_like(unseen)
    outside[:, 56:] = True
    mirrored = crop.copy()
    mirrored[outside] = 255
    filled = fill_unseen(mirrored, painted, weight, unseen, radius=5, outside=outside)
    assert ((filled[unseen] >= low) & (filled[unseen] <= high)).all()


def test_a_fill_is_moved_to_meet_the_pixels_it_borders_and_fades_back_to_itself():
    unseen = np.zeros((40, 60), bool)
    unseen[:, 30:] = True
    fill = np.full((40, 60, 3), 150, np.float32)  # a fill lighter than...
    around = np.full((40, 60, 3), 100, np.float32)  # ...the painted face it borders
    met = meet_border(fill, around, unseen, ~unseen, fade_px=4)
    # The step of 50 at the border, added back fading with the distance from it: 1 px in,
    # exp(-1/4) of it is left; 20 px in, almost none.
    assert np.allclose(met[:, 30], 150 - 50 * np.exp(-1 / 4), atol=0.01)
    assert np.allclose(met[:, 50], 150 - 50 * np.exp(-21 / 4), atol=0.01)
    assert (np.diff(met[:, 30:, 0], axis=1) > 0).all()  # rising steadily back to the fill
    # Mirrored pixels are not a border to meet (`known` leaves them out), and no border, no move.
    assert np.array_equal(meet_border(fill, around, unseen, np.zeros_like(unseen), 4), fill)


def test_the_strongest_path_follows_a_thin_line_from_corner_to_ear_and_a_loop_needs_one():
    crop = np.full((256, 256, 3), 150, np.uint8)
    line = np.array([[180, 120], [200, 108], [215, 104], [235, 96]], np.int32)  # a loop rising to the ear
    cv2.polylines(crop, [line], False, (250, 250, 250), 2)
    bright, dark = ridge_strength(crop)
    path = strongest_path(bright, np.array([180.0, 120.0]), np.array([235.0, 90.0]), band_end=17)
    drawn = np.zeros((256, 256), np.uint8)
    cv2.polylines(drawn, [line], False, 1, 2)
    near = cv2.dilate(drawn, np.ones((5, 5), np.uint8))
    assert near[path[:, 1], path[:, 0]].all()  # within 2 px of the line all the way
    assert bright[path[:, 1], path[:, 0]].mean() > 30 > dark[path[:, 1], path[:, 0]].mean()
    # From a mask region whose right corner the line leaves, to a mesh whose ear point is at its end.
    region = np.zeros((256, 256), np.uint8)
    region[118:200, 80:180] = 1
    mesh = np.zeros((478, 2))
    mesh[EAR_POINTS[0]], mesh[EAR_POINTS[1]] = (20.0, 110.0), (230.0, 110.0)
    found = ear_loops(crop, region, region.astype(bool), mesh, min_contrast=15)
    assert found[104, 215] and not found[:, :176].any()  # the loop, and nothing on the left
    plain = np.full_like(crop, 150)
    assert not ear_loops(plain, region, region.astype(bool), mesh, min_contrast=15).any()
