"""The CLI end to end on real photos with the committed default model."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from qmask.cli import main
from tests.conftest import BENCH, REAL_MASKED, REPO, UTKFACE, load_rgb


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qmask.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_unmask_a_real_masked_photo(tmp_path):
    src = REAL_MASKED / "1237.png"
    dst = tmp_path / "out.png"
    proc = run_cli("unmask", str(src), "-o", str(dst), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["output"] == str(dst)
    assert len(record["faces"]) >= 1 and record["faces"][0]["edited"]
    assert record["faces"][0]["mask_fraction"] > 0.1
    before, after = load_rgb(src), load_rgb(dst)
    assert after.shape == before.shape
    changed = np.any(before != after, axis=2)
    # The mask region changed, the rest of the photo did not.
    x0, y0, x1, y1 = (round(v) for v in record["faces"][0]["box"])
    assert changed.mean() > 0.05
    outside = np.ones_like(changed)
    pad = (x1 - x0) // 2
    outside[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = False
    assert not changed[outside].any()


def test_folder_in_folder_out_keeps_names_and_reports_photos_without_faces(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("0003_masked.png", "0010_masked.png"):
        (inputs / name).write_bytes((BENCH / name).read_bytes())
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(inputs / "wall.jpg")  # no face
    (inputs / "notes.txt").write_text("not an image, skipped by suffix")
    code = main(["unmask", str(inputs), "-o", str(tmp_path / "out"), "--json", "--debug"])
    captured = capsys.readouterr()
    assert code == 1  # one photo failed
    records = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [r["input"].rsplit("/", 1)[1] for r in records] == [
        "0003_masked.png",
        "0010_masked.png",
        "wall.jpg",
    ]
    assert records[2]["error"]["code"] == "no_face"
    assert "wall.jpg: no face was found" in captured.err
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["0003_masked.debug.png", "0003_masked.png", "0010_masked.debug.png", "0010_masked.png"]
    for name in ("0003_masked.png", "0010_masked.png"):
        assert Image.open(tmp_path / "out" / name).size == Image.open(inputs / name).size


def test_output_format_follows_the_output_suffix_and_a_bare_face_is_left_alone_with_the_reason(
    tmp_path, capsys
):
    src = next(iter(sorted(UTKFACE.iterdir())))  # unmasked face: written unchanged, and said so
    dst = tmp_path / "face.webp"
    assert main(["unmask", str(src), "-o", str(dst), "--json"]) == 0
    assert Image.open(dst).format == "WEBP"
    captured = capsys.readouterr()
    [face] = json.loads(captured.out.strip().splitlines()[-1])["faces"]
    assert (face["edited"], face["reason"]) == (False, "no_mask")
    assert "written unchanged; left alone: face at" in captured.err and "no mask was seen" in captured.err


def test_missing_input_is_a_clear_error_with_its_own_exit_code(tmp_path, capsys):
    # 2 (nothing done), not 1 (some photos refused): scripts tell a wrong path from a faceless photo.
    with pytest.raises(SystemExit) as stopped:
        main(["unmask", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "x.png")])
    assert stopped.value.code == 2 and "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stopped:
        main(["unmask", str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert stopped.value.code == 2 and "no JPEG, PNG or WebP" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit) as stopped:
        main(["unmask", str(BENCH / "0010_masked.png"), "-o", str(tmp_path / "a_file" / "out.png")])
    assert stopped.value.code == 2 and "cannot write there" in capsys.readouterr().err


def test_precision_fp32_and_bf16_paint_nearly_the_same_face(tmp_path):
    src = BENCH / "0010_masked.png"
    outputs = {}
    for precision in ("fp32", "bf16"):
        outputs[precision] = tmp_path / f"{precision}.png"
        assert main(["unmask", str(src), "-o", str(outputs[precision]), "--precision", precision, "-q"]) == 0
    fp32, bf16 = load_rgb(outputs["fp32"]).astype(int), load_rgb(outputs["bf16"]).astype(int)
    painted = np.any(fp32 != load_rgb(src), axis=2)
    assert painted.mean() > 0.05
    # Not the same computation, but the same face: within a level or two where it was painted.
    assert 0 < np.abs(fp32 - bf16)[painted].mean() < 1.0
