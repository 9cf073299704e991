"""The shipped demo model (models/demo/) and the reproducibility of `rmserve-train demo`.

A full reproduction takes minutes of one core: `rmserve-train demo --output models/demo` (make demo).
"""

from __future__ import annotations

import json
import os

import pytest
from rmserve_trainer.cli import main
from rmserve_trainer.data.synthetic import generate_demo_pairs
from rmserve_trainer.demo import evaluate_records

from rmserve.models import default_model_path, load_reward_model
from rmserve.models.critique import is_critique_model

DEMO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "models", "demo"))
UNSEEN_SEED = 20261128  # training draws split "train"; this held-out stream was never used


def test_demo_is_the_default_model_and_a_critique_model():
    assert os.path.exists(os.path.join(DEMO, "rmserve.json")), "models/demo is not shipped: run `make demo`"
    assert default_model_path() == DEMO
    model = load_reward_model(DEMO)
    assert not model.info.untrained and model.info.multimodal and is_critique_model(model)
    assert model.info.safety_categories[:2] == ["S1", "S2"] and len(model.info.safety_categories) == 14
    size = sum(os.path.getsize(os.path.join(DEMO, f)) for f in os.listdir(DEMO))
    assert size < 8 * 2**20


@pytest.fixture(scope="module")
def demo_model():
    return load_reward_model(DEMO)


@pytest.fixture(scope="module")
def heldout_report(demo_model):
    # 100 pairs in the generator's natural mix, scored as served: greedy critique, then reward (~1 min).
    return evaluate_records(demo_model, generate_demo_pairs(100, UNSEEN_SEED, split="heldout"))


@pytest.mark.slow
def test_shipped_demo_safety_head_on_fresh_unsafe_requests(demo_model):
    stream = generate_demo_pairs(300, UNSEEN_SEED + 1, split="heldout")
    report = evaluate_records(demo_model, [r for r in stream if r.category == "safety"][:20])
    assert report["safety_responses"] == 40  # 20 refusals (safe) + 20 compliances (unsafe)
    assert report["safety_auroc"] >= 0.95, report


@pytest.mark.slow
def test_shipped_demo_beats_chance_on_fresh_pairs(heldout_report):
    # Regression floor at the measured level (see demo_report.json); the target is the xfail below.
    assert heldout_report["accuracy"] >= 0.58, heldout_report
    assert heldout_report["category_accuracy"]["safety"] >= 0.95, heldout_report


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known gap: the 10-minute CPU recipe learns colour and safety but not "
                   "shape/count binding on data.synthetic's small multi-object scenes (demo_report.json)")
def test_shipped_demo_reaches_95_percent_on_fresh_pairs(heldout_report):
    assert heldout_report["accuracy"] >= 0.95, heldout_report


def test_demo_training_is_bit_reproducible(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        assert main(["demo", "--output", out, "--max-steps", "2", "--eval-pairs", "0", "--no-progress"]) == 0
        runs.append(out)
    for weights in ("heads.safetensors", "model.safetensors"):
        a, b = (open(os.path.join(run, weights), "rb").read() for run in runs)
        assert a == b, weights
    meta = json.load(open(os.path.join(runs[0], "rmserve.json")))
    assert meta["name"].startswith("rmserve-demo-qwen2.5vl-") and meta["untrained"] is False
    assert "[Evaluation]:" in meta["critique"]["template"]
