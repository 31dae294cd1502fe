"""serve/rollout.py end to end: the management part against a real TorchServe (its own instance,
since rollouts change its default version), the Kubernetes part against a loopback HTTP server that
answers the few API calls it makes (no kube-apiserver can run here). Also serve/health.py, the
readiness probe."""

from __future__ import annotations

import copy
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from kubernetes import client
from PIL import Image

from serve import health, rollout
from serve.rollout import CONFIGMAP, DEPLOYMENT, NAMESPACE, VERSION_ANNOTATION, Cluster, RolloutError
from serve.server import Ports
from tests.conftest import REAL_MASKED
from tests.torchserve_fixture import NEXT_VERSION as NEXT
from tests.torchserve_fixture import VERSION
from tests.torchserve_fixture import torchserve as start_torchserve

PHOTO = (REAL_MASKED / "1003.png").read_bytes()  # one masked face, found by the detector


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386, what the client sends with Content-Type application/merge-patch+json."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


class FakeKube:
    """The objects serve/rollout.py reads and changes. A change of the Deployment's pod template
    starts a simulated rollout that completes after a few reads, except for templates annotated
    with a version in `stuck` (pods that never get ready)."""

    def __init__(self, ports: Ports) -> None:
        self.configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
            "data": {"version": VERSION, "previous": ""},
        }
        self.deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "generation": 1},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": DEPLOYMENT}},
                "template": {
                    "metadata": {"annotations": {VERSION_ANNOTATION: VERSION}},
                    "spec": {"containers": [{"name": "torchserve"}]},
                },
            },
            "status": self.done_status(1),
        }
        container = {
            "name": "torchserve",
            "ports": [
                {"name": "inference", "containerPort": ports.inference},
                {"name": "management", "containerPort": ports.management},
                {"name": "metrics", "containerPort": ports.metrics},
            ],
        }

        def pod(name: str, ready: bool, **metadata) -> dict:
            return {
                "metadata": {"name": name, "namespace": NAMESPACE, **metadata},
                "spec": {"containers": [container]},
                "status": {
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": str(ready)}],
                },
            }

        # The one TorchServe, and one pod on its way out that a rollout must leave alone.
        self.pods = [
            pod("qmask-torchserve-a", True),
            pod("qmask-torchserve-b", False, deletionTimestamp="2026-01-01T00:00:00Z"),
        ]
        self.stuck: set[str] = set()
        self.reads_to_done = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    @staticmethod
    def done_status(generation: int) -> dict:
        return {"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        base = f"/api/v1/namespaces/{NAMESPACE}"
        if method == "GET" and path == f"{base}/pods":
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods}
        if path == f"{base}/configmaps/{CONFIGMAP}":
            if method == "PATCH":
                self.configmap = merge_patch(self.configmap, body)
            return 200, self.configmap
        if path == f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}":
            if method == "PATCH":
                self.patch_deployment(body)
            else:
                self.advance()
            return 200, self.deployment
        return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}

    def patch_deployment(self, body: dict) -> None:
        before = self.deployment["spec"]["template"]
        self.deployment = merge_patch(self.deployment, body)
        if self.deployment["spec"]["template"] != before:
            generation = self.deployment["metadata"]["generation"] + 1
            self.deployment["metadata"]["generation"] = generation
            # One new pod surged, not yet available; the controller has not seen the change yet.
            self.deployment["status"] = {
                "observedGeneration": generation - 1,
                "replicas": 3,
                "updatedReplicas": 1,
                "availableReplicas": 2,
            }
            self.reads_to_done = 3

    def advance(self) -> None:
        version = self.deployment["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION]
        generation = self.deployment["metadata"]["generation"]
        self.deployment["status"]["observedGeneration"] = generation
        if version in self.stuck or self.reads_to_done == 0:
            return
        self.reads_to_done -= 1
        if self.reads_to_done == 0:
            self.deployment["status"] = self.done_status(generation)

    def serve(self) -> ThreadingHTTPServer:
        kube = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                with kube.lock:
                    kube.requests.append((self.command, path, self.headers.get("Content-Type")))
                    status, answer = kube.handle(self.command, path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = answer

            def log_message(self, *args) -> None:
                pass

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory) -> Iterator[Ports]:
    # An instance of its own, not the session's shared server: these tests change the default version.
    with start_torchserve(tmp_path_factory.mktemp("rollout")) as server:
        yield server.ports


@pytest.fixture
def kube(request) -> Iterator[FakeKube]:
    """A fresh fake API per test; its pods point at the module's TorchServe when a test uses it."""
    ports = request.getfixturevalue("torchserve") if "torchserve" in request.fixturenames else Ports.free()
    fake = FakeKube(ports)
    server = fake.serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def cluster_of(kube: FakeKube) -> Cluster:
    return Cluster(client.ApiClient(client.Configuration(host=kube.url)))


def default_version(ports: Ports, model: str = "qmask") -> str:
    answer = requests.get(f"{ports.url('management')}/models/{model}", timeout=10).json()
    return answer[0]["modelVersion"]


def loaded(ports: Ports, model: str = "qmask") -> set[str]:
    return {
        v["modelVersion"]
        for v in requests.get(f"{ports.url('management')}/models/{model}/all", timeout=10).json()
    }


def answered_by(ports: Ports) -> str:
    """The version /predictions/qmask (what clients call) answers with."""
    response = requests.post(
        f"{ports.url('inference')}/predictions/qmask",
        data=PHOTO,
        headers={"Content-Type": "image/png", "Accept": "application/json"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def no_face_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 60, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_failed_smoke_test_changes_nothing(torchserve, kube):
    before = loaded(torchserve)
    before_clips = loaded(torchserve, "qmask-video")
    with pytest.raises(RolloutError, match="smoke test"):
        rollout.rollout_live(cluster_of(kube), NEXT, no_face_png(), say=lambda _: None)
    assert default_version(torchserve) == VERSION and loaded(torchserve) == before
    assert loaded(torchserve, "qmask-video") == before_clips  # its clip model was released too
    assert kube.configmap["data"] == {"version": VERSION, "previous": ""}


def test_missing_archive_changes_nothing(torchserve, kube):
    before = loaded(torchserve)
    with pytest.raises(RolloutError, match=r"qmask-9\.9\.mar"):
        rollout.rollout_live(cluster_of(kube), "9.9", PHOTO, say=lambda _: None)
    assert default_version(torchserve) == VERSION and loaded(torchserve) == before
    assert kube.configmap["data"]["version"] == VERSION


def test_a_management_call_that_times_out_midway_is_undone(torchserve, kube, monkeypatch):
    # The photo model already switched when the clip model's call times out (not a URLError):
    # the photo model goes back and the new version's workers are released.
    from serve.manage import Management

    before, set_default = loaded(torchserve), Management.set_default

    def timing_out_for_clips(self, version):
        if self.model == "qmask-video":
            raise TimeoutError("timed out")
        return set_default(self, version)

    monkeypatch.setattr(Management, "set_default", timing_out_for_clips)
    with pytest.raises(RolloutError, match="still serves its previous default"):
        rollout.rollout_live(cluster_of(kube), NEXT, PHOTO, say=lambda _: None)
    monkeypatch.undo()
    assert default_version(torchserve) == VERSION and loaded(torchserve) == before
    assert kube.configmap["data"]["version"] == VERSION


def test_live_rollout_then_rollback(torchserve, kube):
    cluster = cluster_of(kube)
    said: list[str] = []
    rollout.rollout_live(cluster, NEXT, PHOTO, say=said.append)
    assert answered_by(torchserve) == NEXT
    assert kube.configmap["data"] == {"version": NEXT, "previous": VERSION}
    assert loaded(torchserve) == {VERSION, NEXT}  # the previous one stays loaded for the way back
    assert default_version(torchserve, "qmask-video") == NEXT  # clips move with photos
    assert any("passed the smoke test" in line for line in said)
    # Only the ready pod was called on (both fake pods point at the one TorchServe, so what was
    # said tells them apart); patches are merge patches.
    assert any(line.startswith("qmask-torchserve-a: registering") for line in said)
    assert not any(line.startswith("qmask-torchserve-b") for line in said)
    assert (
        "PATCH",
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}",
        "application/merge-patch+json",
    ) in (kube.requests)

    assert rollout.rollback(cluster, "live", PHOTO, say=said.append) == VERSION
    assert answered_by(torchserve) == VERSION
    assert kube.configmap["data"] == {"version": VERSION, "previous": NEXT}


def test_status_from_the_command_line(torchserve, kube, tmp_path, capsys, monkeypatch):
    # Outside a pod the client reads a kubeconfig, as an operator's laptop would.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "fake", "user": {"token": "x"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    assert rollout.main(["--kubeconfig", str(kubeconfig), "status"]) == 0
    out = capsys.readouterr().out
    assert (
        f"recorded: {VERSION}" in out and f"qmask-torchserve-a: default {default_version(torchserve)}" in out
    )
    assert "qmask-torchserve-b" not in out  # terminating


def test_restart_rollout_waits_like_rollout_status(kube):
    said: list[str] = []
    rollout.rollout_restart(cluster_of(kube), NEXT, say=said.append, poll=0.01)
    template = kube.deployment["spec"]["template"]["metadata"]["annotations"]
    assert template[VERSION_ANNOTATION] == NEXT
    assert kube.configmap["data"] == {"version": NEXT, "previous": VERSION}
    assert said[-1] == f"deployment {DEPLOYMENT} successfully rolled out"
    # It waited through the fake controller's states, as `kubectl rollout status` words them.
    assert any("1 of 2 new replicas have been updated" in line for line in said), said


def test_restart_rollout_that_never_completes_is_undone(kube):
    kube.stuck = {NEXT}
    with pytest.raises(RolloutError, match=f"rolled back to {VERSION}"):
        rollout.rollout_restart(cluster_of(kube), NEXT, say=lambda _: None, timeout=0.3, poll=0.01)
    assert kube.deployment["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == VERSION
    assert kube.configmap["data"]["version"] == VERSION
    assert kube.deployment["status"] == FakeKube.done_status(kube.deployment["metadata"]["generation"])


def test_progress_deadline_fails_at_once(kube):
    kube.stuck = {NEXT}
    cluster = cluster_of(kube)
    cluster.record(NEXT, VERSION)
    cluster.restart_with(NEXT)
    kube.deployment["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    with pytest.raises(RolloutError, match="progress deadline"):
        cluster.wait_rolled_out(timeout=60, poll=0.01, say=lambda _: None)


def test_rollback_needs_a_previous_version(kube):
    with pytest.raises(RolloutError, match="no previous version"):
        rollout.rollback(cluster_of(kube), "restart", None)


def test_health_probe(torchserve):
    assert health.main(["--url", torchserve.url("management")]) == 0
    assert health.main(["--url", f"http://127.0.0.1:{Ports.free().management}", "--timeout", "1"]) == 1


def test_readiness_turns_a_pod_away_while_a_queue_is_long():
    """A stand-in management API whose photo model has a READY worker and `pending` queued jobs."""
    state = {"pending": 0}

    class Describe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                [
                    {
                        "modelVersion": "2.0",
                        "workers": [{"status": "READY"}],
                        "jobQueueStatus": {
                            "remainingCapacity": 64 - state["pending"],
                            "pendingRequests": state["pending"],
                        },
                    }
                ]
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Describe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert health.main(["--url", url]) == 0
        state["pending"] = 48  # three quarters of job_queue_size
        assert health.main(["--url", url]) == 1
        assert health.main(["--url", url, "--max-pending", "qmask=60"]) == 0
    finally:
        server.shutdown()
        server.server_close()


def test_kubectl_equivalents_in_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Running on Kubernetes", 1)[1]
    for command in (
        "kubectl rollout status",
        "kubectl -n qmask patch configmap qmask-model",
        "serve.rollout",
    ):
        assert command in section
