"""The shipped model on one small real example of each failure class that real photos showed: a dark
mask, a face turned to the side, mask sides at the cheeks, a face cut by the photo's edge, a bare
face beside masked ones. (Small faces of a group photo: tests/test_faces.py.) A remnant is measured
as the share of the lower face that still has the mask's colour; the thresholds sit well clear of
what the model measured (docs/results.md)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from qmask.align import (
    TRAINING_PHOTO_WINDOW,
    eyes_to_crop,
    inside_photo,
    invert,
    training_window,
    warp_to_crop,
)
from qmask.blend import BlendConfig
from qmask.loops import ridge_strength
from qmask.pipeline import FaceResult, PipelineConfig, UnmaskPipeline
from tests.conftest import LFW, REAL_MASKED, load_rgb


@pytest.fixture(scope="module")
def pipeline():
    with UnmaskPipeline() as p:
        yield p


def lower_face(rgb: np.ndarray, face: FaceResult) -> np.ndarray:
    """The lower half of the face's box, where the mask was."""
    x0, y0, x1, y1 = (round(v) for v in face.box)
    return rgb[(y0 + y1) // 2 : y1, x0:x1].astype(np.int32)


def dark_share(pixels: np.ndarray) -> float:
    return float((pixels.max(-1) < 60).mean())


def blue_share(pixels: np.ndarray) -> float:
    """Clearly blue: blue cloth (skin is never this blue)."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return float(((blue - red > 50) & (blue - green > 20)).mean())


def pale_share(pixels: np.ndarray) -> float:
    """Unsaturated and light: white or cream cloth (skin has more colour than this)."""
    brightest, darkest = pixels.max(-1), pixels.min(-1)
    return float((((brightest - darkest) < 0.12 * np.maximum(brightest, 1)) & (brightest > 150)).mean())


@pytest.mark.parametrize(
    ("name", "remnant", "before_at_least", "after_at_most"),
    [
        ("1061.png", dark_share, 0.4, 0.1),  # black cloth mask, front view
        ("1054.png", pale_share, 0.4, 0.25),  # cream cloth mask, face turned to the side
        # Blue cloth up to the eyes, whose sides the segmenter misses: 0.155 was left before the
        # region was widened to the face's outline, 0.061 after.
        ("1003.png", blue_share, 0.6, 0.1),
    ],
)
def test_the_mask_of_a_hard_real_face_is_gone(pipeline, name, remnant, before_at_least, after_at_most):
    photo = load_rgb(REAL_MASKED / name)
    result = pipeline.unmask_array(photo)
    (face,) = result.faces
    assert face.edited
    before, after = remnant(lower_face(photo, face)), remnant(lower_face(result.image, face))
    assert before >= before_at_least  # the measure sees the mask
    assert after <= after_at_most, f"{after:.3f} of the lower face still looks like the mask"


def test_a_masked_face_cut_in_half_by_the_photos_edge_is_unmasked(pipeline):
    """140: the second nurse, whose respirator's black filter the photo's left edge cuts, is found
    in the black frame (`DetectorConfig.frame_cut_pad`) and edited: 0.35 of her lower face is the
    filter's black before, 0.085 after."""
    photo = load_rgb(REAL_MASKED / "140.png")
    result = pipeline.unmask_array(photo)
    assert len(result.faces) == 2 and all(face.edited for face in result.faces)
    cut = min(result.faces, key=lambda face: face.box[0])
    assert cut.box[0] == 0
    assert dark_share(lower_face(photo, cut)) >= 0.3
    assert dark_share(lower_face(result.image, cut)) <= 0.15


def test_a_bare_face_beside_masked_ones_is_left_alone_and_untouched(pipeline):
    paths = (REAL_MASKED / "1003.png", sorted(LFW.iterdir())[0], REAL_MASKED / "1008.png")
    tiles = [np.asarray(Image.fromarray(load_rgb(p)).resize((240, 240))) for p in paths]
    photo = np.concatenate(tiles, axis=1)
    result = pipeline.unmask_array(photo)
    faces = sorted(result.faces, key=lambda f: f.box[0])
    assert [f.edited for f in faces] == [True, False, True]
    assert faces[1].reason == "no_mask"
    # Each edit stays on its own face: the bare face's box is byte-identical.
    x0, y0, x1, y1 = (round(v) for v in faces[1].box)
    assert np.array_equal(result.image[y0:y1, x0:x1], photo[y0:y1, x0:x1])


@pytest.mark.parametrize("name", ["630.png", "1505.png"])
def test_a_nose_piece_the_segmenter_stops_short_of_is_gone(pipeline, name):
    # A respirator's white nose piece (630) and a cloth mask's wire between the glasses (1505) rise
    # above the predicted region; the hole follows them up the nose by the mask's colour.
    photo = load_rgb(REAL_MASKED / name)
    (face,) = pipeline.detect(photo)
    matrix = eyes_to_crop(face.eyes)
    ridge = (slice(96, 118), slice(118, 138))  # the nose's upper half in the canonical crop
    before = pale_share(warp_to_crop(photo, matrix)[ridge].astype(np.int32))
    after = pale_share(warp_to_crop(pipeline.unmask_array(photo).image, matrix)[ridge].astype(np.int32))
    assert before >= 0.5
    assert after <= 0.1, f"{after:.3f} of the nose still looks like the mask"


def test_a_dark_binding_the_segmenter_stops_short_of_on_one_side_is_gone(pipeline):
    # A white mask with a black binding (1337): the segmenter takes the binding under one eye and
    # stops below it under the other, where model 2.8 left a dark stroke (0.034 of this box); the
    # region's top edge is raised to its mirror image's there.
    photo = load_rgb(REAL_MASKED / "1337.png")
    (face,) = pipeline.detect(photo)
    matrix = eyes_to_crop(face.eyes)
    under_eye = (slice(98, 112), slice(140, 180))  # below the image-right eye in the canonical crop
    before = dark_share(warp_to_crop(photo, matrix)[under_eye].astype(np.int32))
    after = dark_share(warp_to_crop(pipeline.unmask_array(photo).image, matrix)[under_eye].astype(np.int32))
    assert before >= 0.3
    assert after <= 0.01, f"{after:.3f} of the box under the eye is still the dark binding"


@pytest.mark.parametrize("name", ["1008.png", "366.png"])
def test_the_mask_side_beyond_the_inpainters_window_is_not_a_flat_orange_patch(name):
    # A turned face whose mask runs out to the ear, beyond the window the inpainter's training photos
    # covered: painted blind, it was a flat orange patch; filled from around it, it takes the colours
    # of the painted cheek and the photo beside it.
    photo = load_rgb(REAL_MASKED / name)
    shares = {}
    for radius in (7.0, None):
        with UnmaskPipeline(PipelineConfig(blend=BlendConfig(unseen_fill_px=radius))) as pipeline:
            result = pipeline.unmask_array(photo, debug=True)
            matrix = eyes_to_crop(pipeline.detect(photo)[0].eyes)
        (crop,) = result.debug
        unseen = (crop.edit.weight >= 1) & ~training_window() & (inside_photo(photo.shape, matrix) > 0.5)
        assert unseen.sum() >= 1000  # the edit does reach beyond the window
        lab = cv2.cvtColor(warp_to_crop(result.image, matrix), cv2.COLOR_RGB2LAB).astype(np.float32)
        chroma = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128)[unseen]
        shares[radius] = float((chroma > 30).mean())
    # The measure sees the blind patch: models 3.1 to 3.4 leave 0.15 to 0.17 of it saturated unfilled.
    assert shares[None] >= 0.10
    assert shares[7.0] <= 0.03, f"{shares[7.0]:.3f} of the edit beyond the window is still saturated"


