"""deploy/k8s as `kubectl kustomize` (kustomize v5) renders it, in every overlay and component
combination the README documents, validated offline: the Kubernetes 1.31-1.33 schemas
(kubernetes-validate), KEDA's ScaledObject and TriggerAuthentication CRD schemas (vendored in
tests/data/k8s/keda), and the references between the objects (selectors, ports, Secrets,
ConfigMaps, volumes, the autoscaler's target and credentials). Without kubectl the module
skips, and fails where CI is set."""

from __future__ import annotations

import base64
import copy
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from codedfarm.redis_conn import parse_sentinel_url

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KEDA_CRDS = Path(__file__).resolve().parent / "data" / "k8s" / "keda"
KUBERNETES = ("1.31.0", "1.32.0", "1.33.0")  # the schemas validated against
NAMESPACE = "codedfarm"  # the overlays'
CA_DIR = "/etc/codedfarm/redis-ca"  # where components/redis-tls-private-ca mounts the CA

Resource = dict[str, Any]


# ----- rendering -------------------------------------------------------------------------


@functools.cache
def kubectl() -> str:
    """kubectl's path, checked to carry kustomize v5; skips (fails where CI is set) without."""
    path = shutil.which("kubectl")
    if path is None:
        message = ("kubectl is not on PATH: tests/test_k8s.py renders deploy/k8s with "
                   "`kubectl kustomize` (kustomize v5); install kubectl")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(f"{message} (with CI set, this is a failure)")
    version = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=60, check=True).stdout  # fmt: skip
    kustomize = json.loads(version).get("kustomizeVersion", "")
    assert re.match(r"v([5-9]|\d{2,})\.", kustomize), f"kubectl's kustomize {kustomize!r} < v5"
    return path


def kustomize(directory: Path) -> list[Resource]:
    """What ``kubectl kustomize directory`` prints, as objects."""
    built = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    if built.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{built.stderr}", pytrace=False)
    return [d for d in yaml.safe_load_all(built.stdout) if d]


# The combinations the README documents: an overlay (the workers' device), the components
# that stand in for components/redis, and optionally components/scale-to-zero.
REDIS_CHOICES = (
    ("redis",),
    ("external-redis",),
    ("external-redis", "redis-tls"),
    ("external-redis", "redis-tls-private-ca"),
    ("external-redis-sentinel",),
)
# with a TLS component the user writes a rediss:// URL into redis.env (README)
TLS_URLS = {
    "redis-tls": "rediss://:change-me@redis.example.internal:6379/0",
    "redis-tls-private-ca": "rediss://:change-me@redis.example.internal:6379/0"
    f"?ssl_cert_reqs=required&ssl_ca_certs={CA_DIR}/ca.crt",
}


@dataclass(frozen=True)
class Variant:
    overlay: str
    redis: tuple[str, ...] = ("redis",)
    scale_to_zero: bool = False

    @property
    def shipped(self) -> bool:
        """Rendered from the repository as it is (no edit)."""
        return self.redis == ("redis",) and not self.scale_to_zero

    @property
    def name(self) -> str:
        return "/".join([self.overlay, "+".join(self.redis)]
                        + ["scale-to-zero"] * self.scale_to_zero)  # fmt: skip

    @property
    def in_cluster(self) -> bool:
        return "redis" in self.redis


VARIANTS = [Variant(overlay, redis, zero) for overlay in ("cpu", "gpu")
            for redis in REDIS_CHOICES for zero in (False, True)]  # fmt: skip


def copy_of_deploy(where: Path) -> Path:
    """A copy of deploy/ to edit as a user would; its deploy/k8s."""
    shutil.copytree(ROOT / "deploy", where / "deploy")
    return where / "deploy" / "k8s"


def edit(path: Path, change: Callable[[Any], None]) -> None:
    spec = yaml.safe_load(path.read_text())
    change(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def materialize(variant: Variant, where: Path) -> Path:
    """The overlay directory of ``variant``: the repository's own, or an edited copy."""
    if variant.shipped:
        return K8S / "overlays" / variant.overlay
    k8s = copy_of_deploy(where)
    overlay = k8s / "overlays" / variant.overlay
    components = [f"../../components/{c}" for c in variant.redis]
    components += ["../../components/scale-to-zero"] * variant.scale_to_zero

    def swap(spec: dict[str, Any]) -> None:
        assert spec["components"] == ["../../components/redis"]  # what the README says to swap
        spec["components"] = components

    edit(overlay / "kustomization.yaml", swap)
    for component in variant.redis:
        if component in TLS_URLS:
            env = k8s / "components" / "external-redis" / "redis.env"
            lines = env.read_text().splitlines()
            lines = [f"CODEDFARM_REDIS_URL={TLS_URLS[component]}"
                     if line.startswith("CODEDFARM_REDIS_URL=") else line
                     for line in lines]  # fmt: skip
            env.write_text("\n".join(lines) + "\n")
    return overlay


@pytest.fixture(scope="session")
def render(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Variant], list[Resource]]:
    """Renders a variant once per session (a deep copy each time: tests may change it)."""
    rendered: dict[Variant, list[Resource]] = {}

    def get(variant: Variant) -> list[Resource]:
        if variant not in rendered:
            where = tmp_path_factory.mktemp("k8s")
            rendered[variant] = kustomize(materialize(variant, where))
        return copy.deepcopy(rendered[variant])

    return get


