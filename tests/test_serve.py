"""The HTTP contract against a real TorchServe (Java 17 needed): the `server` fixture of conftest.py,
started once per session on free ports with its own TMPDIR and logs (tests/torchserve_fixture.py)."""

from __future__ import annotations

import base64
import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from serve.manage import Management, ManagementError, _version_key
from serve.manage import main as manage_main
from serve.server import CONFIG
from tests.conftest import REAL_MASKED
from tests.torchserve_fixture import NEXT_VERSION, VERSION

PHOTO = REAL_MASKED / "1003.png"  # one masked face, found by the detector


def encoded(fmt: str, path: Path = PHOTO) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def image_of(response: requests.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def test_ready_and_healthy(server):
    assert requests.get(server.ports.url("inference") + "/ping", timeout=10).json() == {"status": "Healthy"}
    assert server.worker_pids()


@pytest.mark.parametrize(("fmt", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_real_masked_photo_round_trip(server, fmt, media_type):
    response = server.predict(encoded(fmt), media_type)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == media_type
    out = image_of(response)
    assert (out.format, out.size) == (fmt, Image.open(PHOTO).size)
    # The lower face is repainted (a large share changed far more than a JPEG round trip would), the
    # top of the photo, above the eyes, is left as it was (byte for byte in PNG).
    before = np.asarray(Image.open(PHOTO).convert("RGB"), np.int16)
    change = np.abs(np.asarray(out.convert("RGB"), np.int16) - before).max(axis=2)
    assert 0.1 < (change > 40).mean() < 0.8
    top = change[: before.shape[0] * 3 // 10]
    assert (top == 0).all() if fmt == "PNG" else top.mean() < 4


def test_accept_and_multipart(server):
    response = server.predict(PHOTO.read_bytes(), accept="image/jpeg")
    assert (response.status_code, response.headers["Content-Type"]) == (200, "image/jpeg")
    assert image_of(response).format == "JPEG"
    url = server.ports.url("inference") + "/predictions/qmask"
    response = requests.post(url, files={"data": ("face.png", PHOTO.read_bytes(), "image/png")}, timeout=120)
    assert (response.status_code, response.headers["Content-Type"]) == (200, "image/png")
    # No Content-Type at all (requests sends none for raw bytes): the bytes say what they are.
    response = server.predict(encoded("WEBP"), content_type=None)
    assert (response.status_code, response.headers["Content-Type"]) == (200, "image/webp")


def test_json_mode(server):
    response = server.predict(PHOTO.read_bytes(), accept="application/json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["format"] == "image/png" and answer["model_version"] == VERSION
    [face] = answer["faces"]
    assert len(face["box"]) == 4 and 0 < face["score"] <= 1 and face["mask_fraction"] > 0.08
    image = Image.open(io.BytesIO(base64.b64decode(answer["image"])))
    assert (image.format, image.size) == ("PNG", Image.open(PHOTO).size)


def no_face() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 60, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_concurrent_requests_each_get_their_answer(server):
    other = REAL_MASKED / "1237.png"  # another size than PHOTO: each answer must be its own photo's
    cases = [
        (PHOTO.read_bytes(), "image/png", None, 200, "image/png"),
        (encoded("JPEG", other), "image/jpeg", "application/json", 200, "application/json"),
        (b"garbage", "image/png", None, 400, "application/json"),
        (no_face(), "image/png", None, 422, "application/json"),
    ] * 2
    with ThreadPoolExecutor(len(cases)) as pool:
        responses = list(pool.map(lambda c: server.predict(c[0], c[1], c[2]), cases))
    got = [(r.status_code, r.headers["Content-Type"]) for r in responses]
    assert got == [(c[3], c[4]) for c in cases]
    for i in (0, 4):
        assert image_of(responses[i]).size == Image.open(PHOTO).size
    for i in (1, 5):
        photo = Image.open(io.BytesIO(base64.b64decode(responses[i].json()["image"])))
        assert photo.size == Image.open(other).size


def test_photos_and_clips_are_not_written_to_disk_or_logged(server):
    # A marker in a text chunk right after the PNG's header (so a log of the body's first bytes
    # would show it) and after the PNG's end, and in a box at the end of an MP4: the decoders skip
    # them, and no file TorchServe writes may contain them.
    import struct

    from PIL.PngImagePlugin import PngInfo

    from benchmarks.reliability import photo_clip

    marker = f"qmask-test-{uuid.uuid4()}".encode()
    text = PngInfo()
    text.add_text("Comment", marker.decode())
    buffer = io.BytesIO()
    Image.open(PHOTO).save(buffer, format="PNG", pnginfo=text)
    body = buffer.getvalue() + marker
    assert marker in body[:100]
    assert server.predict(body).status_code == 200
    url = server.ports.url("inference") + "/predictions/qmask"
    assert requests.post(url, files={"data": ("f.png", body, "image/png")}, timeout=120).status_code == 200
    assert server.predict(body + bytes(100), "text/plain").status_code == 415
    clip = photo_clip(4, 10) + struct.pack(">I", 8 + len(marker)) + b"free" + marker
    assert server.predict(clip, "video/mp4", model="qmask-video", timeout=300).status_code == 200
    leaks = [p for p in server.state.rglob("*") if p.is_file() and marker in p.read_bytes()]
    assert leaks == []


def test_versions_are_listed_oldest_first_whatever_torchserve_answers():
    names = ["3.0", "2.10", "beta", "2.2", "2.9"]
    assert sorted(names, key=_version_key) == ["2.2", "2.9", "2.10", "3.0", "beta"]


def test_version_flow(server, capsys):
    api = Management(server.ports.url("management"))
    api.register(f"qmask-{NEXT_VERSION}.mar", workers=1)
    api.set_default(NEXT_VERSION)
    default = server.predict(PHOTO.read_bytes(), accept="application/json")
    assert default.json()["model_version"] == NEXT_VERSION
    explicit = server.predict(PHOTO.read_bytes(), accept="application/json", version=VERSION)
    assert explicit.json()["model_version"] == VERSION
    assert manage_main(["--url", api.url, "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing == [
        f"  {VERSION}  qmask-{VERSION}.mar  batch 8  READY",
        f"* {NEXT_VERSION}  qmask-{NEXT_VERSION}.mar  batch 8  READY",
    ]
    with pytest.raises(ManagementError, match="default version"):
        api.unregister(NEXT_VERSION)
    api.scale(NEXT_VERSION, 0)
    assert [v["workers"] for v in api.versions()] == [["READY"], []]
    api.set_default(VERSION)
    api.unregister(NEXT_VERSION)
    assert [(v["version"], v["default"]) for v in api.versions()] == [(VERSION, True)]
    assert server.predict(PHOTO.read_bytes(), version=NEXT_VERSION).status_code == 404


def test_prometheus_metrics(server):
    assert server.predict(PHOTO.read_bytes()).status_code == 200
    response = requests.get(server.ports.url("metrics") + "/metrics", timeout=10)
    assert response.status_code == 200
    assert 'ts_inference_requests_total{model_name="qmask"' in response.text
    assert "# TYPE ts_inference_latency_microseconds counter" in response.text


def test_the_java_heap_holds_both_models_full_queues_of_the_largest_requests():
    import re

    import yaml

    lines = [line for line in CONFIG.read_text().splitlines() if "=" in line and not line.startswith("#")]
    settings = dict(line.split("=", 1) for line in lines)
    heap = int(re.search(r"-Xmx(\d+)g", settings["vmargs"]).group(1)) * 2**30
    clips = yaml.safe_load((CONFIG.parent / "model-config-video.yaml").read_text())["jobQueueSize"]
    queued = (int(settings["job_queue_size"]) + clips) * int(settings["max_request_size"])
    assert queued < heap


def test_management_api_stays_on_loopback():
    settings = dict(
        line.split("=", 1) for line in CONFIG.read_text().splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["management_address"].startswith("http://127.0.0.1:")
    assert settings["grpc_management_address"] == "127.0.0.1"
    assert settings["disable_token_authorization"] == "true" and settings["enable_model_api"] == "true"
