"""The pod of every k8s/ overlay, "started" on paper (rendered as in tests/test_k8s_manifests.py):
- its ConfigMap, Secret and emptyDir mounts are materialised under a temporary root, and its args + env +
  mounted YAML go through rmserve's own CLI parser and ``load_config``, so an unknown setting, a bad value
  or an api_key_file that is not on the Secret's mount fails here, not in the cluster;
- probes hit real GET routes of the FastAPI app (and stay open when an API key is set), container
  ports match the settings and both Services, terminationGracePeriodSeconds covers preStop + drain,
  the HPA targets the Deployment on a gauge the server exports, the PDB and spread constraints select
  the pods, the pod runs as non-root on a read-only root with every write path on an emptyDir.
"""

from __future__ import annotations

import base64
import functools
import os
import re

import pytest
import yaml

import rmserve
from rmserve.cli import build_parser
from rmserve.config import ServerConfig, config_fields, load_config
from rmserve.server import create_app
from tests.fakes import FakeRewardModel
from tests.k8s_render import (
    EXTERNAL_SECRETS,
    K8S,
    NON_FIELD_ENV,
    OVERLAYS,
    by_kind,
    dockerfile_env,
    matches,
    one,
    pod_spec,
    rendered,
    server_container,
)
from tests.serving import asgi_client, make_app

# ── the pod, started on paper ──────────────────────────────────────────────────────────────────


