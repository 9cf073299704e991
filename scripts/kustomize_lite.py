"""A small pure-Python kustomize for the subset k8s/ uses, so the manifests can be rendered and
tested where ``kubectl`` is not installed.

    python scripts/kustomize_lite.py k8s/overlays/gpu          # like `kubectl kustomize k8s/overlays/gpu`

Supported (anything else in a kustomization.yaml raises ``Unsupported``, so a new feature in the
manifests fails loudly instead of rendering differently from kustomize):

- ``resources``: YAML files (several documents each) and directories with a kustomization.yaml;
- ``configMapGenerator`` / ``secretGenerator``: ``files`` (``key=path`` or ``path``), ``literals``,
  ``envs``, ``behavior`` create | merge | replace, ``options`` (labels, annotations,
  disableNameSuffixHash), and ``generatorOptions``; names get kustomize's content hash and every
  reference in a pod spec (volumes, env, envFrom, imagePullSecrets) follows the new name;
- ``patches``: strategic merge (a partial object matched by kind and name, ``null`` deletes a key,
  lists of containers/volumes/env/ports/... merged by their Kubernetes merge keys, ``$patch: delete``
  removes an object or a list element) and JSON 6902 (add, remove, replace, test; needs ``target``);
- ``namespace`` (also renames Namespace objects, as kustomize does), ``labels`` (``pairs``,
  ``includeSelectors``, ``includeTemplates``), ``commonLabels``, ``commonAnnotations``, ``images``.

Order of operations follows kustomize: resources, generators, patches, namespace, labels,
annotations, images; content hashes and name references last. tests/test_k8s_manifests.py
renders every overlay with both this and ``kubectl kustomize`` (when present) and requires the
same objects.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

# Run as a script or loaded by its path (tests/test_k8s_manifests.py): either way its sibling is importable.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kustomize_patches import Unsupported, json6902, strategic_merge  # noqa: E402

KNOWN_FIELDS = {
    "apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "generatorOptions",
    "patches", "namespace", "labels", "commonLabels", "commonAnnotations", "images",
}
CLUSTER_SCOPED = {
    "Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
    "CustomResourceDefinition", "PriorityClass", "IngressClass", "RuntimeClass", "APIService",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "CSIDriver", "VolumeAttachment",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
# What kustomize's default output sorting puts first (the rest follow by kind name).
KIND_ORDER = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
    "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
    "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
KIND_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


@dataclass
class Resource:
    obj: dict[str, Any]
    generated: bool = False  # from a generator: gets a content-hash suffix
    hashed: bool = True
    original_name: str = ""
    previous_names: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "")

    @property
    def name(self) -> str:
        return self.obj.get("metadata", {}).get("name", "")

    def matches(self, kind: str | None, name: str | None, group: str | None = None, version: str | None = None) -> bool:
        if kind and self.kind != kind:
            return False
        if name and name not in (self.name, self.original_name):
            return False
        api = self.obj.get("apiVersion", "")
        res_group, _, res_version = api.rpartition("/")
        if group is not None and group != res_group:
            return False
        return version is None or version == res_version


# ── loading ────────────────────────────────────────────────────────────────────────────────────


def _load_yaml_docs(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def _read_kustomization(directory: str) -> dict[str, Any]:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
            unknown = set(data) - KNOWN_FIELDS
            if unknown:
                raise Unsupported(f"{path}: kustomize_lite does not implement {sorted(unknown)}")
            return data
    raise FileNotFoundError(f"no kustomization.yaml in {directory}")


# ── generators ─────────────────────────────────────────────────────────────────────────────────


def _split_kv(text: str, where: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{where}: expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _generator_data(directory: str, spec: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = {}
    for env_file in spec.get("envs", []) or []:
        with open(os.path.join(directory, env_file), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    key, value = _split_kv(line, env_file)
                    data[key] = value
    for entry in spec.get("files", []) or []:
        key, sep, path = entry.partition("=")
        if not sep:
            key, path = os.path.basename(entry), entry
        with open(os.path.join(directory, path), encoding="utf-8") as f:
            data[key] = f.read()
    for literal in spec.get("literals", []) or []:
        key, value = _split_kv(literal, "literals")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        data[key] = value
    unknown = set(spec) - {"name", "namespace", "behavior", "envs", "files", "literals", "options", "type"}
    if unknown:
        raise Unsupported(f"generator {spec.get('name')!r}: kustomize_lite does not implement {sorted(unknown)}")
    return data


def _generate(kind: str, directory: str, spec: dict[str, Any], options: dict[str, Any]) -> Resource:
    data = _generator_data(directory, spec)
    metadata: dict[str, Any] = {"name": spec["name"]}
    if spec.get("namespace"):
        metadata["namespace"] = spec["namespace"]
    opts = {**(options or {}), **(spec.get("options") or {})}
    if opts.get("labels"):
        metadata["labels"] = dict(opts["labels"])
    if opts.get("annotations"):
        metadata["annotations"] = dict(opts["annotations"])
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
    else:
        obj["data"] = data
    return Resource(obj, generated=True, hashed=not opts.get("disableNameSuffixHash", False),
                    original_name=spec["name"])


def _apply_generator(resources: list[Resource], new: Resource, behavior: str) -> None:
    matches = [r for r in resources if r.kind == new.kind and new.name in (r.original_name, r.name)]
    if behavior == "create":
        if matches:
            raise ValueError(f"{new.kind} {new.name!r} already exists; use behavior: merge or replace")
        resources.append(new)
        return
    if len(matches) != 1:
        raise ValueError(f"behavior {behavior}: found {len(matches)} {new.kind} named {new.name!r} to {behavior}")
    old = matches[0]
    if behavior == "merge":
        old.obj.setdefault("data", {}).update(new.obj.get("data", {}))
        for key in ("labels", "annotations"):
            if new.obj["metadata"].get(key):
                old.obj["metadata"].setdefault(key, {}).update(new.obj["metadata"][key])
    elif behavior == "replace":
        new.obj["metadata"]["name"] = old.name
        old.obj = new.obj
    else:
        raise Unsupported(f"generator behavior {behavior!r}")
    old.hashed = old.hashed and new.hashed


# ── patches ────────────────────────────────────────────────────────────────────────────────────


def _apply_patch(resources: list[Resource], directory: str, entry: dict[str, Any]) -> None:
    if "path" in entry:
        docs = _load_yaml_docs(os.path.join(directory, entry["path"]))
    else:
        docs = [d for d in yaml.safe_load_all(entry["patch"]) if d]
    target = entry.get("target") or {}
    unknown = set(target) - {"group", "version", "kind", "name"}
    if unknown or set(entry) - {"path", "patch", "target"}:
        raise Unsupported(f"patch selector fields {sorted(unknown | (set(entry) - {'path', 'patch', 'target'}))}")
    if len(docs) == 1 and isinstance(docs[0], list):  # JSON 6902
        if not target:
            raise ValueError("a JSON 6902 patch needs a target")
        hits = [r for r in resources if r.matches(target.get("kind"), target.get("name"),
                                                   target.get("group"), target.get("version"))]
        if not hits:
            raise ValueError(f"patch target {target} matches no resource")
        for r in hits:
            r.obj = json6902(r.obj, docs[0])
        return
    for doc in docs:
        kind = target.get("kind") or doc.get("kind")
        name = target.get("name") or doc.get("metadata", {}).get("name")
        hits = [r for r in resources if r.matches(kind, name)]
        if not hits:
            raise ValueError(f"patch for {kind}/{name} matches no resource")
        for r in hits:
            if doc.get("$patch") == "delete":
                resources.remove(r)
            else:
                patch = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
                patch["metadata"] = {k: v for k, v in (patch.get("metadata") or {}).items() if k != "name"}
                r.obj = strategic_merge(r.obj, patch)


# ── transformers ───────────────────────────────────────────────────────────────────────────────


def _pod_templates(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind in WORKLOADS and "template" in spec:
        yield spec["template"]
    elif kind == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {})


def _pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj.get("kind") == "Pod":
        yield obj.get("spec") or {}
    for template in _pod_templates(obj):
        yield template.setdefault("spec", {})


def _set_namespace(resources: list[Resource], namespace: str) -> None:
    for r in resources:
        if r.kind == "Namespace":
            r.obj["metadata"]["name"] = namespace
        elif r.kind not in CLUSTER_SCOPED:
            r.obj.setdefault("metadata", {})["namespace"] = namespace


def _add_labels(resources: list[Resource], pairs: dict[str, str], *, selectors: bool, templates: bool) -> None:
    pairs = {str(k): str(v) for k, v in pairs.items()}
    for r in resources:
        obj = r.obj
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if selectors or templates:
            for template in _pod_templates(obj):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if not selectors:
            continue
        spec = obj.get("spec")
        if obj.get("kind") in ("Service", "ReplicationController") and spec is not None:
            spec.setdefault("selector", {}).update(pairs)
        elif obj.get("kind") in WORKLOADS - {"ReplicationController", "Job"} and spec is not None:
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        elif obj.get("kind") == "PodDisruptionBudget" and (spec or {}).get("selector") is not None:
            spec["selector"].setdefault("matchLabels", {}).update(pairs)


def _add_annotations(resources: list[Resource], pairs: dict[str, str]) -> None:
    pairs = {str(k): str(v) for k, v in pairs.items()}
    for r in resources:
        r.obj.setdefault("metadata", {}).setdefault("annotations", {}).update(pairs)
        for template in _pod_templates(r.obj):
            template.setdefault("metadata", {}).setdefault("annotations", {}).update(pairs)


def _containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def _set_images(resources: list[Resource], images: list[dict[str, Any]]) -> None:
    for r in resources:
        for pod_spec in _pod_specs(r.obj):
            for container in _containers(pod_spec):
                container["image"] = _new_image(container.get("image", ""), images)


def _new_image(image: str, images: list[dict[str, Any]]) -> str:
    name, tag, digest = image, "", ""
    if "@" in name:
        name, digest = name.split("@", 1)
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    for rule in images:
        unknown = set(rule) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise Unsupported(f"images fields {sorted(unknown)}")
        if rule["name"] != name:
            continue
        name = rule.get("newName", name)
        if "digest" in rule:
            return f"{name}@{rule['digest']}"
        tag = str(rule.get("newTag", tag))
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and not tag else "")


# ── content hash and name references ───────────────────────────────────────────────────────────


def _go_json(value: Any) -> str:
    """``encoding/json.Marshal`` of a map: sorted keys, no spaces, <, > and & escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def content_hash(obj: dict[str, Any]) -> str:
    """kustomize's name suffix for a ConfigMap or Secret (api/hasher). Its field lookup misses
    ``metadata/name``, so the name always hashes as ""; we reproduce that."""
    if obj["kind"] == "ConfigMap":
        encoded: dict[str, Any] = {"kind": "ConfigMap", "name": "", "data": obj.get("data") or ""}
        if obj.get("binaryData"):
            encoded["binaryData"] = obj["binaryData"]
    elif obj["kind"] == "Secret":
        encoded = {"kind": "Secret", "type": obj.get("type", ""), "name": "", "data": obj.get("data") or ""}
        if obj.get("stringData"):
            encoded["stringData"] = obj["stringData"]
    else:
        raise Unsupported(f"content hash of a {obj['kind']}")
    digest = hashlib.sha256(_go_json(encoded).encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rename_references(resources: list[Resource], renames: dict[tuple[str, str], str]) -> None:
    def fix(kind: str, holder: dict[str, Any], key: str) -> None:
        if isinstance(holder, dict) and (kind, holder.get(key)) in renames:
            holder[key] = renames[(kind, holder[key])]

    for r in resources:
        for pod_spec in _pod_specs(r.obj):
            for volume in pod_spec.get("volumes") or []:
                fix("ConfigMap", volume.get("configMap"), "name")
                fix("Secret", volume.get("secret"), "secretName")
                for source in (volume.get("projected") or {}).get("sources") or []:
                    fix("ConfigMap", source.get("configMap"), "name")
                    fix("Secret", source.get("secret"), "name")
            for secret in pod_spec.get("imagePullSecrets") or []:
                fix("Secret", secret, "name")
            for container in _containers(pod_spec):
                for env in container.get("env") or []:
                    ref = env.get("valueFrom") or {}
                    fix("ConfigMap", ref.get("configMapKeyRef"), "name")
                    fix("Secret", ref.get("secretKeyRef"), "name")
                for env_from in container.get("envFrom") or []:
                    fix("ConfigMap", env_from.get("configMapRef"), "name")
                    fix("Secret", env_from.get("secretRef"), "name")


# ── build ──────────────────────────────────────────────────────────────────────────────────────


def _accumulate(directory: str) -> list[Resource]:
    k = _read_kustomization(directory)
    resources: list[Resource] = []
    for entry in k.get("resources", []) or []:
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            resources += _accumulate(path)
        else:
            resources += [Resource(doc, original_name=doc.get("metadata", {}).get("name", ""))
                          for doc in _load_yaml_docs(path)]
    options = k.get("generatorOptions") or {}
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in k.get(key, []) or []:
            _apply_generator(resources, _generate(kind, directory, spec, options), spec.get("behavior", "create"))
    for entry in k.get("patches", []) or []:
        _apply_patch(resources, directory, entry)
    if k.get("namespace"):
        _set_namespace(resources, k["namespace"])
    if k.get("commonLabels"):
        _add_labels(resources, k["commonLabels"], selectors=True, templates=True)
    for entry in k.get("labels", []) or []:
        _add_labels(resources, entry.get("pairs") or {}, selectors=bool(entry.get("includeSelectors")),
                    templates=bool(entry.get("includeTemplates")))
    if k.get("commonAnnotations"):
        _add_annotations(resources, k["commonAnnotations"])
    if k.get("images"):
        _set_images(resources, k["images"])
    return resources


def _order(obj: dict[str, Any]) -> tuple:
    kind = obj.get("kind", "")
    if kind in KIND_ORDER:
        rank = KIND_ORDER.index(kind)
    elif kind in KIND_LAST:
        rank = len(KIND_ORDER) + 2 + KIND_LAST.index(kind)
    else:
        rank = len(KIND_ORDER) + 1
    meta = obj.get("metadata", {})
    return rank, kind, meta.get("namespace", ""), meta.get("name", "")


def build(directory: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize DIRECTORY`` would print, as dicts, in kustomize's order."""
    resources = _accumulate(directory)
    renames: dict[tuple[str, str], str] = {}
    for r in resources:
        if r.generated and r.hashed:
            new_name = f"{r.name}-{content_hash(r.obj)}"
            renames[(r.kind, r.name)] = new_name
            r.obj["metadata"]["name"] = new_name
    _rename_references(resources, renames)
    return sorted((r.obj for r in resources), key=_order)


def render(directory: str) -> str:
    return yaml.safe_dump_all(build(directory), sort_keys=True, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    sys.stdout.write(render(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
