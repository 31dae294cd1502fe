"""The served API under hostile input, worker death and clips in work, against the real TorchServe
of the session (`server`, both models): benchmarks/reliability.py's cases in one run."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import requests
from PIL import Image

from benchmarks import reliability
from frontend.client import QMaskClient
from tests.conftest import REAL_MASKED


def test_every_hostile_input_gets_its_answer_and_the_server_keeps_serving(server):
    photo_workers = server.worker_pids()
    clip_workers = server.worker_pids(model="qmask-video")
    rows = reliability.run(server.ports.url("inference"))
    print("\n" + reliability.table(rows))  # the table in README.md, "Reliability"
    assert [r.case.name for r in rows if not r.ok] == []
    assert reliability.still_serving(server.ports.url("inference"), server.ports.url("management")) == []
    # No worker was lost or restarted on the way.
    assert server.worker_pids() == photo_workers
    assert server.worker_pids(model="qmask-video") == clip_workers


def test_errors_from_the_handler_are_json_with_a_code_and_a_message(server):
    for body, media_type in ((b"garbage", "image/png"), (b"hello", "text/plain")):
        response = server.predict(body, media_type)
        assert response.headers["Content-Type"] == "application/json"
        answer = response.json()
        assert set(answer) == {"code", "message"} and answer["message"]


def test_face_boxes_stay_inside_the_photo(server):
    # The face cut by the photo's left edge: the detector's box reaches past it.
    image = Image.open(REAL_MASKED / "1003.png").convert("RGB")
    cut = image.crop((image.width * 0.3, 0, image.width, image.height))
    buffer = io.BytesIO()
    cut.save(buffer, format="PNG")
    response = server.predict(buffer.getvalue(), accept="application/json")
    assert response.status_code == 200, response.text
    for face in response.json()["faces"]:
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= cut.width and 0 <= y0 < y1 <= cut.height


def test_photos_are_answered_while_a_long_clip_is_in_work(server):
    # The clip model has its own worker: photos must not queue behind a clip. How long they take
    # meanwhile depends on the machine's load (`benchmarks.serving` measures it), so this checks
    # the order only: three photos come back while the clip is still in work.
    clip = reliability.photo_clip(240, 24)  # 10 s: a minute or more of work on this machine
    result: dict[str, requests.Response] = {}

    def send_clip() -> None:
        result["clip"] = server.predict(clip, "video/mp4", model="qmask-video", timeout=600)

    [clip_worker] = server.worker_pids(model="qmask-video")
    busy_from = _cpu_seconds(clip_worker)
    worker = threading.Thread(target=send_clip)
    worker.start()
    # The clip is being unmasked once its worker has spent a second of CPU on it.
    deadline = time.monotonic() + 60
    while _cpu_seconds(clip_worker) < busy_from + 1.0:
        assert time.monotonic() < deadline and worker.is_alive(), "the clip worker never started on it"
        time.sleep(0.2)
    for _ in range(3):
        assert server.predict((REAL_MASKED / "1003.png").read_bytes()).status_code == 200
    assert worker.is_alive(), "the clip should still be in work"
    worker.join()
    assert result["clip"].status_code == 200 and result["clip"].headers["Content-Type"] == "video/mp4"


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_workers_once_busy(server, cpu_seconds: float = 0.3, timeout: float = 60) -> threading.Thread:
    """Kill the photo model's workers once one of them has spent `cpu_seconds` of CPU since now: in
    the middle of the photo sent next, however fast the machine (a fixed delay could fall before
    the photo reached the worker on a slow one, or after it was answered on a fast one)."""
    pids = server.worker_pids()
    assert pids, "no photo worker is ready"
    start = {pid: _cpu_seconds(pid) for pid in pids}

    def kill() -> None:
        deadline = time.monotonic() + timeout
        while not any(_cpu_seconds(pid) >= start[pid] + cpu_seconds for pid in pids):
            if time.monotonic() > deadline:
                return  # the test's own assertions then fail with the photo's answer
            time.sleep(0.02)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def _wait_for_a_worker(server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not server.worker_pids():
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.5)


def test_a_worker_dying_with_a_photo_is_answered_as_such_and_the_page_client_retries_it_once(server):
    # A large photo keeps the worker busy long enough to be killed in the middle of it.
    image = Image.open(REAL_MASKED / "1003.png").convert("RGB")
    buffer = io.BytesIO()
    image.resize((image.width * 30, image.height * 30)).save(buffer, format="JPEG", quality=90)
    big = buffer.getvalue()
    killer = _kill_workers_once_busy(server)
    response = server.predict(big, "image/jpeg")
    killer.join()
    # 507 when TorchServe has seen the kill's exit status by then, else 500; the message says it.
    assert response.status_code in (500, 507), response.text
    assert json.loads(response.text)["message"] == "Worker died."
    _wait_for_a_worker(server)
    # A new worker has a PID before its model is loaded; killed then, it dies before the photo
    # reaches it and the client's first try succeeds. A photo answered means it is ready.
    assert server.predict((REAL_MASKED / "1003.png").read_bytes()).status_code == 200
    # The page's client: the first try dies with its worker, the second (after the pause) succeeds.
    client = QMaskClient(server.ports.url("inference"), worker_restart_s=8.0)
    killer = _kill_workers_once_busy(server)
    started = time.perf_counter()
    result = client.unmask(big)
    killer.join()
    assert time.perf_counter() - started >= 8.0  # it waited for the new worker, then succeeded
    assert any(face.edited for face in result.faces)
    _wait_for_a_worker(server)
    assert server.predict((REAL_MASKED / "1003.png").read_bytes()).status_code == 200
