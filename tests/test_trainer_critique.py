"""`rmserve-train critique`: teacher-forced critiques + BT after them; generation at serving time matches."""

from __future__ import annotations

import json
import os

import pytest
import torch
from rmserve_trainer.cli import build_parser, build_trainer
from rmserve_trainer.data import DataError, response_items
from rmserve_trainer.data.synthetic import generate_demo_pairs, write_pairs_jsonl
from rmserve_trainer.modeling import TrainModule

from rmserve.models import load_reward_model
from rmserve.models.critique import (
    CritiqueConfig,
    _generate_inputs,
    critique_and_score,
    is_critique_model,
    scored_item,
)
from rmserve.models.types import EncodedItem


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("critique")
    data = write_pairs_jsonl(generate_demo_pairs(40, seed=2, image_size=56), str(out / "data"))
    args = build_parser().parse_args([
        "critique", "--tiny", "qwen2_5_vl", "--train", data, "--eval", data, "--limit", "24",
        "--output", str(out / "model"), "--lr", "3e-3", "--batch-size", "8", "--max-steps", "10",
        "--warmup-ratio", "0", "--no-progress", "--max-new-tokens", "12", "--eval-generate", "2",
        "--safety-categories", "all", "--head-width", "32"])
    trainer = build_trainer(args)
    before = trainer.evaluate()
    final = trainer.fit()
    path = trainer.save_checkpoint()
    return trainer, before, final, path


def test_critique_losses_go_down(trained):
    _, before, final, _ = trained
    assert final["eval/lm"] < before["eval/lm"] - 0.5, (before, final)  # critique cross-entropy
    assert final["eval/loss"] < before["eval/loss"], (before, final)  # BT after the reference critique
    assert "eval/generated_acc" in final and "eval/safety_auroc" in final


def test_checkpoint_is_a_critique_model_that_scores_identically(trained):
    trainer, _, _, path = trained
    meta = json.load(open(os.path.join(path, "rmserve.json")))
    assert meta["critique"]["max_new_tokens"] == 12 and "[LMM Response]" in meta["critique"]["template"]
    loaded = load_reward_model(path)
    assert is_critique_model(loaded) and CritiqueConfig.of(loaded).template == trainer.critique.template
    records = generate_demo_pairs(3, seed=5, image_size=56, split="heldout")
    items = [item for r in records for item in response_items(r)]
    trainer.model.eval()
    want = critique_and_score(trainer.model, items)
    got = critique_and_score(loaded, items)
    assert [g.critique for g in got] == [w.critique for w in want]
    assert torch.allclose(torch.tensor([g.score.reward for g in got]), torch.tensor([w.score.reward for w in want]),
                          atol=1e-6, rtol=0)
    assert all(set(g.score.safety) == set(meta["safety_categories"]) for g in got)


def test_generation_sees_the_training_positions(trained):
    """HF generate's logits at every greedy step == the training forward's logits over the same sequence.

    Catches M-RoPE position drift between serving (generate + mm_token_type_ids) and training.
    """
    trainer, _, _, _ = trained
    model = trainer.model.eval()
    config = CritiqueConfig(max_new_tokens=8)
    item = response_items(generate_demo_pairs(1, seed=9, image_size=56, split="heldout")[0])[0]
    ids, vision, _ = model.encode_prompt(scored_item(config, item, ""))
    out = model.backbone.generate(**_generate_inputs(model, ids, vision), do_sample=False, max_new_tokens=8,
                                  min_new_tokens=8, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    full = out.sequences[0].tolist()
    encoded = EncodedItem(input_ids=full, vision=dict(vision))
    encoded.vision.update(model.family.item_positions(full, encoded.vision))
    batch = model.collate([encoded])
    with torch.no_grad():
        hidden = TrainModule(model).rm.base_model()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                    **batch.model_inputs).last_hidden_state
        logits = model.backbone.get_output_embeddings()(hidden[0])  # (L, V)
    for k, step_scores in enumerate(out.scores):
        kept = step_scores[0].isfinite()  # min_new_tokens masks the end-of-turn token with -inf
        assert torch.allclose(step_scores[0][kept], logits[len(ids) - 1 + k][kept], atol=1e-4), k


def test_records_without_reasons_are_refused_or_skipped(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "r1", "prompt": "q", "chosen": "a", "rejected": "b", "chosen_reason": "ok"})
                    + "\n" + json.dumps({"id": "r2", "prompt": "q", "chosen": "a", "rejected": "b",
                                         "chosen_reason": "good", "rejected_reason": "bad"}) + "\n")
    argv = ["critique", "--tiny", "qwen2", "--train", str(data), "--output", str(tmp_path / "m"), "--no-progress"]
    with pytest.raises(DataError, match=r"d.jsonl:1: record 'r1': the critique trainer needs"):
        build_trainer(build_parser().parse_args(argv))
    trainer = build_trainer(build_parser().parse_args(argv + ["--skip-bad"]))
    assert trainer.missing_reasons == 1


def test_one_forward_gives_lm_loss_and_rewards(trained):
    trainer, _, _, _ = trained
    pb = trainer.collator(generate_demo_pairs(2, seed=3, image_size=56))
    module = TrainModule(trainer.model)
    with torch.no_grad():
        shared = module(pb.batch, pb.lm_labels, paired_images=True)
        plain = module(pb.batch, pb.lm_labels)
    assert torch.equal(shared["reward"], plain["reward"]) and torch.equal(shared["lm_loss"], plain["lm_loss"])
    assert shared["reward"].shape == (4,) and shared["safety"].shape == (4, 14)
