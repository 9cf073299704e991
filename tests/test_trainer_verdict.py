"""The critique's verdict token: found where a pair's two reference critiques part, and weighted in the LM loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from rmserve_trainer.data import PairCollator, critique_items
from rmserve_trainer.data.collate import IGNORE_INDEX
from rmserve_trainer.data.demo_shapes import generate_shape_pairs
from rmserve_trainer.demo import DemoRecipe, build_demo_model, demo_critique_config
from rmserve_trainer.losses import lm_cross_entropy
from rmserve_trainer.records import PairRecord


@pytest.fixture(scope="module")
def model():
    return build_demo_model(DemoRecipe())


def _collate(model, records, weight):
    return PairCollator(model, to_items=critique_items(demo_critique_config(DemoRecipe())), lm_targets="both",
                        verdict_weight=weight)(records)


def test_the_weighted_token_is_the_verdict_in_every_category(model):
    records = generate_shape_pairs(48, 3, split="train")
    pb = _collate(model, records, 5.0)
    n = len(records)
    assert {r.category for r in records} >= {"describe", "safety"}
    for i, rec in enumerate(records):
        for row, right in ((i, True), (n + i, False)):
            (pos,) = (pb.lm_weights[row] != 1).nonzero().flatten().tolist()
            assert pb.lm_weights[row, pos] == 5.0 and pb.lm_labels[row, pos] != IGNORE_INDEX
            token = model.tokenizer.decode([int(pb.batch.input_ids[row, pos])]).strip()
            if rec.category == "safety":
                assert token == ("refuses" if right else "helps"), (rec.id, token)
            else:  # "The image shows a red circle" then ";" (the response is right) or "," (but it says ...)
                assert token == (";" if right else ","), (rec.id, rec.chosen_reason, token)


def test_weight_one_or_no_shared_description_weights_nothing(model):
    records = generate_shape_pairs(8, 4, split="train")
    assert _collate(model, records, 1.0).lm_weights is None  # the plain mean, as before
    rec = records[0]
    unrelated = PairRecord(id="x", prompt=rec.prompt, chosen=rec.chosen, rejected=rec.rejected, images=rec.images,
                           chosen_reason="Fine. Score: high.", rejected_reason="Wrong colour. Score: low.")
    pb = _collate(model, [unrelated], 5.0)
    assert torch.all(pb.lm_weights == 1)  # critiques that part at their first token: no verdict to single out


def test_weighted_lm_loss_adds_the_verdict_without_diluting_the_rest():
    torch.manual_seed(0)
    hidden, head = torch.randn(2, 6, 8), torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 2:5], labels[1, 3:6] = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    plain = lm_cross_entropy(hidden, labels, head)
    assert torch.allclose(lm_cross_entropy(hidden, labels, head, torch.ones(2, 6)), plain)
    weights = torch.ones(2, 6)
    weights[1, 4] = 5.0
    per_token = F.cross_entropy(head(hidden[1, 3]), labels[1, 4:5])  # label at 4 is predicted at 3
    want = plain + 4.0 * per_token / 6  # six labelled tokens; the verdict counted five times
    assert torch.allclose(lm_cross_entropy(hidden, labels, head, weights), want)
