"""Roll a model version out to the TorchServe pods on Kubernetes, and back (README, "Running on
Kubernetes").

    python -m serve.rollout live 2.0 --photo PHOTO     # in the running pods, no restart
    python -m serve.rollout restart 2.0 [--photo PHOTO] # new pods, like `kubectl rollout status`
    python -m serve.rollout rollback [--mode live|restart] [--photo PHOTO]
    python -m serve.rollout status

The version a pod starts with is the `version` key of the ConfigMap `qmask-model` (the Deployment
reads it into QMASK_MODEL_VERSION); `previous` is the one `rollback` goes back to. Archives are
`qmask-VERSION.mar` and `qmask-video-VERSION.mar` in the model store (photos and clips, two
TorchServe models with the same weights), written by the training job; both move together.

`live` registers the version of both models in every ready pod through its management API, sends
each a real photo, and only when every pod answered sets it as the default everywhere and records it in the
ConfigMap, so pods started later serve it too. Each pod keeps the previous version loaded, so a
rollback is immediate. It reaches pods by their IPs: run it inside the cluster (k8s/rollout-job.yaml;
the NetworkPolicy lets only that job reach the management port).

`restart` records the version and changes the Deployment's pod template annotation
`qmask.io/model-version`, so Kubernetes replaces the pods; their readiness probe waits for a READY
worker of the new version. It waits like `kubectl rollout status` and, if the rollout does not
complete, rolls back the same way. It needs the Kubernetes API only (a kubeconfig is enough);
`--photo` adds a smoke test of the new pods, which again needs the pod network.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from serve.manage import Management, ManagementError
from serve.models import MODEL_NAME, MODEL_NAMES

NAMESPACE = "qmask"
DEPLOYMENT = "qmask-torchserve"
CONFIGMAP = "qmask-model"
SELECTOR = "app.kubernetes.io/name=qmask-torchserve"
VERSION_ANNOTATION = "qmask.io/model-version"
# The data folder as the benchmarks find it (QMASK_DATA, else ../shared/data).
DEFAULT_PHOTO = Path(os.environ.get("QMASK_DATA", "../shared/data")) / "real-masked" / "1003.png"
MERGE_PATCH = "application/merge-patch+json"


class RolloutError(RuntimeError):
    """The rollout stopped; the message says what was left as it was."""


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    inference_port: int
    management_port: int

    def management(self, model: str = MODEL_NAME) -> Management:
        return Management(f"http://{self.ip}:{self.management_port}", model)

    def predict_url(self, version: str) -> str:
        return f"http://{self.ip}:{self.inference_port}/predictions/{MODEL_NAME}/{version}"


class Cluster:
    """The few Kubernetes objects a rollout reads and changes, in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str = NAMESPACE) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace

    def pods(self) -> tuple[list[Pod], list[str]]:
        """(Ready TorchServe pods with their ports found by name, names of those not Ready yet);
        terminating pods are in neither."""
        ready, pending = [], []
        for item in self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR).items:
            name = item.metadata.name
            conditions = {c.type: c.status for c in item.status.conditions or []}
            if item.metadata.deletion_timestamp:
                continue
            if conditions.get("Ready") != "True":
                pending.append(name)
                continue
            ports = {p.name: p.container_port for c in item.spec.containers for p in c.ports or []}
            try:
                ready.append(Pod(name, item.status.pod_ip, ports["inference"], ports["management"]))
            except KeyError as exc:
                raise RolloutError(f"pod {name} has no container port named {exc}") from exc
        return ready, pending

    def ready_pods(self) -> list[Pod]:
        return self.pods()[0]

    def recorded(self) -> tuple[str, str]:
        """(version, previous) from the ConfigMap; previous is "" before the first rollout."""
        data = self.core.read_namespaced_config_map(CONFIGMAP, self.namespace).data or {}
        return data["version"], data.get("previous", "")

    def record(self, version: str, previous: str) -> None:
        body = {"data": {"version": version, "previous": previous}}
        self.core.patch_namespaced_config_map(CONFIGMAP, self.namespace, body, _content_type=MERGE_PATCH)

    def restart_with(self, version: str) -> None:
        """Change the pod template (a new ReplicaSet); new pods read the recorded version."""
        body = {"spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: version}}}}}
        self.apps.patch_namespaced_deployment(DEPLOYMENT, self.namespace, body, _content_type=MERGE_PATCH)

    def rollout_state(self) -> tuple[bool, str]:
        """(done, what is missing), judged as `kubectl rollout status` does."""
        deployment = self.apps.read_namespaced_deployment(DEPLOYMENT, self.namespace)
        spec, status = deployment.spec, deployment.status
        if (status.observed_generation or 0) < deployment.metadata.generation:
            return False, "waiting for the deployment spec update to be observed"
        for condition in status.conditions or []:
            if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
                raise RolloutError(f"deployment {DEPLOYMENT} exceeded its progress deadline")
        wanted, updated = spec.replicas or 0, status.updated_replicas or 0
        if updated < wanted:
            return False, f"{updated} of {wanted} new replicas have been updated"
        if (status.replicas or 0) > updated:
            return False, f"{(status.replicas or 0) - updated} old replicas are pending termination"
        if (status.available_replicas or 0) < updated:
            return False, f"{status.available_replicas or 0} of {updated} updated replicas are available"
        return True, f"deployment {DEPLOYMENT} successfully rolled out"

    def wait_rolled_out(self, timeout: float, poll: float, say: Callable[[str], None]) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            done, message = self.rollout_state()
            if message != last:
                say(message)
                last = message
            if done:
                return
            if time.monotonic() > deadline:
                raise RolloutError(f"not rolled out after {timeout:.0f} s: {message}")
            time.sleep(poll)


def smoke_test(pod: Pod, version: str, photo: bytes) -> None:
    """A real masked photo through the version's own endpoint: it must come back edited by that version."""
    try:
        response = requests.post(
            pod.predict_url(version),
            data=photo,
            headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
            timeout=120,
        )
    except requests.RequestException as exc:
        raise RolloutError(f"smoke test of {version} on {pod.name}: {exc}") from exc
    failed = f"smoke test of {version} on {pod.name}"
    if response.status_code != 200:
        raise RolloutError(f"{failed}: {response.status_code} {response.text[:200]}")
    try:
        answer = response.json()
    except ValueError as exc:
        raise RolloutError(f"{failed}: the answer is not JSON") from exc
    if answer.get("model_version") != version or not any(f.get("edited") for f in answer.get("faces", [])):
        raise RolloutError(f"{failed}: no face edited by {version}")


def pod_versions(pod: Pod, model: str = MODEL_NAME) -> tuple[str, set[str]]:
    """(default version, registered versions) of one model in one pod."""
    versions = pod.management(model).versions()
    default = next(v["version"] for v in versions if v["default"])
    return default, {v["version"] for v in versions}


def _switch(pods: list[Pod], version: str, keep: str, photo: bytes, say: Callable[[str], None]) -> None:
    """Prepare the version of every model in every pod, then make it the default everywhere, or
    change nothing.

    Each pod keeps the version it served before and `keep` (the recorded one) loaded for an immediate
    rollback, and releases the workers of anything older.
    """
    added: list[tuple[Pod, str]] = []
    switched: list[tuple[Pod, str, str]] = []
    try:
        for pod in pods:
            for model in MODEL_NAMES:
                if version not in pod_versions(pod, model)[1]:
                    say(f"{pod.name}: registering {model}-{version}.mar")
                    added.append((pod, model))  # before the call: a failed registration may leave workers
                    pod.management(model).register(f"{model}-{version}.mar", workers=1)
            smoke_test(pod, version, photo)
            say(f"{pod.name}: {version} passed the smoke test")
        for pod in pods:
            for model in MODEL_NAMES:
                default, _ = pod_versions(pod, model)
                pod.management(model).set_default(version)
                switched.append((pod, model, default))
    except (RolloutError, ManagementError, OSError) as exc:  # OSError: URLError, timeouts, resets
        # Leave the pods as they were: old defaults back, the new version's workers released.
        for pod, model, default in switched:
            pod.management(model).set_default(default)
        for pod, model in added:
            with contextlib.suppress(ManagementError):  # the registration itself may have failed
                pod.management(model).unregister(version)
        raise RolloutError(f"{exc}; every pod still serves its previous default") from exc
    for pod, model, default in switched:
        for old in pod_versions(pod, model)[1] - {version, default, keep}:
            pod.management(model).unregister(old)
        if model == MODEL_NAME:
            say(f"{pod.name}: {version} is the default (was {default})")


def rollout_live(
    cluster: Cluster, version: str, photo: bytes, say: Callable[[str], None] = print, timeout: float = 600
) -> None:
    current, _ = cluster.recorded()
    pods = cluster.ready_pods()
    if not pods:
        raise RolloutError("no ready TorchServe pod")
    _switch(pods, version, current, photo, say)
    if version != current:
        cluster.record(version, current)
    say(f"recorded {version} in ConfigMap {CONFIGMAP} (previous: {current})")
    # Pods that started before the record read the old version: bring them over as they get ready.
    deadline = time.monotonic() + timeout
    while True:
        ready, pending = cluster.pods()
        late = [pod for pod in ready if pod_versions(pod)[0] != version]
        if late:
            _switch(late, version, current, photo, say)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RolloutError(f"pods still not ready: {', '.join(pending)}")
        time.sleep(5)


def rollout_restart(
    cluster: Cluster,
    version: str,
    photo: bytes | None = None,
    say: Callable[[str], None] = print,
    timeout: float = 900,
    poll: float = 2,
    undo_on_failure: bool = True,
) -> None:
    current, previous = cluster.recorded()
    cluster.record(version, current if version != current else previous)
    cluster.restart_with(version)
    try:
        cluster.wait_rolled_out(timeout, poll, say)
        if photo is not None:
            for pod in cluster.ready_pods():
                smoke_test(pod, version, photo)
                say(f"{pod.name}: {version} passed the smoke test")
    except (RolloutError, ApiException) as exc:
        if not undo_on_failure or version == current:
            raise
        say(f"{exc}; rolling back to {current}")
        cluster.record(current, previous)
        cluster.restart_with(current)
        cluster.wait_rolled_out(timeout, poll, say)
        raise RolloutError(f"{exc}; rolled back to {current}") from exc


def rollback(cluster: Cluster, mode: str, photo: bytes | None, say: Callable[[str], None] = print) -> str:
    """Roll out the recorded previous version (so a second rollback returns to where it started)."""
    _, previous = cluster.recorded()
    if not previous:
        raise RolloutError(f"ConfigMap {CONFIGMAP} records no previous version")
    if mode == "live":
        if photo is None:
            raise RolloutError("a live rollback needs --photo")
        rollout_live(cluster, previous, photo, say)
    else:
        rollout_restart(cluster, previous, photo, say, undo_on_failure=False)
    return previous


def show_status(cluster: Cluster, say: Callable[[str], None] = print) -> None:
    version, previous = cluster.recorded()
    say(f"recorded: {version} (previous: {previous or 'none'})")
    ready, pending = cluster.pods()
    for pod in ready:
        try:
            default, registered = pod_versions(pod)
        except (ManagementError, OSError) as exc:
            say(f"{pod.name}: management API unreachable ({exc})")
            continue
        say(f"{pod.name}: default {default}, loaded {', '.join(sorted(registered))}")
        for model in MODEL_NAMES:
            if model != MODEL_NAME:
                other, _ = pod_versions(pod, model)
                say(f"{pod.name}: {model} default {other}")
    for name in pending:
        say(f"{name}: not ready")


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """In-cluster credentials inside a pod (the rollout job), else the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
    return client.ApiClient()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--kubeconfig", help="outside the cluster; default ~/.kube/config")
    sub = parser.add_subparsers(dest="command", required=True)
    live = sub.add_parser("live", help="register, smoke-test and set default in the running pods")
    live.add_argument("version")
    live.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="a real masked photo")
    restart = sub.add_parser("restart", help="replace the pods with ones that start with the version")
    restart.add_argument("version")
    restart.add_argument("--photo", type=Path, help="smoke-test the new pods with it")
    restart.add_argument("--timeout", type=float, default=900, help="seconds, then roll back")
    back = sub.add_parser("rollback", help="roll out the recorded previous version")
    back.add_argument("--mode", choices=["live", "restart"], default="live")
    back.add_argument("--photo", type=Path, help=f"default for --mode live: {DEFAULT_PHOTO}")
    sub.add_parser("status", help="recorded versions and what each pod serves")
    args = parser.parse_args(argv)

    cluster = Cluster(api_client(args.kubeconfig), args.namespace)
    photo_path = getattr(args, "photo", None)
    if args.command == "rollback" and args.mode == "live" and photo_path is None:
        photo_path = DEFAULT_PHOTO
    try:
        photo = photo_path.read_bytes() if photo_path else None
        if args.command == "live":
            rollout_live(cluster, args.version, photo)
        elif args.command == "restart":
            rollout_restart(cluster, args.version, photo, timeout=args.timeout)
        elif args.command == "rollback":
            print(f"rolled back to {rollback(cluster, args.mode, photo)}")
        else:
            show_status(cluster)
    except (RolloutError, ManagementError, ApiException, OSError) as exc:
        print(f"serve.rollout: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
