import json
import subprocess
import sys

import numpy as np

from tests.conftest import LFW, REPO


def test_evaluate_runs_on_a_tiny_set(tmp_path, tiny_model):
    out = tmp_path / "eval.json"
    cmd = [
        sys.executable,
        "-m",
        "training.evaluate",
        "--faces",
        str(LFW),
        "--masks",
        "templates",
        "--limit",
        "3",
        "--out",
        str(out),
        "--weights",
        str(tiny_model),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 3 and 0 <= result["bare_faces_edited"] <= 1
    methods = result["templates"]
    assert set(methods) == {"ours", "telea", "navier_stokes", "copy_input"}
    for name, metrics in methods.items():
        assert set(metrics) == {"psnr", "ssim", "psnr_mask", "l1_mask", "lpips", "mask_iou", "thin_recall"}
        assert 0 < metrics["ssim"] <= 1 and 0 <= metrics["lpips"] < 1, name
    # Inpainting with the true mask must beat leaving the mask in place.
    assert methods["telea"]["psnr_mask"] > methods["copy_input"]["psnr_mask"]
    assert 0 <= methods["ours"]["mask_iou"] <= 1 and methods["telea"]["mask_iou"] is None
    assert "| ours |" in out.with_suffix(".md").read_text()
    # Segmentation per style of the held-out masks (templates: KN95, gas, printed cloth).
    assert sum(m["n"] for m in result["styles"].values()) == 3
    assert all(style.startswith("template:") for style in result["styles"])


def test_mask_styles_are_named_without_their_details():
    from training.evaluate import mask_style

    assert mask_style("cloth_photo:floral/floral_3.jpg") == "cloth_photo"
    assert mask_style("template:KN95_left") == "template:KN95"
    assert mask_style("template:cloth+fruits/f.png") == "template:cloth+print"
    assert mask_style("surgical") == "surgical"


def test_evaluation_scores_exactly_what_the_pipeline_shows(tmp_path):
    from qmask.align import align_face, transform_points
    from qmask.pipeline import UnmaskPipeline
    from tests.conftest import BENCH, load_rgb
    from training.evaluate import Methods

    photo = load_rgb(BENCH / "0005_masked.png")
    with UnmaskPipeline() as pipeline:
        result = pipeline.unmask_array(photo, debug=True)
        shown = result.debug[0]
        face = pipeline.detector.detect(photo)[0]
        aligned = align_face(photo, face.eyes)
        crop, inside = aligned.crop, aligned.inside
        assert np.array_equal(crop, shown.crop)
        crop_mesh = transform_points(face.mesh, aligned.matrix)
        scored, region = Methods(pipeline)(crop, np.zeros((256, 256), bool), inside, crop_mesh)["ours"]
    assert result.faces[0].edited
    assert np.array_equal(scored, shown.output) and np.array_equal(region, shown.edit.region > 0)