def dark_line_depth(profile: np.ndarray) -> float:
    """How far a column profile dips below the lightest it reaches further right: a dark line."""
    return float((np.maximum.accumulate(profile[::-1])[::-1] - profile).max())


@pytest.mark.parametrize("name", ["1008.png", "366.png"])
def test_no_dark_line_where_the_painted_cheek_meets_the_fill_beyond_the_window(name):
    # The inpainter darkens the cheek toward the window's erased edge and the fill beyond starts
    # lighter: a thin dark line ran down the cheek at the window's right edge. The fill now takes
    # the last 3 columns inside the edge and is moved to meet the painted face.
    photo = load_rgb(REAL_MASKED / name)
    depths = {}
    before = BlendConfig(unseen_inset_px=0, unseen_fade_px=None)
    for when, config in (("before", before), ("now", BlendConfig())):
        with UnmaskPipeline(PipelineConfig(blend=config)) as pipeline:
            (crop,) = pipeline.unmask_array(photo, debug=True).debug
        edge = TRAINING_PHOTO_WINDOW[2]
        rows = (crop.edit.weight[:, edge - 17 : edge + 17] >= 1).all(axis=1)
        assert rows.sum() >= 40  # the edit spans the edge on a long stretch of the cheek
        grey = crop.output.astype(np.float32).mean(axis=-1)
        depths[when] = dark_line_depth(grey[rows, edge - 17 : edge + 17].mean(axis=0))
    # Measured with model 3.8's networks: 6.4 and 5.7 grey levels before, 2.3 and 1.6 after.
    assert depths["before"] >= 4.5
    assert depths["now"] <= 3.0, f"a line {depths['now']:.1f} levels deep is left"


