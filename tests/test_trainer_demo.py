"""The shipped demo model (models/demo/) and the reproducibility of `rmserve-train demo`.

The accuracy and grounding checks run the shipped weights on a fresh sample of the held-out set
(``rmserve_trainer.demo_heldout``: PIL named colours and primitives, a drawing code path the
training generator does not share), drawn from a seed the report does not use. A shape-blind
model (the previous demo) fails them: it preferred "A red square." on a plain red circle.
A full reproduction takes minutes of one core: `rmserve-train demo --output models/demo` (make demo).
"""

from __future__ import annotations

import ast
import json
import os

import pytest
from PIL import Image
from rmserve_trainer import demo_heldout
from rmserve_trainer.cli import main
from rmserve_trainer.demo_eval import critique_heldout, grounded, score_heldout, score_training_generator
from rmserve_trainer.demo_heldout import HeldoutCase, draw_case, heldout_records

from rmserve.config import ServerConfig
from rmserve.models import default_model_path, load_reward_model
from rmserve.models.critique import is_critique_model
from rmserve.models.types import ScoreItem
from rmserve.server import create_app
from tests.serving import asgi_client

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DEMO = os.path.join(ROOT, "models", "demo")
UNSEEN_SEED = 20261204  # the report uses seed 0 of the held-out set; training never draws it


def test_demo_is_the_default_model_and_a_critique_model():
    assert os.path.exists(os.path.join(DEMO, "rmserve.json")), "models/demo is not shipped: run `make demo`"
    assert default_model_path() == DEMO
    model = load_reward_model(DEMO)
    assert not model.info.untrained and model.info.multimodal and is_critique_model(model)
    assert model.info.safety_categories[:2] == ["S1", "S2"] and len(model.info.safety_categories) == 14
    size = sum(os.path.getsize(os.path.join(DEMO, f)) for f in os.listdir(DEMO))
    assert size < 8 * 2**20


def test_heldout_set_is_drawn_by_another_code_path():
    tree = ast.parse(open(demo_heldout.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("demo_shapes" in (m or "") or "synthetic" in (m or "") for m in imported), imported


@pytest.fixture(scope="module")
def demo_model():
    return load_reward_model(DEMO)


@pytest.fixture(scope="module")
def heldout():
    return heldout_records(216, UNSEEN_SEED)  # every factor value appears 24-108 times


def test_faithful_beats_hallucinated_on_the_heldout_drawings(demo_model, heldout):
    report = score_heldout(demo_model, heldout)
    assert report["accuracy"] >= 0.93, report
    for factor, values in report["by_factor"].items():
        for value, accuracy in values.items():
            assert accuracy >= 0.8, (factor, value, report)


def test_critiques_name_what_the_image_shows(demo_model, heldout):
    sample = heldout[:48]
    report = critique_heldout(demo_model, sample)
    assert report["grounded"] >= 0.85, report  # the wrong answer's critique names the true colour AND shape
    assert report["accuracy"] >= 0.85, report  # reward after the critique: faithful > hallucinated


def test_grounding_check_is_strict():
    assert grounded("The image shows a red circle, but the response says a red square. Score: low.", "red", "circle")
    assert grounded("The image shows an orange triangle; the response is right.", "orange", "triangle")
    assert not grounded("The image shows a red square, but the response says a red square.", "red", "circle")
    assert not grounded("The response says a red circle.", "red", "circle")


def test_safety_and_categories_on_the_training_generators_heldout_split(demo_model):
    report = score_training_generator(demo_model, 200, UNSEEN_SEED)
    assert report["accuracy"] >= 0.9 and report["safety_auroc"] >= 0.95, report


def test_readme_example_is_not_shape_blind(demo_model):
    image = Image.open(os.path.join(ROOT, "examples", "red_circle.png")).convert("RGB")
    prompt = "What is in the image?"
    good, square, blue = demo_model.score([ScoreItem(prompt=prompt, images=[image], response=r)
                                           for r in ("A red circle.", "A red square.", "A blue square.")])
    assert good.reward > square.reward and good.reward > blue.reward, (good, square, blue)


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_one_shape_at_every_size_and_background(demo_model, shape):
    """The issue's counter-example, for each shape: one red shape, plain PIL, four sizes, two backgrounds."""
    import random

    items = []
    for size in ("small", "medium", "large", "full"):
        for background in ("white", "black"):
            case = HeldoutCase("red", shape, background, "112x112", size, "aliased", "shape")
            image = draw_case(case, random.Random(f"{shape}{size}{background}"))
            items += [ScoreItem(prompt="What is in the image?", images=[image], response=f"A red {s}.")
                      for s in ("circle", "square", "triangle")]
    scores = demo_model.score(items)
    for k in range(0, len(items), 3):
        rewards = dict(zip(("circle", "square", "triangle"), (s.reward for s in scores[k:k + 3]), strict=True))
        assert max(rewards, key=rewards.get) == shape, (items[k].response, rewards)


async def test_streamed_critique_of_the_readme_image_names_the_red_circle(demo_model):
    import base64

    with open(os.path.join(ROOT, "examples", "red_circle.png"), "rb") as f:
        data_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    request = {"prompt": "What is in the image?", "images": [data_url], "response": "A red square.", "stream": True}
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=demo_model)) as client:
        streamed = await client.post("/v1/critique", json=request)
        right = (await client.post("/v1/critique", json={**request, "response": "A red circle.", "stream": False}))
    assert streamed.status_code == 200 and right.status_code == 200, (streamed.text, right.text)
    events = [json.loads(line.removeprefix("data: ")) for line in streamed.text.splitlines()
              if line.startswith("data: ")]
    *deltas, final = events
    assert len(deltas) >= 2 and final["done"] is True
    assert "".join(e["delta"] for e in deltas).strip() == final["critique"]
    assert grounded(final["critique"], "red", "circle") and "square" in final["critique"], final
    assert right.json()["reward"] > final["reward"], (right.json(), final)


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
    assert "{question}" in meta["critique"]["template"]
