"""The layering the architecture relies on (docs/architecture.md): a torch-free contract, kept by every model.

The import-layer contracts themselves (server -> api -> engine -> models) are checked by import-linter
in `make lint` (.importlinter).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rmserve.models.types import ScoringModel, ServedModel
from tests.fakes import FakeRewardModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers")


def _protocol_members(protocol: type) -> set[str]:
    members = set()
    for klass in protocol.__mro__:
        if klass is object or klass.__name__ in ("Protocol", "Generic"):
            continue
        members |= {n for n in vars(klass) if not n.startswith("_")}
        members |= set(getattr(klass, "__annotations__", {}))
    return members


@pytest.mark.parametrize("module", ["rmserve.engine", "rmserve.models.types", "rmserve.models", "tests.fakes"])
def test_the_contract_and_the_engine_import_without_torch(module):
    code = (
        f"import sys, {module}; "
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{module} imported {done.stdout.strip()} {done.stderr[-2000:]}"


def test_the_engine_contract_is_part_of_the_serving_contract():
    assert _protocol_members(ScoringModel) == {"info", "encode", "score_batch", "warmup"}
    assert _protocol_members(ScoringModel) < _protocol_members(ServedModel)


@pytest.mark.parametrize("kind", ["fake", "reward_model", "vllm"])
def test_every_model_implements_the_whole_serving_contract(kind):
    if kind == "fake":
        have = set(dir(FakeRewardModel())) | set(vars(FakeRewardModel()))
    elif kind == "reward_model":
        from rmserve.models.tiny import build_tiny_reward_model

        model = build_tiny_reward_model("qwen2_vl", seed=0)
        have = set(dir(model))
    else:
        from rmserve.models.vllm_backend import VllmRewardModel

        # Its instance attributes (max_length, extra_config, tokenizer, name) are properties on the class.
        have = set(dir(VllmRewardModel))
    missing = _protocol_members(ServedModel) - have
    assert not missing, f"{kind} lacks {sorted(missing)} of ServedModel"