@pytest.fixture(params=VARIANTS, ids=[v.name for v in VARIANTS])
def rendered(request: pytest.FixtureRequest, render) -> tuple[Variant, list[Resource]]:
    return request.param, render(request.param)


# ----- looking things up -----------------------------------------------------------------


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "RuntimeClass", "StorageClass"}  # fmt: skip


def find(resources: list[Resource], kind: str, name: str, namespace: str | None = None
         ) -> Resource:  # fmt: skip
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name
             and (namespace is None or r["metadata"].get("namespace") == namespace)]  # fmt: skip
    assert len(found) == 1, f"{kind} {name} (namespace {namespace}): {len(found)} found"
    return found[0]


def kinds(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def decoded(secret: Resource) -> dict[str, str]:
    # kustomize folds long values; the API server's base64 decoder skips the newlines too
    data = {k: base64.b64decode("".join(v.split()), validate=True).decode()
            for k, v in (secret.get("data") or {}).items()}  # fmt: skip
    return data | dict(secret.get("stringData") or {})


def config_keys(resources: list[Resource], kind: str, name: str, namespace: str) -> set[str]:
    """The keys of a ConfigMap or Secret (it must exist)."""
    found = find(resources, kind, name, namespace)
    if kind == "Secret":
        return set(decoded(found))
    return set(found.get("data") or {}) | set(found.get("binaryData") or {})


def settings(resources: list[Resource]) -> dict[str, str]:
    return dict(find(resources, "ConfigMap", "codedfarm-settings")["data"])


def pod_specs(resources: list[Resource]) -> Iterator[tuple[Resource, dict[str, Any]]]:
    for deployment in kinds(resources, "Deployment"):
        yield deployment, deployment["spec"]["template"]["spec"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against ``labels``; an empty
    selector selects everything, as in a NetworkPolicy or a PodDisruptionBudget."""
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok &= {"In": key in labels and labels[key] in values,
               "NotIn": labels.get(key) not in values,
               "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
    return ok


def pod_labels(resources: list[Resource]) -> dict[str, dict[str, str]]:
    """Each Deployment's pod labels, by Deployment name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in kinds(resources, "Deployment")}  # fmt: skip


def selected(selector: dict[str, Any], resources: list[Resource]) -> set[str]:
    """The Deployments whose pods ``selector`` selects."""
    return {name for name, labels in pod_labels(resources).items() if matches(selector, labels)}


CODEDFARM = {"codedfarm-collector", "codedfarm-server", "codedfarm-worker"}  # Deployments


# ----- schemas ---------------------------------------------------------------------------

_validated: set[tuple[str, str]] = set()


def validate_kubernetes(resource: Resource, version: str) -> None:
    """kubernetes-validate, strict (unknown fields refused); each distinct object once."""
    key = (json.dumps(resource, sort_keys=True), version)
    if key not in _validated:
        kubernetes_validate.validate(resource, version, strict=True)
        _validated.add(key)


def _strict(schema: Any) -> Any:
    """``schema`` refusing undeclared fields, as the API server does under kubectl's default
    strict field validation (a structural schema would otherwise prune them silently)."""
    if isinstance(schema, dict):
        schema = dict(schema)
        if "properties" in schema:
            schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
            if ("additionalProperties" not in schema
                    and not schema.get("x-kubernetes-preserve-unknown-fields")):  # fmt: skip
                schema["additionalProperties"] = False
        for key in ("items", "additionalProperties", "not"):
            if isinstance(schema.get(key), dict):
                schema[key] = _strict(schema[key])
        for key in ("anyOf", "allOf", "oneOf"):
            if key in schema:
                schema[key] = [_strict(s) for s in schema[key]]
    return schema


KEDA_FILES = {"ScaledObject": "keda.sh_scaledobjects.yaml",
              "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}  # fmt: skip


@functools.cache
def keda_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((KEDA_CRDS / KEDA_FILES[kind]).read_text())
    assert crd["spec"]["group"] == "keda.sh" and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1" and v["served"]]
    return jsonschema.Draft7Validator(_strict(served["schema"]["openAPIV3Schema"]))


def keda_errors(resource: Resource) -> list[str]:
    """What KEDA's CRD schema (and its CEL rule) refuses in ``resource``."""
    assert resource["apiVersion"] == "keda.sh/v1alpha1", resource["apiVersion"]
    validator = keda_validator(resource["kind"])
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(resource)]  # fmt: skip
    spec = resource.get("spec", {})
    # the x-kubernetes-validations rule of ScaledObject.spec (KEDA's default maximum: 100)
    if (resource["kind"] == "ScaledObject" and isinstance(spec, dict)
            and spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100)):  # fmt: skip
        errors.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
    return errors


def test_every_core_resource_is_valid_against_the_kubernetes_schemas(rendered):
    _, resources = rendered
    core = [r for r in resources if r["apiVersion"] != "keda.sh/v1alpha1"]
    assert {r["kind"] for r in core} >= {"Namespace", "Deployment", "Service", "ConfigMap",
                                         "Secret"}  # fmt: skip
    for version in KUBERNETES:
        for resource in core:
            validate_kubernetes(resource, version)


def test_keda_objects_are_valid_against_kedas_crd_schemas(rendered):
    _, resources = rendered
    keda = [r for r in resources if r["apiVersion"] == "keda.sh/v1alpha1"]
    assert sorted(r["kind"] for r in keda) == ["ScaledObject", "TriggerAuthentication"]
    for resource in keda:
        assert keda_errors(resource) == [], resource["metadata"]["name"]


def test_the_validators_refuse_broken_manifests(render):
    """Otherwise a pass above would mean nothing."""
    resources = render(Variant("cpu"))
    worker = find(resources, "Deployment", "codedfarm-worker")
    broken = copy.deepcopy(worker)
    broken["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    for version in KUBERNETES:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)
    scaled = find(resources, "ScaledObject", "codedfarm-worker")
    auth = find(resources, "TriggerAuthentication", "codedfarm-redis")
    for path, value, what in [
        (("spec", "minReplicas"), 1, "Additional properties"),  # a misspelt field
        (("spec", "triggers", 0, "metadata", "listLength"), 32, "is not of type 'string'"),
        (("spec", "triggers", 0, "authenticationRef", "kind"), "Secret", "is not one of"),
        (("spec", "minReplicaCount"), 9, "less than or equal to maxReplicaCount"),
        (("spec", "scaleTargetRef", "replicas"), 1, "Additional properties"),
    ]:
        bad = copy.deepcopy(scaled)
        node: Any = bad
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        assert any(what in e for e in keda_errors(bad)), (path, keda_errors(bad))
    bad = copy.deepcopy(auth)
    del bad["spec"]["secretTargetRef"][0]["key"]
    assert any("'key' is a required property" in e for e in keda_errors(bad))


# ----- structure and references ----------------------------------------------------------


def test_every_object_is_named_once_in_the_overlays_namespace(rendered):
    _, resources = rendered
    seen = set()
    for r in resources:
        assert r.get("apiVersion") and r.get("kind") and r.get("metadata", {}).get("name"), r
        key = (r["apiVersion"].split("/")[0], r["kind"], r["metadata"].get("namespace"),
               r["metadata"]["name"])  # fmt: skip
        assert key not in seen, key
        seen.add(key)
        if r["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in r["metadata"], key
        else:
            assert r["metadata"]["namespace"] == NAMESPACE, key
    assert [n["metadata"]["name"] for n in kinds(resources, "Namespace")] == [NAMESPACE]


def test_deployments_and_services_select_the_pods_they_mean(rendered):
    _, resources = rendered
    deployments = kinds(resources, "Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]
        assert set(selector) == {"matchLabels"}, deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(selector["matchLabels"], labels), deployment["metadata"]["name"]
        # no Deployment adopts another's pods
        others = [d for d in deployments if d is not deployment
                  and selects(selector["matchLabels"],
                              d["spec"]["template"]["metadata"]["labels"])]  # fmt: skip
        assert not others, deployment["metadata"]["name"]
    for service in kinds(resources, "Service"):
        name = service["metadata"]["name"]
        pods = [d["spec"]["template"] for d in deployments
                if d["metadata"]["namespace"] == service["metadata"]["namespace"]
                and selects(service["spec"]["selector"], d["spec"]["template"]["metadata"][
                    "labels"])]  # fmt: skip
        assert len(pods) == 1, f"Service {name} selects {len(pods)} Deployments' pods"
        containers = pods[0]["spec"]["containers"]
        named = {p["name"] for c in containers for p in c.get("ports", [])}
        numbers = {p["containerPort"] for c in containers for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in (named if isinstance(target, str) else numbers), (name, target)


def test_every_reference_of_a_pod_resolves(rendered):
    """Ports, probes, env, volumes and mounts name things that exist (Kubernetes would
    accept a dangling one and leave the pod pending or crash-looping)."""
    _, resources = rendered
    for deployment, pod in pod_specs(resources):
        namespace = deployment["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert len(volumes) == len(pod.get("volumes", [])), deployment["metadata"]["name"]
        for volume in volumes.values():
            if "configMap" in volume:
                keys = config_keys(resources, "ConfigMap", volume["configMap"]["name"], namespace)
            elif "secret" in volume:
                keys = config_keys(resources, "Secret", volume["secret"]["secretName"], namespace)
            else:
                assert set(volume) == {"name", "emptyDir"}, volume  # nothing else is used
                continue
            source = volume.get("configMap") or volume["secret"]
            assert {i["key"] for i in source.get("items", [])} <= keys, volume
        for container in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            assert len(ports) == len(container.get("ports", [])), where
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container.get(probe, {})
                port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                if port is not None:
                    assert port in (ports if isinstance(port, str) else ports.values()), where
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    config_keys(resources, "ConfigMap", source["configMapRef"]["name"], namespace)
                else:
                    config_keys(resources, "Secret", source["secretRef"]["name"], namespace)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if field in ref:
                        keys = config_keys(resources, kind, ref[field]["name"], namespace)
                        assert ref[field]["key"] in keys, (where, env["name"])
            mounts = container.get("volumeMounts", [])
            assert {m["name"] for m in mounts} <= set(volumes), where
            assert len({m["mountPath"] for m in mounts}) == len(mounts), where


def test_pods_run_unprivileged_with_limits_and_probes(rendered):
    _, resources = rendered
    for deployment, pod in pod_specs(resources):
        assert pod["securityContext"]["runAsNonRoot"] is True, deployment["metadata"]["name"]
        for container in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert "readinessProbe" in container and "livenessProbe" in container, where
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


# ----- KEDA ------------------------------------------------------------------------------

# The parameters of KEDA's redis and redis-sentinel (lists) scalers, as KEDA documents them
# (keda.sh/docs/2.21/scalers/redis-lists, .../redis-sentinel-lists) and reads them
# (pkg/scalers/redis_scaler.go at v2.20.2): a misspelt one is ignored by KEDA, not refused.
COMMON_METADATA = {"listName", "listLength", "activationListLength", "databaseIndex",
                   "enableTLS", "unsafeSsl", "usernameFromEnv", "passwordFromEnv"}  # fmt: skip
TRIGGER_METADATA = {
    "redis": COMMON_METADATA | {"address", "host", "port", "addressFromEnv", "hostFromEnv",
                                "portFromEnv"},
    "redis-sentinel": COMMON_METADATA | {
        "addresses", "hosts", "ports", "addressesFromEnv", "hostsFromEnv", "portsFromEnv",
        "sentinelMaster", "sentinelMasterFromEnv", "sentinelUsernameFromEnv",
        "sentinelPasswordFromEnv"},
}  # fmt: skip
COMMON_AUTH = {"username", "password", "tls", "ca", "cert", "key", "keyPassword"}
AUTH_PARAMETERS = {
    "redis": COMMON_AUTH | {"address", "host", "port"},
    "redis-sentinel": COMMON_AUTH | {"addresses", "hosts", "ports", "sentinelMaster",
                                     "sentinelUsername", "sentinelPassword"},
}  # fmt: skip


@dataclass
class Keda:
    """What KEDA's scaler is given: the trigger's metadata and its authentication
    parameters, resolved from the Secrets its TriggerAuthentication names."""

    scaled: Resource
    trigger: dict[str, Any]
    metadata: dict[str, str]
    auth: dict[str, str]
    auth_sources: dict[str, tuple[str, str]]  # parameter -> (Secret, key)

    @property
    def params(self) -> dict[str, str]:
        return self.auth | self.metadata  # KEDA reads the trigger's metadata first


def keda(resources: list[Resource]) -> Keda:
    scaled = find(resources, "ScaledObject", "codedfarm-worker")
    (trigger,) = scaled["spec"]["triggers"]
    namespace = scaled["metadata"]["namespace"]
    ref = trigger["authenticationRef"]
    assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    auth_object = find(resources, "TriggerAuthentication", ref["name"], namespace)
    assert set(auth_object["spec"]) == {"secretTargetRef"}
    auth, sources = {}, {}
    for item in auth_object["spec"]["secretTargetRef"]:
        secret = decoded(find(resources, "Secret", item["name"], namespace))
        assert item["key"] in secret, item
        assert item["parameter"] not in auth, f"parameter {item['parameter']} given twice"
        auth[item["parameter"]] = secret[item["key"]]
        sources[item["parameter"]] = (item["name"], item["key"])
    return Keda(scaled, trigger, dict(trigger["metadata"]), auth, sources)


def test_the_scaled_object_targets_the_worker_deployment_which_has_no_replicas(rendered):
    _, resources = rendered
    scaled = find(resources, "ScaledObject", "codedfarm-worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target.get("kind", "Deployment") == "Deployment"
    worker = find(resources, "Deployment", target["name"], scaled["metadata"]["namespace"])
    # the autoscaler owns the count: a `replicas:` would reset it on every apply
    assert "replicas" not in worker["spec"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"][1] == "worker"
    keda(resources)  # the TriggerAuthentication and every Secret key it names exist


def test_the_trigger_uses_only_parameters_kedas_scaler_knows(rendered):
    variant, resources = rendered
    found = keda(resources)
    kind = found.trigger["type"]
    assert kind == ("redis-sentinel" if "external-redis-sentinel" in variant.redis else "redis")
    assert set(found.trigger) <= {"type", "metadata", "authenticationRef", "name", "metricType"}
    assert set(found.metadata) <= TRIGGER_METADATA[kind], set(found.metadata) - TRIGGER_METADATA[
        kind]  # fmt: skip
    assert set(found.auth) <= AUTH_PARAMETERS[kind], set(found.auth) - AUTH_PARAMETERS[kind]
    # nothing from the pods' environment: KEDA reads the TriggerAuthentication's Secret
    assert not [k for k in found.metadata if k.endswith("FromEnv")]
    assert {"username", "password"} <= set(found.auth)
    assert found.auth_sources["password"] == ("codedfarm-redis", "REDIS_PASSWORD")
    # KEDA refuses TLS set both in the trigger and in the TriggerAuthentication
    assert not ("enableTLS" in found.metadata and "tls" in found.auth)
    assert found.metadata.get("unsafeSsl", "false") == "false"  # never shipped


def fully_qualified(host: str) -> bool:
    """A name KEDA's operator resolves the same from its own namespace: an IP address or a
    name with dots (a bare Service name resolves in the resolver's namespace)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "." in host and not host.endswith(".")
    return True


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), address
    return host, int(port)


def test_keda_reaches_redis_from_its_own_namespace_with_the_pods_credentials(rendered):
    """KEDA connects from its namespace: the address is fully qualified, and it is the Redis
    the pods use (CODEDFARM_REDIS_URL), with the same credentials and database."""
    variant, resources = rendered
    found = keda(resources)
    params = found.params
    url = decoded(find(resources, "Secret", "codedfarm-redis"))["CODEDFARM_REDIS_URL"]
    namespace = found.scaled["metadata"]["namespace"]
    sentinel = parse_sentinel_url(url)
    database = sentinel.db if sentinel else int(urlsplit(url).path.strip("/") or 0)
    assert int(found.metadata["databaseIndex"]) == database
    if found.trigger["type"] == "redis-sentinel":
        assert sentinel is not None, url
        addresses = [split_address(a) for a in params["addresses"].split(",")]
        assert addresses == list(sentinel.hosts)
        assert all(fully_qualified(host) for host, _ in addresses), addresses
        assert params["sentinelMaster"] == sentinel.service
        assert params["password"] == (sentinel.password or "")
        assert params["username"] == (sentinel.username or "")
        assert params.get("sentinelPassword", "") == (sentinel.sentinel_password or "")
        assert "address" not in params
        return
    # exactly one address, from the trigger (in-cluster) or the TriggerAuthentication
    sources = [k for k in ("address", "host", "port", "addresses") if k in params]
    assert sources == ["address"], sources
    assert ("address" in found.metadata) == variant.in_cluster
    host, port = split_address(params["address"])
    assert fully_qualified(host), host
    pods = urlsplit(url)
    assert pods.scheme in ("redis", "rediss"), url
    assert unquote(pods.password or "") == params["password"]
    assert unquote(pods.username or "") == params["username"]
    if variant.in_cluster:
        # the Service, by its fully qualified name in the overlay's namespace; the pods, in
        # the same namespace, use its short name
        service_name, _, rest = host.partition(".")
        assert rest == f"{namespace}.svc.cluster.local", host
        service = find(resources, "Service", service_name, namespace)
        assert port in {p["port"] for p in service["spec"]["ports"]}
        assert (pods.hostname, pods.port) == (service_name, port)
    else:
        assert (pods.hostname, pods.port) == (host, port)
    # TLS: KEDA's setting agrees with the pods' URL
    tls = found.metadata.get("enableTLS") == "true" or found.auth.get("tls") == "enable"
    assert tls == (pods.scheme == "rediss"), (url, found.metadata, sorted(found.auth))
    if "ca" in found.auth:  # the CA KEDA checks with is the one the pods' URL names
        assert found.auth["tls"] == "enable"
        ca_secret, ca_key = found.auth_sources["ca"]
        assert parse_qs(pods.query)["ssl_ca_certs"] == [f"{CA_DIR}/{ca_key}"]
        for deployment, pod in pod_specs(resources):
            if deployment["metadata"]["name"] == "redis":
                continue
            volume = next(v["name"] for v in pod["volumes"]
                          if v.get("secret", {}).get("secretName") == ca_secret)  # fmt: skip
            (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume]
            assert mount["mountPath"] == CA_DIR and mount["readOnly"] is True


def test_keda_scales_the_workers_on_the_queue_they_consume(rendered):
    variant, resources = rendered
    found = keda(resources)
    worker = find(resources, "Deployment", found.scaled["spec"]["scaleTargetRef"]["name"])
    container = worker["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    queue = args[args.index("--queues") + 1]
    assert settings(resources)["CODEDFARM_QUEUES"] == queue
    assert found.metadata["listName"] == queue
    concurrency = int(args[args.index("--concurrency") + 1])
    # a worker is added once every one has a full load waiting
    assert 1 <= int(found.metadata["listLength"]) <= concurrency
    assert {"secretRef": {"name": "codedfarm-redis"}} in container["envFrom"]
    if variant.overlay == "gpu":  # one GPU per worker pod, and the worker uses it
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert args[args.index("--device") + 1] == "cuda"
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
    in_cluster = any(r["kind"] == "Deployment" and r["metadata"]["name"] == "redis"
                     for r in resources)  # fmt: skip
    assert in_cluster == variant.in_cluster


def test_the_scaling_settings_mean_something(rendered):
    """cooldownPeriod only where KEDA uses it (the step to zero), zero only where asked for,
    and the HPA behaviour one autoscaling/v2 accepts."""
    variant, resources = rendered
    spec = find(resources, "ScaledObject", "codedfarm-worker")["spec"]
    assert spec["minReplicaCount"] == (0 if variant.scale_to_zero else 1)
    assert spec["minReplicaCount"] < spec["maxReplicaCount"] <= (4 if variant.overlay == "gpu"
                                                                  else 8)  # fmt: skip
    assert "idleReplicaCount" not in spec
    assert 5 <= spec["pollingInterval"] <= 60
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    if variant.scale_to_zero:
        # the last worker stops after the HPA's own scale-down window, not during it
        window = behavior["scaleDown"]["stabilizationWindowSeconds"]
        assert spec["cooldownPeriod"] > window
        assert spec["initialCooldownPeriod"] >= spec["cooldownPeriod"]
    else:
        assert "cooldownPeriod" not in spec and "initialCooldownPeriod" not in spec
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "check"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "codedfarm-worker"},
                    "maxReplicas": spec["maxReplicaCount"], "behavior": behavior}}  # fmt: skip
    for version in KUBERNETES:
        validate_kubernetes(hpa, version)


def test_the_in_cluster_address_follows_the_overlays_namespace(tmp_path):
    """Change `namespace:` in an overlay and KEDA's address changes with it."""
    overlay = copy_of_deploy(tmp_path) / "overlays" / "gpu"
    edit(overlay / "kustomization.yaml", lambda spec: spec.update(namespace="farm-b"))
    resources = kustomize(overlay)
    assert {r["metadata"].get("namespace") for r in resources} == {None, "farm-b"}
    assert [n["metadata"]["name"] for n in kinds(resources, "Namespace")] == ["farm-b"]
    found = keda(resources)
    assert found.metadata["address"] == "redis.farm-b.svc.cluster.local:6379"
    find(resources, "Service", "redis", "farm-b")


@pytest.mark.parametrize(
    ("entry", "image"),
    [
        # what `kustomize edit set image codedfarm=registry.example.com/codedfarm:1.0` writes
        ({"name": "codedfarm", "newName": "registry.example.com/codedfarm", "newTag": "1.0"},
         "registry.example.com/codedfarm:1.0"),
        # ... and `kustomize edit set image codedfarm=registry.example.com/codedfarm@sha256:…`
        ({"name": "codedfarm", "newName": "registry.example.com/codedfarm",
          "digest": "sha256:" + "ab" * 32},
         "registry.example.com/codedfarm@sha256:" + "ab" * 32),
    ],
    ids=["tag", "digest"],
)  # fmt: skip
def test_kustomize_edit_set_image_points_every_codedfarm_container_at_the_image(
    tmp_path, render, entry, image
):
    overlay = copy_of_deploy(tmp_path) / "overlays" / "cpu"
    edit(overlay / "kustomization.yaml", lambda spec: spec.update(images=[entry]))
    resources = kustomize(overlay)
    before = {d["metadata"]["name"]: d for d in kinds(render(Variant("cpu")), "Deployment")}
    for deployment, pod in pod_specs(resources):
        for container in pod["containers"]:
            if container.get("args", [""])[0] == "codedfarm":
                assert container["image"] == image
            else:  # Redis keeps its image
                old = before[deployment["metadata"]["name"]]["spec"]["template"]["spec"]
                assert container["image"] == old["containers"][0]["image"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_worker_command_is_one_the_cli_accepts(render, overlay):
    """The manifests' commands parse: a renamed option would break them silently."""
    from click.testing import CliRunner

    from codedfarm.cli import cli

    for _, pod in pod_specs(render(Variant(overlay))):
        args = pod["containers"][0].get("args", [])
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


def test_the_readme_documents_exactly_the_overlays_and_components_rendered_here():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run on Kubernetes") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    documented = set(re.findall(r"components/([a-z0-9-]+)", section))
    on_disk = {p.name for p in (K8S / "components").iterdir() if p.is_dir()}
    tested = {c for v in VARIANTS for c in v.redis} | {"scale-to-zero", "prometheus-operator"}
    assert documented == on_disk == tested, (documented, on_disk, tested)
    overlays = {p.name for p in (K8S / "overlays").iterdir() if p.is_dir()}
    assert set(re.findall(r"overlays/([a-z0-9-]+)", section)) == overlays
    assert overlays == {v.overlay for v in VARIANTS}


def test_the_scrape_job_is_a_valid_prometheus_config(tmp_path, render):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (scripts/test.sh installs Debian's prometheus)")
    resources = render(Variant("cpu"))
    jobs = yaml.safe_load(find(resources, "ConfigMap", "codedfarm-prometheus-scrape")["data"][
        "scrape-codedfarm.yml"])  # fmt: skip
    # Debian's promtool is built without Kubernetes discovery: check the role here, and the
    # rest of the job (its relabelling) with promtool, discovery swapped for a static target
    # the job names the alerts select on
    assert {job["job_name"] for job in jobs} == {"workers", "collector", "server"}
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert set(re.findall(r'job="(\w+)"', alerts)) <= {job["job_name"] for job in jobs}
    for job in jobs:
        assert job.pop("kubernetes_sd_configs") == [
            {"role": "pod", "namespaces": {"names": [NAMESPACE]}}]  # fmt: skip
        job["static_configs"] = [{"targets": ["127.0.0.1:9809"]}]
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    config = {"scrape_configs": jobs, "rule_files": ["alerts.yml"]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


# ----- what production manifests carry ---------------------------------------------------


def test_every_pod_runs_as_the_service_account_without_a_token(rendered):
    _, resources = rendered
    account = find(resources, "ServiceAccount", "codedfarm", NAMESPACE)
    assert account["automountServiceAccountToken"] is False
    assert not [r for r in resources if r["kind"] in ("Role", "RoleBinding", "ClusterRole",
                                                      "ClusterRoleBinding")]  # fmt: skip
    for deployment, pod in pod_specs(resources):
        name = deployment["metadata"]["name"]
        assert pod["serviceAccountName"] == "codedfarm", name
        assert pod["automountServiceAccountToken"] is False, name


def test_disruption_budgets_select_the_pods_they_mean_and_allow_a_drain(rendered):
    _, resources = rendered
    budgets = {b["metadata"]["name"]: b for b in kinds(resources, "PodDisruptionBudget")}
    assert set(budgets) == {"codedfarm-worker", "codedfarm-server"}
    for name, budget in budgets.items():
        spec = budget["spec"]
        # exactly its Deployment's pods
        assert selected(spec["selector"], resources) == {name}, name
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name
        deployment = find(resources, "Deployment", name, NAMESPACE)
        replicas = deployment["spec"].get("replicas")
        if "minAvailable" in spec:  # leaves one pod to evict
            assert replicas is not None and spec["minAvailable"] < replicas, name
        else:
            assert spec["maxUnavailable"] >= 1, name
    # the worker's count is the autoscaler's: a budget that could block every drain at
    # minReplicaCount 1 would be minAvailable; one at a time instead
    assert budgets["codedfarm-worker"]["spec"] == budgets["codedfarm-worker"]["spec"] | {
        "maxUnavailable": 1}  # fmt: skip
    # single-replica Deployments have none (it would block every drain of their node)
    for deployment in kinds(resources, "Deployment"):
        if deployment["spec"].get("replicas") == 1:
            assert deployment["metadata"]["name"] not in budgets


def ports_named(resources: list[Resource], deployment: str) -> dict[str, int]:
    pod = find(resources, "Deployment", deployment, NAMESPACE)["spec"]["template"]["spec"]
    return {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}


def test_network_policies_let_only_whom_they_must_reach_each_pod(rendered):
    """Every pod is selected by an ingress policy; the workers' and the collector's metrics
    only from the monitoring namespace, the server's HTTP port from anywhere, Redis only
    from the codedfarm pods and KEDA's operator; every port named exists on the pods."""
    variant, resources = rendered
    policies = kinds(resources, "NetworkPolicy")
    covered = set()
    for policy in policies:
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
        pods = selected(spec["podSelector"], resources)
        assert len(pods) == 1, (policy["metadata"]["name"], pods)
        (target,) = pods
        covered.add(target)
        ports = ports_named(resources, target)
        for rule in spec["ingress"]:
            assert rule["ports"], target  # never every port
            for port in rule["ports"]:
                assert port["protocol"] == "TCP"
                assert port["port"] in (ports if isinstance(port["port"], str)
                                        else ports.values()), (target, port)  # fmt: skip
        (rule,) = spec["ingress"]
        peers = rule.get("from", [])
        if target == "codedfarm-server":
            assert not peers and [p["port"] for p in rule["ports"]] == ["http"]
        elif target in ("codedfarm-worker", "codedfarm-collector"):
            assert peers == [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "monitoring"}}}], target  # fmt: skip
            assert [p["port"] for p in rule["ports"]] == ["metrics"]
        else:
            assert target == "redis", target
            assert [p["port"] for p in rule["ports"]] == ["redis"]
            assert peers, "Redis open to every pod"
            same_namespace = [p for p in peers if set(p) == {"podSelector"}]
            (keda_peer,) = [p for p in peers if "namespaceSelector" in p]
            assert len(same_namespace) + 1 == len(peers)
            allowed = set().union(*(selected(p["podSelector"], resources)
                                    for p in same_namespace))  # fmt: skip
            assert allowed == CODEDFARM, allowed  # not Redis itself, nothing else
            # KEDA's operator, in its namespace, and only it there
            assert keda_peer["namespaceSelector"] == {
                "matchLabels": {"kubernetes.io/metadata.name": "keda"}}  # fmt: skip
            assert keda_peer["podSelector"] == {
                "matchLabels": {"app.kubernetes.io/name": "keda-operator"}}  # fmt: skip
    assert covered == set(pod_labels(resources)), covered
    assert ("redis" in covered) == variant.in_cluster


def test_workers_and_servers_spread_over_nodes(rendered):
    _, resources = rendered
    for name in ("codedfarm-worker", "codedfarm-server"):
        pod = find(resources, "Deployment", name, NAMESPACE)["spec"]["template"]["spec"]
        constraints = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
        assert "kubernetes.io/hostname" in constraints, name
        for constraint in constraints.values():
            assert constraint["maxSkew"] == 1, name
            assert selected(constraint["labelSelector"], resources) == {name}, name
            assert constraint["matchLabelKeys"] == ["pod-template-hash"], name


def test_what_must_not_run_twice_is_recreated_not_rolled(rendered):
    variant, resources = rendered
    single = {"codedfarm-collector"} | ({"redis"} if variant.in_cluster else set())
    for deployment in kinds(resources, "Deployment"):
        name = deployment["metadata"]["name"]
        strategy = deployment["spec"].get("strategy", {}).get("type", "RollingUpdate")
        assert (strategy == "Recreate") == (name in single), name
        if name in single:
            assert deployment["spec"]["replicas"] == 1, name


def test_images_are_pinned_to_the_package_version_and_a_redis_release(rendered):
    from codedfarm import __version__

    _, resources = rendered
    for deployment, pod in pod_specs(resources):
        for container in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert container["imagePullPolicy"] == "IfNotPresent", where
            if container.get("args", [""])[0] == "codedfarm":
                assert container["image"] == f"codedfarm:{__version__}", where
            else:
                assert re.fullmatch(r"redis:7\.4\.\d+-alpine", container["image"]), where
                compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
                assert compose["services"]["redis"]["image"] == container["image"]


UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3,
         "gb": 1024**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}  # fmt: skip


def redis_bytes(value: str) -> int:
    """A Redis memory setting ("1536mb": Redis's mb is MiB, its m 10^6) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([a-z]*)", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


def limit_bytes(value: str) -> int:
    """A Kubernetes quantity ("2Gi") or a compose size ("2g": binary, as Docker reads it)."""
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", str(value)).groups()  # type: ignore[union-attr]
    unit = unit.lower()
    return int(number) * (UNITS[unit] if unit.endswith("i") or not unit else UNITS[unit + "i"])


def assert_maxmemory_under(args: list[str], limit: int, where: str) -> None:
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction", where
    maxmemory = redis_bytes(args[args.index("--maxmemory") + 1])
    # below the limit, with room for client buffers and fragmentation
    assert 0 < maxmemory <= 0.8 * limit, (where, maxmemory, limit)


def test_redis_refuses_writes_before_its_memory_limit(render):
    """maxmemory (noeviction) under the container's memory limit, in Kubernetes and in
    every compose file that runs a Redis."""
    redis = find(render(Variant("cpu")), "Deployment", "redis", NAMESPACE)
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    limit = limit_bytes(container["resources"]["limits"]["memory"])
    assert_maxmemory_under(container["args"], limit, "k8s")
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    sentinel = yaml.safe_load((ROOT / "compose.sentinel.yaml").read_text())["services"]
    limit = limit_bytes(compose["redis"]["deploy"]["resources"]["limits"]["memory"])
    assert_maxmemory_under(compose["redis"]["command"], limit, "compose.yaml redis")
    assert_maxmemory_under(sentinel["redis"]["command"], limit, "compose.sentinel.yaml redis")
    replica = sentinel["redis-replica"]
    assert_maxmemory_under(replica["command"],
                           limit_bytes(replica["deploy"]["resources"]["limits"]["memory"]),
                           "compose.sentinel.yaml redis-replica")  # fmt: skip


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_gpu_workers_land_on_gpu_nodes_with_shared_memory(render, overlay):
    resources = render(Variant(overlay))
    pod = find(resources, "Deployment", "codedfarm-worker", NAMESPACE)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if overlay == "cpu":
        assert "nodeSelector" not in pod and "tolerations" not in pod and "/dev/shm" not in mounts
        return
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"]  # fmt: skip
    assert "runtimeClassName" not in pod  # an option, documented in the overlay
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    # RAM counted against the container's limit: well inside it
    assert limit_bytes(shm["sizeLimit"]) <= limit_bytes(container["resources"]["limits"][
        "memory"]) // 4  # fmt: skip


def test_the_scrape_jobs_are_limited_to_this_apps_pods(render):
    resources = render(Variant("cpu"))
    jobs = yaml.safe_load(find(resources, "ConfigMap", "codedfarm-prometheus-scrape")["data"][
        "scrape-codedfarm.yml"])  # fmt: skip
    targets = {"workers": "codedfarm-worker", "collector": "codedfarm-collector",
               "server": "codedfarm-server"}  # fmt: skip
    assert {job["job_name"] for job in jobs} == set(targets)
    labels = pod_labels(resources)
    for job in jobs:
        (sd,) = job["kubernetes_sd_configs"]
        assert sd == {"role": "pod", "namespaces": {"names": [NAMESPACE]}}, job["job_name"]
        keep = job["relabel_configs"][0]
        assert keep["action"] == "keep"
        assert keep["source_labels"] == [
            "__meta_kubernetes_namespace",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
        ]
        pattern = re.compile(keep["regex"])  # Prometheus anchors the regex
        for name, pod in labels.items():
            value = f"{NAMESPACE};{pod['app.kubernetes.io/name']}"
            assert bool(pattern.fullmatch(value)) == (name == targets[job["job_name"]]), name
            assert not pattern.fullmatch(f"other;{pod['app.kubernetes.io/name']}")
        # every pod of its Deployment carries the scrape annotation with its metrics port
        template = find(resources, "Deployment", targets[job["job_name"]], NAMESPACE)["spec"][
            "template"]  # fmt: skip
        port = int(template["metadata"]["annotations"]["prometheus.io/port"])
        assert port in ports_named(resources, targets[job["job_name"]]).values()


def with_prometheus_operator(overlay: str, where: Path) -> list[Resource]:
    k8s = copy_of_deploy(where)
    path = k8s / "overlays" / overlay
    edit(
        path / "kustomization.yaml",
        lambda spec: spec["components"].append("../../components/prometheus-operator"),
    )
    return kustomize(path)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_prometheus_operator_component_scrapes_and_alerts_as_compose_does(tmp_path, overlay):
    """PodMonitors per Deployment, under the job names the alerts use, on ports the pods
    have; the PrometheusRule carries alerts.yml's rules unchanged; the rest still valid."""
    resources = with_prometheus_operator(overlay, tmp_path)
    monitoring = [r for r in resources if r["apiVersion"] == "monitoring.coreos.com/v1"]
    assert sorted(r["kind"] for r in monitoring) == ["PodMonitor"] * 3 + ["PrometheusRule"]
    for resource in monitoring:
        assert resource["metadata"]["namespace"] == NAMESPACE
        assert resource["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for version in KUBERNETES:
        for resource in resources:
            if resource["apiVersion"] not in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1"):
                validate_kubernetes(resource, version)
    jobs = {}
    for monitor in kinds(resources, "PodMonitor"):
        spec = monitor["spec"]
        assert set(spec) == {"selector", "podMetricsEndpoints"}  # own namespace only
        (target,) = selected(spec["selector"], resources)
        assert target == monitor["metadata"]["name"]
        (endpoint,) = spec["podMetricsEndpoints"]
        assert endpoint["port"] in ports_named(resources, target)
        assert endpoint["path"] == "/metrics"
        (relabel,) = endpoint["relabelings"]
        assert relabel["action"] == "replace" and relabel["targetLabel"] == "job"
        jobs[relabel["replacement"]] = target
    assert jobs == {"workers": "codedfarm-worker", "collector": "codedfarm-collector",
                    "server": "codedfarm-server"}  # fmt: skip
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    rule = find(resources, "PrometheusRule", "codedfarm", NAMESPACE)
    assert rule["spec"] == {"groups": alerts["groups"]}, "regenerate prometheusrule.yaml"
    assert set(re.findall(r'job="(\w+)"', json.dumps(alerts))) <= set(jobs)