class PaperPod:
    """The server container's view of the world: mounted files under ``root``, env, settings."""

    def __init__(self, objects: list[dict], root):
        self.objects = objects
        self.spec = pod_spec(objects)
        self.container = server_container(objects)
        self.root = str(root)
        self.volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        self.mounts = {m["mountPath"]: m for m in self.container.get("volumeMounts", [])}
        for path, mount in self.mounts.items():
            self._materialise(self.volumes[mount["name"]], self.host(path))

    def _materialise(self, volume: dict, where: str) -> None:
        os.makedirs(where, exist_ok=True)
        if "configMap" in volume:
            files = one(self.objects, "ConfigMap", volume["configMap"]["name"])["data"]
        elif "secret" in volume:
            files = self.secret_files(volume["secret"]["secretName"])
        else:
            assert {"emptyDir", "persistentVolumeClaim"} & set(volume), f"unexpected volume {volume}"
            return
        assert "items" not in (volume.get("configMap") or volume.get("secret")), "items projections unchecked"
        for key, text in files.items():
            with open(os.path.join(where, key), "w") as f:
                f.write(text)

    def secret_files(self, name: str) -> dict[str, str]:
        secrets = [s for s in by_kind(self.objects, "Secret") if s["metadata"]["name"] == name]
        if secrets:
            return {k: base64.b64decode(v).decode() for k, v in secrets[0].get("data", {}).items()}
        assert name in EXTERNAL_SECRETS, f"Secret {name} is neither rendered nor a documented external Secret"
        return EXTERNAL_SECRETS[name]

    def mount_of(self, path: str) -> str | None:
        under = [m for m in self.mounts if path == m or path.startswith(m.rstrip("/") + "/")]
        return max(under, key=len) if under else None

    def host(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def env(self) -> dict[str, str]:
        env = dict(dockerfile_env())
        if self.spec.get("enableServiceLinks", True):
            env.update(service_link_env(by_kind(self.objects, "Service")))
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.secret_files(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["configMapKeyRef"]
                env[var["name"]] = one(self.objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        return env

    def config(self, tmp_path) -> tuple[ServerConfig, dict]:
        """Settings the way `rmserve serve ARGS` would load them in this pod; also the mounted YAML."""
        args = build_parser().parse_args(["serve", *self.container.get("args", [])])
        overrides = {f.name: getattr(args, f.name) for f in config_fields()}
        overrides = {k: ",".join(v) if isinstance(v, list) else v for k, v in overrides.items()}
        assert args.config, "the server reads its settings file: --config"
        assert self.mount_of(args.config), f"--config {args.config} is on no volume mount"
        with open(self.host(args.config)) as f:
            settings = yaml.safe_load(f)
        rewritten = {k: self._in_pod(v) for k, v in settings.items()}
        local = tmp_path / "rmserve.yaml"
        local.write_text(yaml.safe_dump(rewritten))
        env = {k: v for k, v in self.env().items() if k.startswith("RMSERVE_")}
        return load_config(overrides, env=env, yaml_path=str(local)), settings

    def _in_pod(self, value):
        """A path on a mount, as this test sees it (the pod's /var/run/... lives under ``root``)."""
        if isinstance(value, str) and value.startswith("/") and self.mount_of(value):
            return self.host(value)
        return value


def service_link_env(services: list[dict]) -> dict[str, str]:
    """The variables the kubelet injects for each Service when enableServiceLinks is on."""
    env = {}
    for service in services:
        if service["spec"].get("clusterIP") == "None":
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        ports = service["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = "10.0.0.10"
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{prefix}_PORT"] = f"tcp://10.0.0.10:{ports[0]['port']}"
        for p in ports:
            env[f"{prefix}_SERVICE_PORT_{p['name'].upper()}"] = str(p["port"])
            env[f"{prefix}_PORT_{p['port']}_TCP"] = f"tcp://10.0.0.10:{p['port']}"
    return env


@pytest.fixture(params=OVERLAYS)
def deployed(request, tmp_path):
    objects = rendered(request.param)
    pod = PaperPod(objects, tmp_path / "pod")
    config, settings = pod.config(tmp_path)
    return request.param, objects, pod, config, settings


def test_config_map_loads_into_server_config(deployed):
    name, objects, pod, config, settings = deployed
    known = {f.name for f in config_fields()}
    assert set(settings) <= known, f"{name}: unknown settings {set(settings) - known}"
    assert config.host == "0.0.0.0", "a pod must listen beyond loopback"
    for var in pod.container.get("env", []):
        if var["name"].startswith("RMSERVE_"):
            field = var["name"].removeprefix("RMSERVE_").lower()
            assert field in known or var["name"] in NON_FIELD_ENV, f"{var['name']} is no rmserve setting"
    if name.startswith("overlays/gpu"):  # gpu and the overlays built on it
        assert (config.device, config.dtype) == ("cuda", "bfloat16")
        for _, path in config.model_specs():
            mount = pod.mount_of(path)
            assert mount and "persistentVolumeClaim" in pod.volumes[pod.mounts[mount]["name"]], path
    else:
        assert config.device == "cpu"


def test_api_keys_come_from_the_secret(deployed):
    name, objects, pod, config, settings = deployed
    assert "RMSERVE_API_KEY" not in {v["name"] for v in pod.container.get("env", [])}, "keys go in a file"
    assert config.api_key_file, f"{name}: the server must require an API key (api_key_file)"
    mount = pod.mount_of(settings["api_key_file"])
    assert mount and "secret" in pod.volumes[pod.mounts[mount]["name"]], "api_key_file must be on the Secret mount"
    assert config.api_keys(), "the mounted key file holds the keys"
    if name.endswith("cpu-demo"):
        assert config.api_keys() == ["rmserve-demo-key"]


def test_service_links_are_off(deployed):
    """With service links on, the kubelet injects RMSERVE_PORT=tcp://10.x.y.z:8000 for the Service named
    rmserve: the variable of rmserve's `port` setting (env wins over the settings file)."""
    name, objects, pod, config, settings = deployed
    injected = service_link_env(by_kind(objects, "Service"))
    collisions = {k for k in injected if k.removeprefix("RMSERVE_").lower() in {f.name for f in config_fields()}}
    assert "RMSERVE_PORT" in collisions  # today's Service names; any collision is reason enough
    assert pod.spec.get("enableServiceLinks") is False, f"service links would set {sorted(collisions)}"


def _container_port(container: dict, ref) -> int:
    if isinstance(ref, int):
        assert ref in {p["containerPort"] for p in container["ports"]}, ref
        return ref
    return next(p["containerPort"] for p in container["ports"] if p["name"] == ref)


def test_ports_match_settings_and_services(deployed):
    name, objects, pod, config, settings = deployed
    container = pod.container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.port, "grpc": config.grpc_port}
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    services = by_kind(objects, "Service")
    assert {s["metadata"]["name"] for s in services} == {"rmserve", "rmserve-headless"}
    for service in services:
        assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items()), "Service selects the pods"
        for port in service["spec"]["ports"]:
            assert _container_port(container, port["targetPort"]) == ports[port["name"]]
    main = one(objects, "Service", "rmserve")
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == ports
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == config.port and annotations["prometheus.io/scrape"] == "true"


@functools.cache
def get_routes() -> frozenset[str]:
    """The app's GET routes (its OpenAPI document: the route table, whatever FastAPI nests it in)."""
    paths = create_app(ServerConfig()).openapi()["paths"]
    return frozenset(path for path, operations in paths.items() if "get" in operations)


def test_probes_hit_real_routes(deployed):
    name, objects, pod, config, settings = deployed
    get_routes_ = get_routes()
    container = pod.container
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        path = probe["httpGet"]["path"]
        assert path in get_routes_, f"{kind} {path} is not a GET route of the app"
        assert _container_port(container, probe["httpGet"]["port"]) == config.port
    # startup covers model load (/readyz is 503 until warm); liveness must not restart a loading or
    # draining pod, so it is /healthz; readiness takes a draining pod out of the Service.
    assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "too little time to load a model"
    metrics_path = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    assert metrics_path in get_routes_


async def test_probe_and_metrics_routes_answer_without_the_api_key():
    """What the kubelet and Prometheus call, on a ready app that requires a key: 200, not 401/404."""
    paths = set()
    for name in OVERLAYS:
        container = server_container(rendered(name))
        paths |= {container[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        annotations = one(rendered(name), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        paths.add(annotations["prometheus.io/path"])
    assert paths == {"/healthz", "/readyz", "/metrics"}
    async with asgi_client(make_app(FakeRewardModel(), api_key="secret-key")) as client:
        for path in sorted(paths):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/no-such-route")).status_code in (401, 404)


def test_termination_grace_covers_prestop_and_drain(deployed):
    name, objects, pod, config, settings = deployed
    command = pod.container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop = float(command[1])
    budget = pre_stop + getattr(config, "shutdown_delay_s", 0.0) + config.drain_timeout_s
    grace = pod.spec["terminationGracePeriodSeconds"]
    assert grace >= budget + 5, f"{name}: grace {grace} s < preStop {pre_stop} + shutdown delay + drain + 5 s"


def _metric_names(text: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


async def test_hpa_scales_the_deployment_on_an_exported_gauge():
    async with asgi_client(make_app(FakeRewardModel())) as client:
        exported = (await client.get("/metrics")).text
    gauges = set(re.findall(r"^# TYPE (\S+) gauge$", exported, flags=re.M))
    with open(os.path.join(K8S, "prometheus-adapter-rules.yaml")) as f:
        adapter = yaml.safe_load(f)
    adapted = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    for name in OVERLAYS:
        objects = rendered(name)
        hpas = by_kind(objects, "HorizontalPodAutoscaler")
        deployment = one(objects, "Deployment")
        if name.endswith("cpu-demo"):
            assert not hpas and deployment["spec"]["replicas"] == 1
            continue
        (hpa,) = hpas
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment",
                                                                           deployment["metadata"]["name"])
        assert "replicas" not in deployment["spec"], "the HPA owns replicas; apply must not reset them"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "Pods"
            metric_name = metric["pods"]["metric"]["name"]
            assert metric_name in gauges and metric_name in _metric_names(exported), metric_name
            assert metric_name in adapted, f"{metric_name}: no prometheus-adapter rule"


def test_pdb_and_spread_select_the_pods(deployed):
    name, objects, pod, config, settings = deployed
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert matches(one(objects, "Deployment")["spec"]["selector"], labels)
    pdb = one(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"], labels)
    assert pdb["spec"].get("maxUnavailable", 0) >= 1, "a PDB must still allow node drains"
    for constraint in pod.spec.get("topologySpreadConstraints", []):
        assert matches(constraint["labelSelector"], labels)


def test_pod_security(deployed):
    name, objects, pod, config, settings = deployed
    security = pod.spec["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert pod.spec["automountServiceAccountToken"] is False
    container = pod.container["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    env = pod.env()
    writable = [env[k] for k in ("RMSERVE_CACHE", "HOME", "HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR")]
    for path in [*writable, "/tmp"]:
        mount = pod.mount_of(path)
        assert mount and "emptyDir" in pod.volumes[pod.mounts[mount]["name"]], f"{path} is not writable"


def test_gpu_resources(deployed):
    name, objects, pod, config, settings = deployed
    resources = pod.container["resources"]
    selector = pod.spec.get("nodeSelector", {})
    if name.endswith("cpu-demo"):
        assert "nvidia.com/gpu" not in {**resources["limits"], **resources["requests"]}
        assert "nvidia.com/gpu.present" not in selector
        return
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert selector["nvidia.com/gpu.present"] == "true"
    assert {"cpu", "memory"} <= set(resources["limits"]) and {"cpu", "memory"} <= set(resources["requests"])
    if name.startswith("overlays/gpu"):  # gpu and the overlays built on it
        assert any(t["key"] == "nvidia.com/gpu" for t in pod.spec["tolerations"])
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod.volumes.values() if "persistentVolumeClaim" in v}
        assert claims and claims <= {p["metadata"]["name"] for p in by_kind(objects, "PersistentVolumeClaim")}


def test_images_are_this_version(deployed):
    name, objects, pod, config, settings = deployed
    image = pod.container["image"]
    assert image.split(":")[-1].startswith(rmserve.__version__), image
    if name.startswith("overlays/gpu"):  # gpu and the overlays built on it
        assert image.endswith("-cuda")
