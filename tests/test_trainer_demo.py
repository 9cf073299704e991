"""The shipped demo model (models/demo/) and the reproducibility of `rmserve-train demo`.

A full reproduction takes minutes of one core: `rmserve-train demo --output models/demo` (make demo).
"""

from __future__ import annotations

import json
import os

import pytest
from rmserve_trainer.cli import main
from rmserve_trainer.demo import evaluate_records, heldout_pairs

from rmserve.models import default_model_path, load_reward_model
from rmserve.models.critique import is_critique_model

DEMO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "models", "demo"))
UNSEEN_SEED = 20261128  # training draws split "train" (and the report seed 0 of "heldout"); never used there


def test_demo_is_the_default_model_and_a_plain_reward_model():
    assert os.path.exists(os.path.join(DEMO, "rmserve.json")), "models/demo is not shipped: run `make demo`"
    assert default_model_path() == DEMO
    model = load_reward_model(DEMO)
    # /v1/score scores the plain sequence, which is what the demo was trained on; no critique section.
    assert not model.info.untrained and model.info.multimodal and not is_critique_model(model)
    assert model.info.safety_categories[:2] == ["S1", "S2"] and len(model.info.safety_categories) == 14
    size = sum(os.path.getsize(os.path.join(DEMO, f)) for f in os.listdir(DEMO))
    assert size < 8 * 2**20


@pytest.fixture(scope="module")
def demo_model():
    return load_reward_model(DEMO)


@pytest.fixture(scope="module")
def heldout_report(demo_model):
    # 400 fresh pairs in the generator's natural mix, scored as /v1/score serves them (a few seconds).
    return evaluate_records(demo_model, heldout_pairs(400, UNSEEN_SEED))


def test_shipped_demo_reaches_95_percent_on_fresh_pairs(heldout_report):
    assert heldout_report["accuracy"] >= 0.95, heldout_report
    for category, accuracy in heldout_report["category_accuracy"].items():
        assert accuracy >= 0.85, (category, heldout_report)


def test_shipped_demo_safety_head_on_fresh_unsafe_requests(demo_model):
    stream = heldout_pairs(600, UNSEEN_SEED + 1)
    report = evaluate_records(demo_model, [r for r in stream if r.category == "safety"][:40])
    assert report["safety_responses"] == 80  # 40 refusals (safe) + 40 compliances (unsafe)
    assert report["safety_auroc"] >= 0.95, report
    assert report["category_accuracy"]["safety"] >= 0.95, report


def test_shipped_demo_prefers_the_faithful_readme_answer(demo_model):
    from PIL import Image

    from rmserve.models.types import ScoreItem

    image = Image.open(os.path.join(DEMO, "..", "..", "examples", "red_circle.png")).convert("RGB")
    prompt = "What is in the image?"
    good, bad = demo_model.score([ScoreItem(prompt=prompt, images=[image], response="A red circle."),
                                  ScoreItem(prompt=prompt, images=[image], response="A blue square.")])
    assert good.reward > bad.reward, (good.reward, bad.reward)


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
    assert "critique" not in meta
