"""What `kustomize build` makes of deploy/k8s, for the tests, where no kustomize binary is.

A small, strict subset of kustomize, enough for the project's own kustomizations and
refusing anything else (an unknown field is an error, not silently skipped): resources
(files and directories), components, configMapGenerator and secretGenerator (literals,
files, envs; behavior create or merge; options.labels), generatorOptions with
``disableNameSuffixHash: true`` (the manifests use stable names, so no hash suffixes and no
name references to rewrite), labels (metadata only), namespace, and patches: strategic
merge (maps merged, lists of named items merged by name, other lists replaced) or JSON 6902
(add, replace, remove). When a kustomize binary is on PATH, a test compares its output with
this one's.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {"apiVersion", "kind", "resources", "components", "configMapGenerator",
         "secretGenerator", "generatorOptions", "labels", "namespace", "patches"}  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render(root: Path) -> list[dict[str, Any]]:
    """The resources ``kustomize build root`` prints, in order of first appearance."""
    return _build(root, [])


def _build(root: Path, inherited: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise ValueError(f"{root}: fields this renderer does not know: {sorted(unknown)}")
    generates = spec.get("configMapGenerator") or spec.get("secretGenerator")
    if generates and not spec.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise ValueError(f"{root}: generators need disableNameSuffixHash: true here")
    out = inherited
    for entry in spec.get("resources", []):
        path = root / entry
        if path.is_dir():
            out = out + _build(path, [])
        else:
            out = out + [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in spec.get("components", []):
        out = _build(root / entry, out)  # a component works on what its parent has
    for kind, gens in (("ConfigMap", spec.get("configMapGenerator", [])),
                       ("Secret", spec.get("secretGenerator", []))):  # fmt: skip
        for gen in gens:
            out = _generate(root, kind, gen, out)
    for patch in spec.get("patches", []):
        out = [_patched(root, patch, r) for r in out]
    if "namespace" in spec:
        for r in out:
            if r["kind"] not in CLUSTER_SCOPED:
                r.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise ValueError(f"{root}: labels with selectors or templates are not rendered")
        for r in out:
            r.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    return out


def _generate(root: Path, kind: str, gen: dict[str, Any],
              out: list[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    data: dict[str, str] = {}
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for name in gen.get("files", []):
        data[Path(name).name] = (root / name).read_text()
    for name in gen.get("envs", []):
        for line in (root / name).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                data[key.strip()] = value
    behavior = gen.get("behavior", "create")
    found = [r for r in out if r["kind"] == kind and r["metadata"]["name"] == gen["name"]]
    if behavior == "merge":
        if not found:
            raise ValueError(f"{root}: merge into a {kind} {gen['name']} that does not exist")
        if kind == "Secret":
            data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        found[0]["data"].update(data)
        return out
    if found:
        raise ValueError(f"{root}: {kind} {gen['name']} is generated twice")
    if kind == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    metadata: dict[str, Any] = {"name": gen["name"]}
    if gen.get("options", {}).get("labels"):
        metadata["labels"] = dict(gen["options"]["labels"])
    made = {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}
    if kind == "Secret":
        made["type"] = "Opaque"
    return [*out, made]


def _patched(root: Path, patch: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    body = yaml.safe_load((root / patch["path"]).read_text() if "path" in patch
                          else patch["patch"])  # fmt: skip
    target = patch.get("target")
    if target is None:  # a strategic merge patch names its target itself
        target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    if resource["kind"] != target["kind"] or resource["metadata"]["name"] != target["name"]:
        return resource
    if isinstance(body, list):
        return _json6902(resource, body)
    return _merge(copy.deepcopy(resource), body)


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            base[key] = _merge(base[key], value) if key in base else value
        return base
    named = (isinstance(base, list) and isinstance(patch, list)
             and all(isinstance(x, dict) and "name" in x for x in base + patch))  # fmt: skip
    if named:
        merged = {x["name"]: x for x in base}
        for item in patch:
            merged[item["name"]] = _merge(merged.get(item["name"], {}), item)
        return list(merged.values())
    return patch


def _json6902(resource: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    for op in ops:
        *parents, last = [p for p in op["path"].split("/") if p]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace" and (key not in node if isinstance(node, dict) else False):
                raise ValueError(f"replace of a missing path {op['path']}")
            node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ValueError(f"JSON patch op {op['op']!r} is not rendered here")
    return out
