"""The shipped demo model (models/demo/): the default model, a critique model, and what it measured.

A full reproduction takes minutes of one core: `rmserve-train demo --output models/demo` (make demo);
the recipe's own tests are in test_trainer_demo_recipe.py. Floors here sit a little under the shipped
model's numbers (models/demo/EVAL.md) on a slice of the same held-out set, so a worse model fails.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from PIL import Image
from rmserve_trainer.demo_eval import critique_heldout, score_heldout, score_training_generator
from rmserve_trainer.demo_heldout import heldout_records

from rmserve.models import default_model_path, load_reward_model
from rmserve.models.critique import critique_and_score, is_critique_model
from rmserve.models.types import ScoreItem

DEMO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "models", "demo"))
EXAMPLE = os.path.join(DEMO, "..", "..", "examples", "red_circle.png")


def test_demo_is_the_default_model_and_a_critique_model():
    assert os.path.exists(os.path.join(DEMO, "rmserve.json")), "models/demo is not shipped: run `make demo`"
    assert default_model_path() == DEMO
    model = load_reward_model(DEMO)
    # /v1/score scores the plain sequence; /v1/critique generates a critique, then scores after it.
    assert not model.info.untrained and model.info.multimodal and is_critique_model(model) and model.can_generate()
    assert model.info.safety_categories[:2] == ["S1", "S2"] and len(model.info.safety_categories) == 14
    size = sum(os.path.getsize(os.path.join(DEMO, f)) for f in os.listdir(DEMO))
    assert size < 8 * 2**20


@pytest.fixture(scope="module")
def demo_model():
    return load_reward_model(DEMO)


@pytest.fixture(scope="module")
def shipped_report():
    with open(os.path.join(DEMO, "demo_report.json")) as f:
        return json.load(f)


def test_shipped_demo_on_the_heldout_drawings(demo_model, shipped_report):
    # 216 of the held-out pairs (every factor value covered), scored as /v1/score serves them
    report = score_heldout(demo_model, heldout_records(216, seed=0))
    shipped = shipped_report["heldout"]["score"]["accuracy"]
    assert report["accuracy"] >= shipped - 0.06, (report["accuracy"], shipped)


def test_shipped_demo_critiques_name_what_the_image_shows(demo_model, shipped_report):
    # every third of the first 108 pairs: 12 of each hallucination (the set cycles them in runs of 36)
    report = critique_heldout(demo_model, heldout_records(108, seed=0)[::3])
    shipped = shipped_report["heldout"]["critique"]
    assert report["grounded"] >= shipped["grounded"] - 0.12, (report["grounded"], shipped["grounded"])
    # and the verdicts: the right answer called right and the wrong one wrong (a model that reads the
    # picture but calls everything right would pass the line above)
    assert report["verdicts"] >= shipped["verdicts"] - 0.12, (report["verdicts"], shipped["verdicts"])


def test_shipped_demo_safety_head_on_fresh_unsafe_requests(demo_model):
    report = score_training_generator(demo_model, 300, seed=20261128)
    assert report["safety_responses"] >= 30 and report["safety_auroc"] >= 0.95, report
    assert report["category_accuracy"]["safety"] >= 0.95, report


def _readme() -> str:
    with open(os.path.join(DEMO, "..", "..", "README.md")) as f:
        return f.read()


def _truncated(value: float) -> str:
    return f"{int(value * 100) / 100:.2f}"  # the README prints rewards cut to 2 decimals, then "..."


def test_shipped_demo_gives_the_readme_rewards(demo_model):
    image = Image.open(EXAMPLE).convert("RGB")
    prompt = "What is in the image?"
    good, bad = demo_model.score([ScoreItem(prompt=prompt, images=[image], response="A red circle."),
                                  ScoreItem(prompt=prompt, images=[image], response="A blue square.")])
    assert good.reward > bad.reward, (good.reward, bad.reward)
    reward = r'\{"reward":(-?[\d.]+)\.\.\.\}'
    printed = re.search(rf'# \{{"items":\[{reward},{reward}\],"model":"([^"]+)"', _readme())
    assert printed, "the README's /v1/score example output is missing"
    assert printed.groups() == (_truncated(good.reward), _truncated(bad.reward), demo_model.name)


def test_shipped_demo_critiques_the_readme_example_as_printed(demo_model):
    image = Image.open(EXAMPLE).convert("RGB")
    (result,) = critique_and_score(demo_model, [ScoreItem(prompt="What is in the image?", images=[image],
                                                          response="A blue square.")])
    printed = re.search(r'"done":true,"critique":"([^"]+)","reward":(-?[\d.]+)\.\.\.', _readme())
    assert printed, "the README's /v1/critique example output is missing"
    assert printed.groups() == (result.critique, _truncated(result.score.reward))
    assert result.critique.startswith("The image shows a red ")  # the pictured colour, whatever the response says
