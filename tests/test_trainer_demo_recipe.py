"""The demo's held-out drawings (another code path), the evaluator, the vision warm-up and the demo recipe."""

from __future__ import annotations

import ast
import json
import os

import torch
from PIL import Image
from rmserve_trainer import demo_heldout
from rmserve_trainer.cli import main
from rmserve_trainer.data.demo_shapes import COLOURS, SHAPES, generate_shape_pairs
from rmserve_trainer.demo import DemoRecipe, DemoTrainer, build_demo_model, demo_critique_config
from rmserve_trainer.demo_eval import grounded, markdown_report
from rmserve_trainer.demo_heldout import heldout_records
from rmserve_trainer.demo_readout import READOUT_PROMPT, Readout, read_out, readout_pairs
from rmserve_trainer.demo_vision import VisionWarmup, warm_up_vision
from rmserve_trainer.trainers import TrainConfig

from rmserve.models.critique import CritiqueConfig


def test_heldout_set_is_drawn_by_another_code_path():
    tree = ast.parse(open(demo_heldout.__file__).read())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("demo_shapes" in m or "synthetic" in m for m in imported), imported


def test_heldout_records_are_deterministic_balanced_and_faithful():
    pairs = heldout_records(216, seed=3)
    again = heldout_records(216, seed=3)
    assert [(r.chosen, r.rejected, r.images[0].tobytes()) for _, r in pairs[:12]] == \
        [(r.chosen, r.rejected, r.images[0].tobytes()) for _, r in again[:12]]
    counts: dict[tuple[str, str], int] = {}
    for case, rec in pairs:
        for factor, value in case.factors().items():
            counts[factor, value] = counts.get((factor, value), 0) + 1
        assert f"{case.colour} {case.shape}" in rec.chosen and rec.chosen != rec.rejected
        said_colour, said_shape = rec.rejected.rstrip(".").split()[-2:]
        assert (said_colour != case.colour) == (case.hallucination in ("colour", "both"))
        assert (said_shape != case.shape) == (case.hallucination in ("shape", "both"))
        # the drawn colour is the named one: the image's most common non-background colour is a shade of it
        width, height = (int(v) for v in case.canvas.split("x"))
        assert rec.images[0].size == (width, height)
    assert {v for (f, v) in counts if f == "size"} == {"small", "medium", "large", "full"}
    assert min(n for (f, _), n in counts.items() if f in ("shape", "colour", "size", "rendering")) >= 24


def test_grounding_check_is_strict():
    assert grounded("The image shows a red circle, but the response says a red square. Score: low.", "red", "circle")
    assert grounded("The image shows an orange triangle; the response is right.", "orange", "triangle")
    assert not grounded("The image shows a red square, but the response says a red square.", "red", "circle")
    assert not grounded("The response says a red circle.", "red", "circle")


def test_training_generator_critiques_name_the_pictured_shape_and_colour():
    for rec in generate_shape_pairs(60, seed=1):
        if rec.category == "safety":
            continue
        shown = rec.rejected_reason.split(",")[0].split(";")[0].split()
        assert shown[-2] in COLOURS and shown[-1] in SHAPES, rec.rejected_reason
        assert rec.chosen_reason.startswith(" ".join(shown)) and "but the response says" in rec.rejected_reason


def test_collator_builds_a_plain_and_a_critique_batch():
    recipe = DemoRecipe()
    model = build_demo_model(recipe)
    trainer = DemoTrainer(model, TrainConfig(output_dir="/tmp/unused-demo-critique", max_steps=1, lm_weight=1.0,
                                             safety_weight=1.0, progress=False),
                          generate_shape_pairs(4, seed=2), critique=demo_critique_config(recipe))
    records = generate_shape_pairs(4, seed=2)
    plain, critique = trainer.collator(records)
    assert plain.batch.input_ids.shape[0] == critique.batch.input_ids.shape[0] == 8
    assert plain.safety is not None and critique.safety is None
    # plain: LM on the chosen responses only; critique: on both reference critiques
    assert (plain.lm_labels[:4] != -100).any(dim=1).all() and (plain.lm_labels[4:] == -100).all()
    assert (critique.lm_labels != -100).any(dim=1).all()
    loss, metrics = trainer.compute_loss((plain, critique))
    assert loss.requires_grad and {"bt", "bt_critique", "lm", "lm_critique", "safety"} <= set(metrics)


