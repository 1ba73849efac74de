"""deploy/k8s: every overlay rendered (tests/kustomize_render.py, or kustomize where it is
installed) and validated offline against the Kubernetes schemas of a pinned version; the
KEDA ScaledObject checked structurally against what the workers really consume."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kustomize_render import render

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.31.0"  # the schemas validated against (kubernetes-validate ships them)


def external_redis_overlay(tmp_path: Path) -> Path:
    """A user's overlay: the base with components/external-redis instead of Redis."""
    component = K8S / "components" / "external-redis"
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(K8S / "base")], "components": [str(component)],
    }))  # fmt: skip
    return tmp_path


@pytest.fixture(params=["cpu", "gpu", "external-redis"])
def rendered(request, tmp_path) -> tuple[str, list[dict[str, Any]]]:
    name = request.param
    root = external_redis_overlay(tmp_path) if name == "external-redis" else K8S / "overlays" / name
    return name, render(root)


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def test_every_core_resource_is_valid_against_the_kubernetes_schemas(rendered):
    _, resources = rendered
    core = [r for r in resources if r["apiVersion"] != "keda.sh/v1alpha1"]
    assert {r["kind"] for r in core} >= {"Deployment", "Service", "ConfigMap", "Secret"}
    for resource in core:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def test_the_validator_rejects_a_broken_manifest(rendered):
    """Otherwise a pass above would mean nothing."""
    _, resources = rendered
    broken = json.loads(json.dumps(find(resources, "Deployment", "codedfarm-worker")))
    broken["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_pods_run_unprivileged_with_limits_and_probes(rendered):
    _, resources = rendered
    for deployment in (r for r in resources if r["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, deployment["metadata"]["name"]
        for container in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert "readinessProbe" in container and "livenessProbe" in container, where
            volumes = {v["name"] for v in pod.get("volumes", [])}
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, where
            args = container.get("args", [])
            if args[:1] != ["codedfarm"]:
                continue
            # the probes ask the process's own endpoints, on the port it listens on
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez", where
            flag = "--port" if args[1] == "serve" else "--metrics-port"
            port = int(args[args.index(flag) + 1])
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert named[container["readinessProbe"]["httpGet"]["port"]] == port, where


def settings(resources: list[dict[str, Any]]) -> dict[str, str]:
    return dict(find(resources, "ConfigMap", "codedfarm-settings")["data"])


# KEDA's ScaledObject fields and its redis (lists) scaler's parameters, as KEDA documents
# them: a misspelt field (minReplicas) would be ignored by KEDA, not refused
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod",
                      "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
                      "maxReplicaCount", "fallback", "advanced", "triggers"}  # fmt: skip
REDIS_TRIGGER = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
                 "usernameFromEnv", "passwordFromEnv", "listName", "listLength",
                 "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl"}  # fmt: skip


def test_the_scaled_object_uses_only_fields_keda_knows(rendered):
    _, resources = rendered
    scaled = find(resources, "ScaledObject", "codedfarm-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled["spec"]) <= SCALED_OBJECT_SPEC, set(scaled["spec"]) - SCALED_OBJECT_SPEC
    assert set(scaled["spec"]["advanced"]) <= {"horizontalPodAutoscalerConfig",
                                               "restoreToOriginalReplicaCount"}  # fmt: skip
    for trigger in scaled["spec"]["triggers"]:
        assert set(trigger) <= {"type", "metadata", "authenticationRef", "name", "metricType"}
        assert set(trigger["metadata"]) <= REDIS_TRIGGER, set(trigger["metadata"]) - REDIS_TRIGGER
        assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA wants strings
    # the HPA behaviour KEDA passes on: valid as an autoscaling/v2 HorizontalPodAutoscaler's
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "check"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": scaled["spec"]["scaleTargetRef"]["name"]},
                    "maxReplicas": scaled["spec"]["maxReplicaCount"],
                    "behavior": scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
                        "behavior"]}}  # fmt: skip
    kubernetes_validate.validate(hpa, KUBERNETES, strict=True)


