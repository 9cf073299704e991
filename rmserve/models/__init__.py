"""The reward-model library: backbones + heads + last-token pooling, checkpoints, tiny models.

Importing the package (or ``rmserve.models.types``, the contract) does not import torch: the names that
need it (``RewardModel``, ``HeadSpec``, ``load_reward_model``, ``save_reward_model``) load on first use,
so the engine, the API layer's types and test fakes stay torch-free.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from .types import EncodedItem, ModelInfo, ScoreItem, ScoreOutput, ServedModel, ServingOptions

if TYPE_CHECKING:
    from .checkpoint import load_reward_model, save_reward_model
    from .heads import HeadSpec
    from .reward_model import RewardModel

_LAZY = {
    "RewardModel": ".reward_model",
    "HeadSpec": ".heads",
    "load_reward_model": ".checkpoint",
    "save_reward_model": ".checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Where `rmserve serve` with no --model looks first: a trained demo checkpoint shipped in the repo.
BUNDLED_DEMO_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "models", "demo")


def _cache_dir() -> str:
    base = os.environ.get("RMSERVE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rmserve")
    return os.path.join(base, "default-untrained-v1")


def default_model_path(*, bundled: bool = True) -> str:
    """Directory of the default model: the shipped demo model if present, else a tiny untrained one.

    The untrained fallback is built deterministically (fixed seeds) on first use and cached, so
    every start serves the same weights; its ``rmserve.json`` says ``"untrained": true``.
    ``bundled=False`` skips the shipped demo (tests of the fallback itself).
    """
    demo = os.path.normpath(BUNDLED_DEMO_DIR)
    if bundled and os.path.exists(os.path.join(demo, "rmserve.json")):
        return demo
    path = _cache_dir()
    if not os.path.exists(os.path.join(path, "rmserve.json")):
        from .checkpoint import save_reward_model
        from .tiny import build_tiny_reward_model

        model = build_tiny_reward_model("qwen2_5_vl", seed=0)
        model.name = "rmserve-default-untrained"
        model.untrained = True
        tmp = f"{path}.tmp{os.getpid()}"
        save_reward_model(model, tmp)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.replace(tmp, path)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path


__all__ = [
    "EncodedItem", "HeadSpec", "ModelInfo", "RewardModel", "ScoreItem", "ScoreOutput", "ServedModel",
    "ServingOptions", "default_model_path", "load_reward_model", "save_reward_model",
]
