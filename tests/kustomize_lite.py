"""`kustomize build` for the features k8s/ uses, so the manifests can be rendered and checked without kubectl.

Supported: `resources` (files and kustomization folders), `configMapGenerator` with `literals` (behavior
create or merge, the content-hash name suffix and the rewrite of references to it), `patches` given by
`path` (strategic merge, targeted by the patch's kind and name) and `images` (newName, newTag, digest).
Any other kustomization field or patch directive raises, so a manifest change that needs more fails the
tests instead of rendering wrongly. `kubectl kustomize k8s/overlays/cpu` renders the same objects
(tests/test_deploy_k8s.py compares the two when kubectl is installed).
"""

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "images"}
# Strategic-merge keys of the lists k8s/ patches (from the Kubernetes API types); other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

Resource = dict[str, Any]


class KustomizeError(ValueError):
    pass


def build(folder: Path) -> list[Resource]:
    """The rendered resources of the kustomization in `folder`, generated names resolved."""
    resources, generated = _accumulate(folder)
    renames = {}
    for resource in resources:
        if id(resource) in generated:
            name = resource["metadata"]["name"]
            renames[name] = f"{name}-{config_map_hash(resource)}"
            resource["metadata"]["name"] = renames[name]
    for resource in resources:
        _rename_config_map_refs(resource, renames)
    return resources


def _accumulate(folder: Path) -> tuple[list[Resource], set[int]]:
    """Resources of the kustomization before name suffixes, and the ids of those it generated."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{folder}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    generated: set[int] = set()
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            sub, sub_generated = _accumulate(path)
            resources += sub
            generated |= sub_generated
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in spec.get("configMapGenerator", []):
        _generate_config_map(folder, generator, resources, generated)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{folder}: only `patches: - path: FILE` is supported, got {patch}")
        for doc in yaml.safe_load_all((folder / patch["path"]).read_text()):
            target = _find(resources, doc["kind"], doc["metadata"]["name"], folder)
            merged = strategic_merge(target, doc)
            target.clear()
            target.update(merged)
    for image in spec.get("images", []):
        _set_image(resources, image)
    return resources, generated


def _generate_config_map(
    folder: Path, generator: dict, resources: list[Resource], generated: set[int]
) -> None:
    unknown = set(generator) - {"name", "literals", "behavior"}
    if unknown:
        raise KustomizeError(f"{folder}: unsupported configMapGenerator fields {sorted(unknown)}")
    data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
    behavior = generator.get("behavior", "create")
    if behavior == "create":
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}}
        config_map["data"] = data
        resources.append(config_map)
        generated.add(id(config_map))
    elif behavior == "merge":
        existing = _find(resources, "ConfigMap", generator["name"], folder)
        existing["data"] = {**existing.get("data", {}), **data}
    else:
        raise KustomizeError(f"{folder}: unsupported configMapGenerator behavior {behavior!r}")


def config_map_hash(config_map: Resource) -> str:
    """kustomize's name suffix: sha256 of Go's JSON of {data, kind, name} (kustomize 5 hashes an empty
    name), first 10 hex digits with 0, 1, 3, a, e swapped for letters so the suffix is never a number."""
    encoded = {"data": config_map.get("data", {}), "kind": "ConfigMap", "name": ""}
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # as Go escapes
    return hashlib.sha256(text.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge: maps merge, lists in MERGE_KEYS merge by key, other lists and scalars
    are replaced, a null deletes."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if any(key.startswith("$") for key in patch):
            raise KustomizeError(f"patch directives are not supported: {sorted(patch)}")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        originals = {item.get(key): item for item in base}
        patched = [strategic_merge(originals.get(item.get(key), {}), item) for item in patch]
        untouched = [copy.deepcopy(item) for item in base if item.get(key) not in {p.get(key) for p in patch}]
        return patched + untouched  # the patch's items first, in its order, as kustomize lists them
    return copy.deepcopy(patch)


def _set_image(resources: list[Resource], image: dict) -> None:
    for container in _containers(resources):
        name = container["image"].split("@")[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{new}:{image['newTag']}"
        else:
            container["image"] = new


def _containers(resources: list[Resource]) -> list[dict]:
    found = []
    for resource in resources:
        if resource["kind"] in POD_TEMPLATE_KINDS:
            pod = resource["spec"]["template"]["spec"]
            found += pod.get("initContainers", []) + pod.get("containers", [])
    return found


def _rename_config_map_refs(resource: Resource, renames: dict[str, str]) -> None:
    if resource["kind"] not in POD_TEMPLATE_KINDS:
        return
    pod = resource["spec"]["template"]["spec"]
    refs = [volume["configMap"] for volume in pod.get("volumes", []) if "configMap" in volume]
    for c in _containers([resource]):
        refs += [source["configMapRef"] for source in c.get("envFrom", []) if "configMapRef" in source]
        refs += [
            e["valueFrom"]["configMapKeyRef"]
            for e in c.get("env", [])
            if "configMapKeyRef" in e.get("valueFrom", {})
        ]
    for ref in refs:
        ref["name"] = renames.get(ref["name"], ref["name"])


def _find(resources: list[Resource], kind: str, name: str, folder: Path) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise KustomizeError(f"{folder}: no {kind} named {name} to patch or merge into")
