"""The two patch kinds of scripts/kustomize_lite.py: strategic merge (what ``kubectl patch --type strategic``
does for the fields k8s/ uses) and JSON 6902; and ``Unsupported``, raised for anything beyond that subset.
"""

from __future__ import annotations

import copy
from typing import Any


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


# Strategic-merge keys of the list fields we merge (k8s.io/api patchMergeKey tags).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey",
}


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Merge ``patch`` into ``base`` the way ``kubectl patch --type strategic`` does for our fields."""
    if isinstance(patch, dict) and isinstance(base, dict):
        for directive in ("$retainKeys", "$setElementOrder", "$deleteFromPrimitiveList"):
            if any(k.startswith(directive) for k in patch):
                raise Unsupported(f"strategic-merge directive {directive}")
        if patch.get("$patch") == "replace":
            return {k: v for k, v in patch.items() if k != "$patch"}
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = _strip_directives(v)
        return out
    if isinstance(patch, list) and isinstance(base, list):
        merge_key = _merge_key(key, base + patch)
        if merge_key is None:
            return _strip_directives(patch)
        by_key = {item.get(merge_key): item for item in base if isinstance(item, dict)}
        merged, seen = [], set()
        for item in patch:  # kustomize (kyaml) puts the patch's elements first, in patch order ...
            k = item.get(merge_key)
            seen.add(k)
            if item.get("$patch") == "delete":
                continue
            merged.append(strategic_merge(by_key[k], item) if k in by_key else _strip_directives(item))
        merged += [item for item in base if item.get(merge_key) not in seen]  # ... then the rest
        return merged
    return _strip_directives(patch)


def _merge_key(field_name: str | None, items: list[Any]) -> str | None:
    if field_name == "ports":  # container ports merge on containerPort, Service ports on port
        return "containerPort" if any("containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field_name or "")


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if k != "$patch" and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        kind = op["op"]
        if kind == "add":
            if isinstance(target, list):
                target.insert(len(target) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                target[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            index = int(last) if isinstance(target, list) else last
            target[index]  # noqa: B018  (must exist)
            target[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del target[int(last) if isinstance(target, list) else last]
        elif kind == "test":
            actual = target[int(last) if isinstance(target, list) else last]
            if actual != op["value"]:
                raise ValueError(f"json6902 test failed at {op['path']}: {actual!r} != {op['value']!r}")
        else:
            raise Unsupported(f"json6902 op {kind!r}")
    return doc
