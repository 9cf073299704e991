"""Shared fixtures and helpers (lead + engine tests share this file: edit, don't replace).

Tiny real-architecture models are built once per session (milliseconds each); engine and
server tests use the fake model from tests/fakes.py.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from rmserve.engine import Engine, EngineConfig  # noqa: E402
from rmserve.models.types import ScoreItem  # noqa: E402
from tests import skips  # noqa: E402
from tests.fakes import FakeRewardModel  # noqa: E402

hf_logging.disable_progress_bar()
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


def random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


# Marked suites that plain pytest skips: marker -> the make target that runs it (pytest --MARKER -m MARKER).
OPT_IN = {
    "ops": "make test-ops",  # overload 60 s, 1000 schemathesis cases, gRPC fuzz
    "replicas": "make test-replicas",  # replicas behind nginx / HAProxy: affinity, failover (needs both installed)
    "long": "make test-long",  # >= 20,000 requests of steady GRPO image load, zero transport errors
    "integrations": "make test-integrations",  # RL-framework training runs
}


def pytest_addoption(parser):
    for marker, target in OPT_IN.items():
        parser.addoption(f"--{marker}", action="store_true", help=f"run the tests marked `{marker}` ({target})")
    skips.pytest_addoption(parser)  # --require, --fail-all-skipped (tests/skips.py)


def pytest_configure(config):
    skips.pytest_configure(config)


pytest_sessionfinish = skips.pytest_sessionfinish


def pytest_collection_modifyitems(config, items):
    for marker, target in OPT_IN.items():
        if config.getoption(f"--{marker}"):
            continue
        skip = pytest.mark.skip(reason=f"opt-in run: `{target}` (pytest --{marker} -m {marker})")
        for test in items:
            if test.get_closest_marker(marker) is not None:
                test.add_marker(skip)


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

    return default_model_path(bundled=False)  # the untrained fallback, whether or not models/demo is shipped


@contextmanager
def running_engine(model: FakeRewardModel, **config) -> Iterator[Engine]:
    engine = Engine(model, EngineConfig(**config))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop(drain=False, timeout=5)


def png_bytes(
    size: tuple[int, int] = (8, 8), color: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def item(response: str, prompt: str = "What is shown?", images: list[Image.Image] | None = None) -> ScoreItem:
    return ScoreItem(response=response, prompt=prompt, images=images or [])


@pytest.fixture
def fake_model() -> FakeRewardModel:
    return FakeRewardModel()

