import json
import subprocess
import sys

from tests.conftest import LFW, REPO


def test_evaluate_runs_on_a_tiny_set(tmp_path, tiny_generator):
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
        str(tiny_generator),
        "--baseline",
        str(tiny_generator),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 3 and 0 <= result["bare_faces_edited"] <= 1
    methods = result["templates"]
    assert set(methods) == {"ours", "pix2pix", "telea", "navier_stokes", "copy_input"}
    for name, metrics in methods.items():
        assert set(metrics) == {"psnr", "ssim", "psnr_mask", "l1_mask", "mask_iou"}
        assert 0 < metrics["ssim"] <= 1, name
    # Inpainting with the true mask must beat leaving the mask in place.
    assert methods["telea"]["psnr_mask"] > methods["copy_input"]["psnr_mask"]
    assert 0 <= methods["ours"]["mask_iou"] <= 1 and methods["telea"]["mask_iou"] is None
    assert "| ours |" in out.with_suffix(".md").read_text()
