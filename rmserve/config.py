"""Server settings: one dataclass, filled from defaults < YAML file < RMSERVE_* env vars < CLI flags.

Every field can be set each way: ``max_batch_size`` is ``--max-batch-size`` on the command line,
``RMSERVE_MAX_BATCH_SIZE`` in the environment and ``max_batch_size:`` in the YAML file (given by
``--config`` or ``RMSERVE_CONFIG``). Invalid values fail at startup with a message saying how to
fix them, never at the first request.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV_PREFIX = "RMSERVE_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _opt(default: Any, help: str, **kw) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ServerConfig:
    # Loopback by default so a laptop run is not exposed; containers pass --host 0.0.0.0.
    host: str = _opt("127.0.0.1", "interface to bind")
    port: int = _opt(8000, "TCP port")
    model: str | None = _opt(
        None, "model directory; default: the bundled demo model (or a tiny untrained one)"
    )
    device: str = _opt("cpu", "torch device: cpu, cuda, cuda:1, ...")
    dtype: str = _opt("float32", "weights dtype: float32, bfloat16, float16")
    max_batch_size: int = _opt(32, "most items in one forward pass")
    # Padded token slots (longest item x batch size) per forward; must cover the model's max_length.
    max_batch_tokens: int = _opt(16384, "padded-token budget of one forward pass")
    # A few ms gathers concurrent single-item requests from RL trainers into one batch.
    max_wait_ms: float = _opt(5.0, "how long a batch's first item may wait for company (idle worker)")
    # Items admitted and unfinished; beyond it requests get 429 + Retry-After instead of waiting.
    max_queue_items: int = _opt(1024, "admission limit in items; full -> 429")
    max_items_per_request: int = _opt(256, "most items in one request")
    max_images_per_item: int = _opt(8, "most images in one item")
    # 4096x4096: far above what VLM processors keep (they resize), far below a decompression bomb.
    max_image_pixels: int = _opt(16_777_216, "largest image (width x height) accepted, checked before decode")
    max_image_bytes: int = _opt(20 * 1024 * 1024, "largest encoded image file accepted")
    # Room for max_items_per_request items with a large base64 image each would be GBs; 64 MiB
    # covers realistic GRPO groups (e.g. 16 x 3 MB images) and bounds memory per request.
    max_body_bytes: int = _opt(64 * 1024 * 1024, "largest request body; larger -> 413")
    # Image decode + tokenization threads. Both release the GIL for most of their work.
    preprocess_workers: int = _opt(min(4, os.cpu_count() or 1), "threads for image decoding and tokenization")
    # Decoded RGB bytes kept for re-sent / referenced images (GRPO groups repeat one image G times).
    image_cache_mb: int = _opt(256, "decoded-image cache size in MiB (0 disables it)")
    # Applied when the client sends no x-request-timeout-ms header; 0 means no deadline.
    request_timeout_s: float = _opt(60.0, "default per-request deadline in seconds (0 = none)")
    drain_timeout_s: float = _opt(30.0, "on shutdown, how long to finish admitted work")
    warmup: bool = _opt(True, "run a warm-up forward before reporting ready")
    log_level: str = _opt("info", "logging level: " + ", ".join(LOG_LEVELS))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = [
            "port",
            "max_batch_size",
            "max_batch_tokens",
            "max_queue_items",
            "max_items_per_request",
            "max_images_per_item",
            "max_image_pixels",
            "max_image_bytes",
            "max_body_bytes",
            "preprocess_workers",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)}); set --{_flag(name)}")
        for name in ("max_wait_ms", "image_cache_mb", "request_timeout_s", "drain_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)}); set --{_flag(name)}")
        if self.max_items_per_request > self.max_queue_items:
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) > max_queue_items "
                f"({self.max_queue_items}): such a request could never be admitted; lower the first "
                "or raise the second"
            )
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)} (got {self.log_level!r})")
        self.log_level = self.log_level.lower()

    def engine_config(self):
        from rmserve.engine import EngineConfig

        return EngineConfig(
            max_batch_size=self.max_batch_size,
            max_batch_tokens=self.max_batch_tokens,
            max_wait_ms=self.max_wait_ms,
            max_queue_items=self.max_queue_items,
            preprocess_workers=self.preprocess_workers,
            drain_timeout_s=self.drain_timeout_s,
        )


def _flag(name: str) -> str:
    return name.replace("_", "-")


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(ServerConfig))


def field_type(f: dataclasses.Field) -> type:
    """The scalar type of a field, unwrapping ``X | None``."""
    hint = typing.get_type_hints(ServerConfig)[f.name]
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
