"""k8s/ manifests and the Dockerfile, checked offline: rendering and schemas (the pod's settings, probes and
security: tests/test_k8s_pod.py).

Every kustomization (k8s/base and each k8s/overlays/*) is rendered with ``kubectl kustomize`` when
kubectl is installed, else with scripts/kustomize_lite.py (the same objects: where both exist,
``test_lite_renderer_matches_kubectl`` requires it), so nothing here passes vacuously without kubectl.
Then every object validates against the Kubernetes 1.30 and the newest bundled OpenAPI schemas, in
strict mode (a misspelt field fails), with ``kubernetes-validate``.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from rmserve.config import config_fields, load_config
from tests.k8s_render import (
    K8S,
    K8S_VERSIONS,
    KUBECTL,
    NON_FIELD_ENV,
    OVERLAYS,
    ROOT,
    _kubectl_render,
    by_kind,
    dockerfile_env,
    kl,
    one,
    pod_spec,
    rendered,
)

# ── rendering ──────────────────────────────────────────────────────────────────────────────────


def test_every_overlay_is_covered():
    assert {"base", "overlays/cpu-demo", "overlays/gpu", "overlays/gpu-affinity"} <= set(OVERLAYS)


def test_affinity_ingresses_hash_on_the_key_the_client_sends():
    """ingress-nginx hashes on the header rmserve-client sets, retries idempotent scoring on the next pod,
    and routes to ports the Service has (REST, and gRPC with the GRPC backend protocol)."""
    from rmserve_client._base import ROUTING_HEADER

    objects = rendered("overlays/gpu-affinity")
    service = one(objects, "Service", "rmserve")
    ports = {p["name"] for p in service["spec"]["ports"]}
    ingresses = {i["metadata"]["name"]: i for i in by_kind(objects, "Ingress")}
    assert set(ingresses) == {"rmserve", "rmserve-grpc"}
    for name, ingress in ingresses.items():
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_" + ROUTING_HEADER.replace("-", "_")
        assert "non_idempotent" in notes["nginx.ingress.kubernetes.io/proxy-next-upstream"].split()
        backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        assert all(b["name"] == "rmserve" and b["port"]["name"] in ports for b in backends), backends
        grpc = notes.get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"
        assert grpc == (name == "rmserve-grpc")
        assert {b["port"]["name"] for b in backends} == {"grpc" if grpc else "http"}
        assert ingress["metadata"]["namespace"] == one(objects, "Deployment")["metadata"]["namespace"]


def test_headless_service_note_does_not_recommend_round_robin_for_groups():
    text = open(os.path.join(K8S, "base", "service.yaml")).read()
    assert "group_hash_channel" in text and '"round_robin")' not in text


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: the lite renderer is the only one")
@pytest.mark.parametrize("name", OVERLAYS)
def test_lite_renderer_matches_kubectl(name):
    directory = os.path.join(K8S, name)
    assert kl.build(directory) == _kubectl_render(directory)


def test_content_hash_matches_kustomize():
    # Vectors from kustomize's own api/hasher tests, and one checked against kubectl 1.32 (kustomize 5.5).
    assert kl.content_hash({"kind": "ConfigMap"}) == "6ct58987ht"
    assert kl.content_hash({"kind": "ConfigMap", "data": {"one": ""}}) == "9g67k2htb6"
    assert kl.content_hash({"kind": "Secret", "type": "my-type", "data": {"one": ""}}) == "74bd68bm66"
    assert kl.content_hash({"kind": "ConfigMap", "data": {"a.yaml": 'a: 1\nb: "<x>"\n'}}) == "59gtk56k27"


def test_lite_renderer_features(tmp_path):
    """What our overlays use, on a toy tree; compared with kubectl when it is there."""
    base, overlay = tmp_path / "base", tmp_path / "overlay"
    base.mkdir()
    overlay.mkdir()
    (base / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["app.yaml"],
        "configMapGenerator": [{"name": "cfg", "literals": ["a=1"]}],
        "labels": [{"pairs": {"team": "rm"}, "includeSelectors": True}],
    }))
    (base / "app.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
         "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
             "metadata": {"labels": {"app": "x"}},
             "spec": {"containers": [{"name": "c", "image": "img:1", "args": ["--a"],
                                      "env": [{"name": "A", "value": "1"}],
                                      "envFrom": [{"configMapRef": {"name": "cfg"}}]}],
                      "volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
         "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}},
    ]))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "namespace": "ns",
        "resources": ["../base"],
        "configMapGenerator": [{"name": "cfg", "behavior": "merge", "literals": ["b=2"]}],
        "secretGenerator": [{"name": "sec", "literals": ["k=v"]}],
        "patches": [
            {"patch": yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
                                      "spec": {"template": {"spec": {"containers": [
                                          {"name": "c", "env": [{"name": "B", "valueFrom": {
                                              "secretKeyRef": {"name": "sec", "key": "k"}}}]}]}}}})},
            {"patch": "- {op: add, path: /spec/template/spec/containers/0/args/-, value: --b}\n"
                      "- {op: replace, path: /spec/template/spec/containers/0/env/1/value, value: '9'}",
             "target": {"kind": "Deployment", "name": "app"}},
            {"patch": "$patch: delete\napiVersion: v1\nkind: Service\nmetadata: {name: app}\n"},
        ],
        "images": [{"name": "img", "newName": "reg/img", "newTag": "2"}],
    }))
    objects = kl.build(str(overlay))
    if KUBECTL:
        assert objects == _kubectl_render(str(overlay))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Secret", "Deployment"]
    cm, secret, deployment = objects
    assert cm["data"] == {"a": "1", "b": "2"} and cm["metadata"]["namespace"] == "ns"
    assert cm["metadata"]["name"].startswith("cfg-") and secret["metadata"]["name"].startswith("sec-")
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "x", "team": "rm"}
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"] == "reg/img:2" and container["args"] == ["--a", "--b"]
    assert container["env"][0] == {"name": "B", "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"],
                                                                                 "key": "k"}}}
    assert container["env"][1] == {"name": "A", "value": "9"}
    assert container["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    assert spec["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]


def test_lite_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nreplacements: []\n")
    with pytest.raises(kl.Unsupported, match="replacements"):
        kl.build(str(tmp_path))


# ── schemas ────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", OVERLAYS)
def test_schemas(name):
    import kubernetes_validate

    versions = {*K8S_VERSIONS, kubernetes_validate.latest_version()}
    objects = rendered(name)
    assert objects
    for obj in objects:
        for version in sorted(versions):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} invalid for {version} at {path}: "
                            f"{exc.message}")


# ── Dockerfile ─────────────────────────────────────────────────────────────────────────────────


def test_dockerfile():
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    joined = text.replace("\\\n", " ")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    uid = re.search(r"^ARG UID=(\d+)$", text, re.M).group(1)
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", text, re.M) and int(uid) > 0
    for name in OVERLAYS:
        assert pod_spec(rendered(name))["securityContext"]["runAsUser"] == int(uid)
    assert re.search(r'^ENTRYPOINT \["rmserve", "serve"\]$', text, re.M)
    assert "--host" in re.search(r"^CMD (.*)$", text, re.M).group(1) and "0.0.0.0" in text
    # torch: the pinned version from the constraints file, from the index chosen by a build arg.
    torch_line = next(line for line in joined.splitlines() if "pip install" in line and " torch" in line)
    assert "-c requirements/constraints.txt" in torch_line and "${TORCH_INDEX_URL}" in torch_line
    assert re.search(r"^torch==\d", open(os.path.join(ROOT, "requirements", "constraints.txt")).read(), re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/cpu$", text, re.M), "CPU torch by default"
    assert "clients/python[grpc]" in joined and "-e ." in joined
    exposed = set(re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split())
    assert exposed == {"8000", "50051"}
    env = dict(dockerfile_env())
    for key in env:
        if key.startswith("RMSERVE_"):
            assert key.removeprefix("RMSERVE_").lower() in {f.name for f in config_fields()} or key in NON_FIELD_ENV
    image_defaults = load_config({}, env={k: v for k, v in env.items() if k.startswith("RMSERVE_")})
    assert (image_defaults.host, image_defaults.port, image_defaults.grpc_port) == ("0.0.0.0", 8000, 50051)
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert source == "." or os.path.exists(os.path.join(ROOT, source)), source


def test_dockerignore_keeps_the_context_small():
    lines = [line.strip() for line in open(os.path.join(ROOT, ".dockerignore")) if line.strip()
             and not line.startswith("#")]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"rmserve", "clients/python", "pyproject.toml", "requirements/constraints.txt"} <= included
    assert not included & {".venv", ".git", "tests", "load", "bench", "trainer"}
