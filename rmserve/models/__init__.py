"""The reward-model library: backbones + heads + last-token pooling, checkpoints, tiny models."""

from __future__ import annotations

import os

from .checkpoint import load_reward_model, save_reward_model
from .heads import HeadSpec
from .reward_model import RewardModel
from .types import EncodedItem, ModelInfo, ScoreItem, ScoreOutput

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
    "EncodedItem", "HeadSpec", "ModelInfo", "RewardModel", "ScoreItem", "ScoreOutput",
    "default_model_path", "load_reward_model", "save_reward_model",
]
