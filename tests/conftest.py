"""Shared fixtures. Tiny real-architecture models are built once per session (milliseconds each)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


def random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def tiny_models():
    """family -> RewardModel, built lazily and cached for the session."""
    from rmserve.models.tiny import build_tiny_reward_model

    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny_reward_model(family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory):
    """The server's default model, built into a per-session cache dir."""
    os.environ["RMSERVE_CACHE"] = str(tmp_path_factory.mktemp("rmserve-cache"))
    from rmserve.models import default_model_path

    return default_model_path()
