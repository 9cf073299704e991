"""Rendering k8s/ for the manifest tests (tests/test_k8s_manifests.py, tests/test_k8s_pod.py): every
kustomization with ``kubectl kustomize`` when kubectl is installed, else with scripts/kustomize_lite.py, and
small lookups over the rendered objects."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "k8s")
KUBECTL = shutil.which("kubectl")
K8S_VERSIONS = ("1.30.0",)  # plus the newest schema kubernetes-validate bundles (see test_schemas)
# Secrets the manifests use but never create (keys do not live in git): name -> files it must hold.
EXTERNAL_SECRETS = {"rmserve-api-key": {"api-key": "placeholder-key\n"}}
# RMSERVE_* variables that are not ServerConfig fields but are read elsewhere.
NON_FIELD_ENV = {"RMSERVE_CACHE", "RMSERVE_CONFIG"}


def _kustomize_lite():
    spec = importlib.util.spec_from_file_location("kustomize_lite", os.path.join(ROOT, "scripts", "kustomize_lite.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["kustomize_lite"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kl = _kustomize_lite()


def kustomizations() -> list[str]:
    dirs = ["base"] + [
        os.path.join("overlays", d) for d in sorted(os.listdir(os.path.join(K8S, "overlays")))
        if os.path.exists(os.path.join(K8S, "overlays", d, "kustomization.yaml"))
    ]
    return dirs


OVERLAYS = kustomizations()


def _kubectl_render(directory: str) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", directory], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@functools.cache
def _rendered(name: str) -> tuple[dict, ...]:
    directory = os.path.join(K8S, name)
    return tuple(_kubectl_render(directory) if KUBECTL else kl.build(directory))


def rendered(name: str) -> list[dict]:
    return [yaml.safe_load(yaml.safe_dump(o)) for o in _rendered(name)]  # a fresh copy per test


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def server_container(objects: list[dict]) -> dict:
    return next(c for c in pod_spec(objects)["containers"] if c["name"] == "rmserve")


def matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


@functools.cache
def dockerfile_env() -> tuple[tuple[str, str], ...]:
    text = open(os.path.join(ROOT, "Dockerfile")).read().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return tuple(env.items())