def test_no_light_line_along_the_edits_outline_beside_the_ear(pipeline):
    # Paste-back interpolates between each pixel of the edit's outline and its neighbours beyond,
    # where the inpainter had painted blind (beyond its window): a thin light line ran round the
    # edit by 449's ear (63 pixels of the outline stood 5+ grey levels above everything within 2 px
    # on both sides with model 3.8). Beyond the edit the painted face is now the crop's own pixels.
    photo = load_rgb(REAL_MASKED / "449.png")
    result = pipeline.unmask_array(photo, debug=True)
    (crop,) = result.debug
    beyond_edit = crop.edit.weight <= 0
    assert np.array_equal(crop.painted[beyond_edit], crop.crop[beyond_edit])
    matrix = eyes_to_crop(pipeline.detect(photo)[0].eyes)
    weight = cv2.warpAffine(crop.edit.weight, invert(matrix), photo.shape[1::-1], flags=cv2.INTER_LINEAR)
    grey_out = cv2.cvtColor(result.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_in = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    near = np.ones((5, 5), np.uint8)
    # The lightest pixel within 2 px on each side of the outline: the edit's inside, the photo beyond.
    inside_max = cv2.dilate(np.where(weight >= 0.95, grey_out, -1), near)
    beyond_max = cv2.dilate(np.where(weight <= 0.05, grey_in, -1), near)
    outline = (weight > 0.05) & (weight < 0.95) & (inside_max >= 0) & (beyond_max >= 0)
    light = grey_out - np.maximum(inside_max, beyond_max) > 4
    assert (light & outline).sum() <= 25, f"{(light & outline).sum()} pixels of a light outline"


def unmasked_with_and_without_loops(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo unmasked with the ear loops erased and without, and its crop's matrix."""
    outputs = []
    for strength in (BlendConfig().ear_loop_min_contrast, None):
        with UnmaskPipeline(PipelineConfig(blend=BlendConfig(ear_loop_min_contrast=strength))) as pipeline:
            outputs.append(pipeline.unmask_array(photo).image)
            matrix = eyes_to_crop(pipeline.detect(photo)[0].eyes)
    return outputs[0], outputs[1], matrix


@pytest.mark.parametrize("name", ["1008.png", "366.png", "511.png"])
def test_an_ear_loop_left_beside_the_mask_is_gone(name):
    # An ear loop from the mask's corner to the ear, which the segmenter does not take: left as a
    # line beside the cheek by model 3.8, found by its ridge and its contrast and erased with the mask.
    photo = load_rgb(REAL_MASKED / name)
    with_loops, without, matrix = unmasked_with_and_without_loops(photo)
    changed = np.abs(with_loops.astype(np.int32) - without).max(-1) > 10
    assert 0 < changed.mean() <= 0.03  # a thin line, nothing more
    where = warp_to_crop(changed.astype(np.uint8) * 255, matrix) > 127
    line = {key: float(ridge_strength(warp_to_crop(image, matrix))[0][where].mean()) for key, image in
            (("photo", photo), ("left", without), ("erased", with_loops))}  # fmt: skip
    # There the photo and the edit without loops show a line (ridge 17-23 and 14-22) ...
    assert line["photo"] >= 15 and line["left"] >= 10, line
    # ... which is gone with them erased (3 to 5).
    assert line["erased"] <= 7, line


def test_a_mask_without_ear_loops_is_unmasked_as_before():
    photo = load_rgb(REAL_MASKED / "986.png")
    with_loops, without, _ = unmasked_with_and_without_loops(photo)
    assert np.array_equal(with_loops, without)