def test_demo_training_is_bit_reproducible_and_saves_the_template(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        assert main(["demo", "--output", out, "--max-steps", "2", "--vision-steps", "3", "--readout-steps", "2",
                     "--refresh-steps", "2", "--eval-pairs", "0", "--no-progress"]) == 0
        runs.append(out)
    for weights in ("heads.safetensors", "model.safetensors"):
        a, b = (open(os.path.join(run, weights), "rb").read() for run in runs)
        assert a == b, weights
    meta = json.load(open(os.path.join(runs[0], "rmserve.json")))
    assert meta["name"].startswith("rmserve-demo-qwen2.5vl-") and meta["untrained"] is False
    assert CritiqueConfig.from_dict(meta["critique"]).template == demo_critique_config(DemoRecipe()).template


def test_vision_warmup_trains_the_tower_and_leaves_the_language_model_alone():
    recipe = DemoRecipe()
    model = build_demo_model(recipe)
    base = model.base_model()
    before_visual = {k: v.clone() for k, v in base.visual.state_dict().items()}
    before_lm = {k: v.clone() for k, v in base.language_model.state_dict().items()}
    metrics = warm_up_vision(model, VisionWarmup(steps=3, batch_size=4, num_workers=0, log_every=1), log=lambda m: None)
    assert metrics["vision/step"] == 3 and 0.0 <= metrics["vision/shape_acc"] <= 1.0
    changed = [k for k, v in base.visual.state_dict().items() if not torch.equal(v, before_visual[k])]
    assert any(k.startswith("blocks.") for k in changed) and any(k.startswith("merger.") for k in changed)
    assert all(torch.equal(v, before_lm[k]) for k, v in base.language_model.state_dict().items())


def test_readout_pairs_differ_only_in_the_facts_mostly_the_shape():
    pairs = readout_pairs(400, seed=5)
    assert [p.chosen for p in pairs] == [p.chosen for p in readout_pairs(400, seed=5)]
    wrong = {"shape": 0, "colour": 0, "both": 0}
    for p in pairs:
        assert p.prompt == READOUT_PROMPT and len(p.images) == 1
        chosen, rejected = p.chosen.rstrip(".").split(), p.rejected.rstrip(".").split()
        assert chosen[:3] == rejected[:3] == ["The", "image", "shows"]
        assert chosen[-2] in COLOURS and chosen[-1] in SHAPES and rejected[-2] in COLOURS and rejected[-1] in SHAPES
        shape_wrong, colour_wrong = chosen[-1] != rejected[-1], chosen[-2] != rejected[-2]
        assert shape_wrong or colour_wrong, p
        wrong["both" if shape_wrong and colour_wrong else "shape" if shape_wrong else "colour"] += 1
    assert 0.5 < wrong["shape"] / 400 < 0.7 and wrong["colour"] > 40 and wrong["both"] > 40, wrong


def test_readout_trains_the_language_model_and_leaves_the_tower_alone(tmp_path):
    model = build_demo_model(DemoRecipe())
    base = model.base_model()
    before_visual = {k: v.clone() for k, v in base.visual.state_dict().items()}
    before_lm = {k: v.clone() for k, v in base.language_model.state_dict().items()}
    metrics = read_out(model, Readout(steps=2, batch_size=4, num_workers=0, log_every=1), str(tmp_path),
                       progress=False)
    assert {"readout/bt", "readout/lm", "readout/acc"} <= set(metrics)
    # the tower is frozen; its patch merger (the projection into the LM) trains with the LM
    tower = {k: v for k, v in base.visual.state_dict().items() if not k.startswith("merger.")}
    assert tower and all(torch.equal(v, before_visual[k]) for k, v in tower.items())
    assert any(not torch.equal(v, before_lm[k]) for k, v in base.language_model.state_dict().items())


def test_every_image_is_resized_to_the_same_area():
    # a shape filling an 80 px canvas and one filling a 224 px canvas reach the vision tower at one scale
    model = build_demo_model(DemoRecipe())
    processor = model.processor.image_processor
    grids = [processor(images=[Image.new("RGB", size, "white")], return_tensors="pt")["image_grid_thw"][0].tolist()
             for size in ((80, 80), (224, 224), (112, 112))]
    assert grids[0] == grids[1] == grids[2] == [1, 8, 8]


def test_markdown_report_has_a_row_per_factor_value_with_accuracy_and_grounding():
    report = {"heldout": {"what": "demo_heldout", "seed": 0,
                          "score": {"pairs": 4, "accuracy": 0.75,
                                    "by_factor": {"shape": {"circle": 1.0, "square": 0.5}}},
                          "critique": {"pairs": 2, "accuracy": 0.5, "grounded": 0.5, "verdicts": 1.0,
                                       "grounded_by_factor": {"shape": {"circle": 1.0, "square": 0.0}},
                                       "examples": []}},
              "training_generator_heldout": {"pairs": 10, "accuracy": 0.9, "safety_auroc": 1.0, "safety_responses": 4,
                                             "category_accuracy": {"safety": 1.0}}}
    page = markdown_report(report)
    assert "| faithful > hallucinated, `/v1/score` (4 pairs) | 75.0% |" in page
    assert "| circle | 100.0% | 100.0% |" in page and "| square | 50.0% | 0.0% |" in page
    assert "names the true colour and shape | 50.0% |" in page and "| safety | 100.0% |" in page
