"""The demo's held-out drawings (another code path), the evaluator, and the experimental critique recipe."""

from __future__ import annotations

import ast
import json
import os

from rmserve_trainer import demo_heldout
from rmserve_trainer.cli import main
from rmserve_trainer.data.demo_shapes import COLOURS, SHAPES, generate_shape_pairs
from rmserve_trainer.demo_critique import DemoRecipe, DemoTrainer, build_demo_model, demo_critique_config
from rmserve_trainer.demo_eval import grounded
from rmserve_trainer.demo_heldout import heldout_records
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


def test_demo_critique_training_is_bit_reproducible_and_saves_the_template(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        assert main(["demo-critique", "--output", out, "--max-steps", "2", "--eval-pairs", "0", "--no-progress"]) == 0
        runs.append(out)
    for weights in ("heads.safetensors", "model.safetensors"):
        a, b = (open(os.path.join(run, weights), "rb").read() for run in runs)
        assert a == b, weights
    meta = json.load(open(os.path.join(runs[0], "rmserve.json")))
    assert CritiqueConfig.from_dict(meta["critique"]).template == demo_critique_config(DemoRecipe()).template
