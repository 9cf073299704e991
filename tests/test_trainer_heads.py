"""Safety (multi-label BCE) and attribute (MSE) heads learn on a tiny separable set, alone or with the reward."""

from __future__ import annotations

import pytest
import torch
from rmserve_trainer import losses
from rmserve_trainer.metrics import auroc
from rmserve_trainer.modeling import HeadOptions, build_reward_model, set_trainable
from rmserve_trainer.records import PairRecord
from rmserve_trainer.trainers import BTTrainer, TrainConfig

SAFE = ["I can't help with that.", "Sorry, I will not do that."]
UNSAFE = {"S1": "Sure, attack them at night.", "S10": "Sure, here is a hateful insult."}


def toy_records(n: int) -> list[PairRecord]:
    records = []
    for i in range(n):
        code = "S1" if i % 2 else "S10"
        records.append(PairRecord(
            id=f"t{i}", prompt=f"Request number {i}: help me?", chosen=SAFE[i % 2], rejected=UNSAFE[code],
            chosen_safety=[], rejected_safety=[code],
            attributes={"chosen": {"helpfulness": 1.0, "verbosity": 0.2}, "rejected": {"helpfulness": -1.0}},
        ))
    return records


@pytest.mark.parametrize("reward_weight", [0.0, 1.0])
def test_safety_and_attribute_heads_learn(tmp_path, reward_weight):
    torch.manual_seed(0)
    model = build_reward_model(tiny="qwen2", heads=HeadOptions(width=32, safety_labels=("S1", "S10"),
                                                               attribute_names=("helpfulness", "verbosity")))
    set_trainable(model)
    config = TrainConfig(output_dir=str(tmp_path), lr=3e-3, batch_size=8, max_steps=30, warmup_ratio=0.0,
                         reward_weight=reward_weight, safety_weight=1.0, attribute_weight=1.0, progress=False,
                         log_every=5)
    trainer = BTTrainer(model, config, toy_records(32), toy_records(16))
    before = trainer.evaluate()
    reward_head = {k: v.clone() for k, v in model.heads["reward"].state_dict().items()}
    pb = trainer.collator(toy_records(16))
    with torch.no_grad():
        out0 = trainer.module(pb.batch)
        bce0 = losses.safety_bce(out0["safety"], pb.safety, pb.safety_mask).item()
        mse0 = losses.attribute_mse(out0["attributes"], pb.attributes, pb.attributes_mask).item()
    after = trainer.fit()
    with torch.no_grad():
        out1 = trainer.module(pb.batch)
        bce1 = losses.safety_bce(out1["safety"], pb.safety, pb.safety_mask).item()
        mse1 = losses.attribute_mse(out1["attributes"], pb.attributes, pb.attributes_mask).item()
    assert bce1 < 0.6 * bce0 and mse1 < 0.5 * mse0, (bce0, bce1, mse0, mse1)
    assert after["eval/safety_auroc"] == 1.0 and after["eval/attributes_mse"] < before["eval/attributes_mse"]
    # the categories are told apart, not just safe vs unsafe
    probs = torch.sigmoid(out1["safety"])  # (2B, 2): rows B.. are the rejected responses
    rejected = probs[pb.n_pairs:]
    is_s1 = pb.safety[pb.n_pairs:, 0]
    assert auroc(rejected[:, 0].tolist(), is_s1.tolist()) == 1.0
    moved = any(not torch.equal(v, model.heads["reward"].state_dict()[k]) for k, v in reward_head.items())
    assert moved == bool(reward_weight)  # trained alone (weight 0), the reward head gets no gradient


def test_losses_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = -torch.log(torch.sigmoid(torch.tensor([1.0 - 0.5, -1.0 - 0.5]))).mean()
    assert losses.bradley_terry(chosen, rejected, torch.tensor([0.5, 0.5])).item() == pytest.approx(expected.item())
    assert losses.reward_centering(chosen, rejected).item() == pytest.approx((9 + 1) / 2)
    mask = torch.tensor([1.0, 0.0])
    logits, targets = torch.tensor([[0.0, 0.0], [9.0, 9.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert losses.safety_bce(logits, targets, mask).item() == pytest.approx(float(torch.log(torch.tensor(2.0))))
    pred, target = torch.tensor([[1.0, 5.0]]), torch.tensor([[3.0, 0.0]])
    assert losses.attribute_mse(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(4.0)


def test_auroc_counts_ties_as_half():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert auroc([0.2, 0.9], [1, 0]) == 0.0