def test_keda_scales_the_workers_on_the_queue_they_consume(rendered):
    name, resources = rendered
    scaled = find(resources, "ScaledObject", "codedfarm-worker")
    worker = find(resources, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    container = worker["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    queue = args[args.index("--queues") + 1]
    assert settings(resources)["CODEDFARM_QUEUES"] == queue
    spec = scaled["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]  # never scaled to zero
    assert spec["cooldownPeriod"] >= 60 and spec["pollingInterval"] >= 5
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue
    assert int(trigger["metadata"]["listLength"]) >= 1
    # KEDA reads these from the target container's environment: the Secret it loads
    secret = find(resources, "Secret", "codedfarm-redis")
    keys = set(secret["data"])
    assert {trigger["metadata"]["addressFromEnv"], trigger["metadata"]["passwordFromEnv"],
            "CODEDFARM_REDIS_URL"} <= keys  # fmt: skip
    assert {"secretRef": {"name": "codedfarm-redis"}} in container["envFrom"]
    address = base64.b64decode(secret["data"]["REDIS_ADDRESS"]).decode()
    url = base64.b64decode(secret["data"]["CODEDFARM_REDIS_URL"]).decode()
    assert address.split(":")[0] in url and address.count(":") == 1
    if name == "gpu":  # one GPU per worker pod, and the worker uses it
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert args[args.index("--device") + 1] == "cuda"
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
    in_cluster = any(r["kind"] == "Deployment" and r["metadata"]["name"] == "redis"
                     for r in resources)  # fmt: skip
    assert in_cluster == (name != "external-redis")


def test_the_worker_command_is_one_the_cli_accepts(rendered):
    """The manifests' commands parse: a renamed option would break them silently."""
    from click.testing import CliRunner

    from codedfarm.cli import cli

    _, resources = rendered
    for deployment in (r for r in resources if r["kind"] == "Deployment"):
        args = deployment["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if args[:1] == ["codedfarm"]:
            result = CliRunner().invoke(cli, [*args[1:2], "--help"])
            assert result.exit_code == 0
            known = result.output
            for arg in args[2:]:
                if arg.startswith("--"):
                    assert arg in known, (shlex.join(args), arg)


def test_monitoring_configmaps_carry_the_files_compose_uses(rendered):
    _, resources = rendered
    dashboard = find(resources, "ConfigMap", "codedfarm-grafana-dashboard")
    assert dashboard["data"]["codedfarm.json"] == (
        ROOT / "deploy/grafana/dashboards/codedfarm.json").read_text()  # fmt: skip
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    alerts = find(resources, "ConfigMap", "codedfarm-prometheus-alerts")
    assert alerts["data"]["alerts.yml"] == (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert float(settings(resources)["CODEDFARM_FIDELITY_SAMPLE"]) > 0  # the panel has data


def test_the_scrape_job_is_a_valid_prometheus_config(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (scripts/test.sh installs Debian's prometheus)")
    resources = render(K8S / "overlays" / "cpu")
    jobs = yaml.safe_load(find(resources, "ConfigMap", "codedfarm-prometheus-scrape")["data"][
        "scrape-codedfarm.yml"])  # fmt: skip
    # Debian's promtool is built without Kubernetes discovery: check the role here, and the
    # rest of the job (its relabelling) with promtool, discovery swapped for a static target
    # the job names the alerts select on
    assert {job["job_name"] for job in jobs} == {"workers", "collector", "server"}
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert set(re.findall(r'job="(\w+)"', alerts)) <= {job["job_name"] for job in jobs}
    for job in jobs:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["127.0.0.1:9809"]}]
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    config = {"scrape_configs": jobs, "rule_files": ["alerts.yml"]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("kustomize") is None, reason="no kustomize binary here")
def test_the_renderer_agrees_with_kustomize():  # pragma: no cover - where kustomize exists
    for overlay in ("cpu", "gpu"):
        built = subprocess.run(["kustomize", "build", str(K8S / "overlays" / overlay)],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        theirs = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built))
        ours = sorted(
            (d["kind"], d["metadata"]["name"]) for d in render(K8S / "overlays" / overlay)
        )
        assert theirs == ours
