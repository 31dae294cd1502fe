"""The pipeline's own decisions, with the tiny untrained model of conftest.py (its segmenter sees mask
everywhere, so every face it is shown is painted unless a rule says otherwise)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from benchmarks.reliability import faces_grid
from qmask.align import TRAINING_PHOTO_WINDOW
from qmask.blend import BlendConfig
from qmask.model import save_networks
from qmask.pipeline import NoFaceError, PipelineConfig, TooManyFacesError, UnmaskPipeline, UnmaskResult
from tests.conftest import BENCH, load_rgb, tiny_networks

PHOTO = load_rgb(BENCH / "0003_masked.png")
OTHER = load_rgb(BENCH / "0010_masked.png")


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    with UnmaskPipeline(PipelineConfig(weights=str(tiny_model))) as p:
        yield p


def test_results_of_a_mixed_batch_keep_their_order_and_match_single_photos(pipeline):
    blank = np.full((200, 200, 3), 90, np.uint8)
    crowd = np.asarray(Image.open(io.BytesIO(faces_grid())).convert("RGB"))
    results = pipeline.unmask_arrays([PHOTO, blank, OTHER, crowd])
    assert [type(r) for r in results] == [UnmaskResult, NoFaceError, UnmaskResult, TooManyFacesError]
    assert results[3].status == 422 and "the limit is 16" in str(results[3])
    # Batched or alone, a photo comes out the same.
    for image, batched in ((PHOTO, results[0]), (OTHER, results[2])):
        alone = pipeline.unmask_array(image)
        assert np.array_equal(alone.image, batched.image)
        assert [f.box for f in alone.faces] == [f.box for f in batched.faces]


def test_a_face_is_painted_only_above_the_minimum_mask_fraction(tiny_model):
    painted = UnmaskPipeline(PipelineConfig(weights=str(tiny_model)))
    strict = UnmaskPipeline(
        PipelineConfig(weights=str(tiny_model), blend=BlendConfig(min_mask_fraction=1.01))
    )
    try:
        edited, left = painted.unmask_array(PHOTO), strict.unmask_array(PHOTO)
    finally:
        painted.close()
        strict.close()
    assert all(f.edited for f in edited.faces) and not np.array_equal(edited.image, PHOTO)
    assert not any(f.edited for f in left.faces) and np.array_equal(left.image, PHOTO)
    assert [f.reason for f in left.faces] == ["no_mask"] * len(left.faces)
    assert [f.to_json()["reason"] for f in edited.faces] == [None] * len(edited.faces)


def test_no_face_and_too_many_faces_are_errors_of_a_single_photo(pipeline):
    with pytest.raises(NoFaceError):
        pipeline.unmask_array(np.zeros((64, 64, 3), np.uint8))
    crowd = np.asarray(Image.open(io.BytesIO(faces_grid())).convert("RGB"))
    with pytest.raises(TooManyFacesError):
        pipeline.unmask_array(crowd)


def test_debug_results_show_what_each_stage_saw():
    # The shipped model: its segmenter finds the drawn mask only, so the edit covers part of the crop
    # (the tiny one's sees mask everywhere).
    with UnmaskPipeline() as shipped:
        result = shipped.unmask_array(PHOTO, debug=True)
    [crop] = result.debug
    assert crop.crop.shape == (256, 256, 3) and crop.mask_prob.shape == (256, 256)
    assert crop.edit.edited and crop.painted is not None
    # The shown crop equals the crop outside the blend weight and the painted face where it is 1.
    outside, inside = crop.edit.weight == 0, crop.edit.weight == 1
    assert 0.5 < outside.mean() < 0.95 and inside.any()
    assert np.array_equal(crop.output[outside], crop.crop[outside])
    assert np.array_equal(crop.output[inside], crop.painted[inside])
    # Its inpainter was trained with the surroundings erased: it gets the hole and what lies beyond
    # the training photos' window, and the forehead within the window as it is.
    hole = crop.edit.hole > 0.5
    assert (crop.erased >= crop.edit.hole).all() and (crop.erased > 0.5)[~hole].any()
    x0, y0, x1, _ = TRAINING_PHOTO_WINDOW
    assert not crop.erased[y0 + 5, (x0 + x1) // 2]
    assert set(result.timings) >= {"detect", "align", "segment", "plan", "inpaint", "paste_back"}


def test_an_inpainter_trained_with_the_surroundings_erased_sees_only_what_its_training_crops_showed(tmp_path):
    crop = np.asarray(Image.fromarray(PHOTO).resize((256, 256)))
    inside = np.ones((1, 256, 256), np.float32)
    inside[:, 200:] = 0  # the photo ends under the chin; below it the crop is a mirror image
    mirror_changed = crop.copy()
    mirror_changed[200:] = 255 - mirror_changed[200:]
    # The photo beside the head, beyond where the training photos lie in the crop.
    x0, y0, x1, _ = TRAINING_PHOTO_WINDOW
    beside_changed = crop.copy()
    beside_changed[:, x1:] = 255 - beside_changed[:, x1:]
    within_changed = crop.copy()
    within_changed[y0 : y0 + 20, x0 + 20 : x1 - 20] = 255 - within_changed[y0 : y0 + 20, x0 + 20 : x1 - 20]
    prob = np.zeros((256, 256), np.float32)
    prob[120:190, 70:186] = 1.0
    painted = {}
    for erases in (False, True):
        path = tmp_path / f"erases_{erases}.pt"
        record = {"config": {"stage": "inpainter", "erase_outside_photo": erases}}
        save_networks(path, tiny_networks(), meta={"version": "0.0-test", "stages": {"inpainter": record}})
        with UnmaskPipeline(PipelineConfig(weights=str(path))) as pipeline:
            assert pipeline.model.inpainter_erases_outside_photo == erases
            edit = pipeline.plan(prob)
            erased = pipeline.inpainter_erased(edit.hole, inside[0])
            assert (erased >= edit.hole).all()
            assert erased[200:].all() == erases and erased[:, x1:].all() == erases  # mirror, beside
            assert not erased[y0 + 5, x0 + 40]  # the forehead stays
            painted[erases] = [
                pipeline.inpaint(c[None], [edit], inside)[0]
                for c in (crop, mirror_changed, beside_changed, within_changed)
            ]
    # Compared where the edit is: beyond it the painted face is the crop's own pixels.
    at = edit.weight > 0
    as_is, mirror, beside, within = (face[at] for face in painted[True])
    assert not np.array_equal(painted[False][0][at], painted[False][1][at])  # it saw the mirror
    assert not np.array_equal(painted[False][0][at], painted[False][2][at])  # and beside the head
    assert np.array_equal(as_is, mirror) and np.array_equal(as_is, beside)
    assert not np.array_equal(as_is, within)  # the face around the hole is its context
