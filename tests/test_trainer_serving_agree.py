""""Scores match what the model gives in training": the trainer's forward (``TrainModule.forward`` over the
``PairCollator``'s batch: chosen and rejected rows in one right-padded batch, pair images encoded once)
gives every row the reward, attributes and safety that serving's ``score()`` gives the same item alone,
within 1e-5, for every model family the trainer trains."""

from __future__ import annotations

import pytest
import torch
from rmserve_trainer.data.collate import PairCollator, response_items
from rmserve_trainer.modeling import TrainModule
from rmserve_trainer.records import PairRecord

from rmserve.models import HeadSpec
from rmserve.models.tiny import build_tiny_reward_model
from tests.conftest import random_image

FAMILIES = ["qwen2_5_vl", "qwen2_vl", "llava_onevision", "qwen2"]
HEADS = {
    "reward": HeadSpec(kind="mlp", width=16, activation="silu"),
    "attributes": HeadSpec(kind="linear", labels=["helpfulness", "correctness"]),
    "safety": HeadSpec(kind="linear", labels=["S1", "S10"]),
}


def records(multimodal: bool) -> list[PairRecord]:
    """Pairs whose sides differ in length (so right padding is exercised) and images differ in size."""
    def images(k: int):
        return [random_image(28 + 14 * k, 42, seed=k)] if multimodal else []

    return [
        PairRecord(id="a", prompt="What colour is the shape?", images=images(0), chosen="Red.",
                   rejected="It is a blue square, drawn in the middle of a white background, I think."),
        PairRecord(id="b", prompt=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "How many shapes are there?"}],
                   images=images(1), chosen="There are three shapes: two circles and one triangle.", rejected="2"),
        PairRecord(id="c", prompt="Is there a triangle?", images=images(2), chosen="Yes.", rejected="No, none."),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_training_forward_equals_serving_score(family):
    model = build_tiny_reward_model(family, seed=7, heads=HEADS)
    model.normalize = {"mean": 0.1, "std": 2.0}  # serving applies it; so does the training forward's reward
    model.eval()
    pairs = records(model.info.multimodal)
    pb = PairCollator(model)(pairs)
    lengths = pb.batch.attention_mask.sum(-1)
    assert pb.batch.attention_mask[:, 0].all() and int(lengths.min()) < pb.batch.input_ids.shape[1]  # right-padded
    with torch.no_grad():
        trained = TrainModule(model)(pb.batch, paired_images=True)
    items = [side for rec in pairs for side in response_items(rec)]
    items = items[0::2] + items[1::2]  # the collator's row order: every chosen, then every rejected
    served = [model.score([item])[0] for item in items]  # each alone, as the server scores it

    rewards = [s.reward for s in served]
    gap = min(abs(a - b) for i, a in enumerate(rewards) for b in rewards[i + 1:])
    assert gap > 1e-4, rewards  # 10x the tolerance: two rows swapped would fail
    assert trained["reward"].tolist() == pytest.approx(rewards, abs=1e-5, rel=0)
    for row, s in enumerate(served):
        assert trained["attributes"][row].tolist() == pytest.approx(
            [s.attributes["helpfulness"], s.attributes["correctness"]], abs=1e-5, rel=0)
        assert torch.sigmoid(trained["safety"][row]).tolist() == pytest.approx(
            [s.safety["S1"], s.safety["S10"]], abs=1e-5, rel=0)
