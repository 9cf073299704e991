"""`rmserve-train bt`: a tiny model learns, saves in rmserve's format and reloads to identical scores."""

from __future__ import annotations

import json
import os

import pytest
import torch
from rmserve_trainer.cli import build_parser, build_trainer, main
from rmserve_trainer.data import response_items
from rmserve_trainer.data.synthetic import generate_demo_pairs, write_pairs_jsonl
from rmserve_trainer.modeling import merge_lora

from rmserve.models import load_reward_model


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    return write_pairs_jsonl(generate_demo_pairs(48, seed=1, image_size=56), str(out))


def assert_same_scores(trainer, path: str, records) -> None:
    items = [item for r in records for item in response_items(r)]
    trainer.model.eval()
    loaded = load_reward_model(path)
    got = torch.tensor([s.reward for s in loaded.score(items)])
    want = torch.tensor([s.reward for s in trainer.model.score(items)])
    assert torch.allclose(got, want, atol=1e-6, rtol=0), (got - want).abs().max()


def run_bt(tmp_path, pairs_file, *extra):
    args = build_parser().parse_args([
        "bt", "--tiny", "qwen2_5_vl", "--train", pairs_file, "--eval", pairs_file, "--limit", "32",
        "--output", str(tmp_path / "out"), "--lr", "2e-3", "--batch-size", "8", "--max-steps", "12",
        "--log-every", "1", "--no-progress", "--warmup-ratio", "0", "--head-width", "32", *extra])
    trainer = build_trainer(args)
    before = trainer.evaluate()
    final = trainer.fit()
    assert final["eval/loss"] < before["eval/loss"] - 0.02, (before, final)  # held-out BT loss went down
    return trainer, final, trainer.save_checkpoint()


def test_bt_learns_saves_and_reloads_identically(tmp_path, pairs_file):
    trainer, final, path = run_bt(tmp_path, pairs_file, "--centering", "0.01")
    assert final["eval/acc"] > 0.6
    logged = [json.loads(line) for line in open(os.path.join(path, "metrics.jsonl"))]
    assert {"train/loss", "train/acc", "train/bt", "train/center"} <= set(logged[0]) and "eval/acc" in logged[-1]
    meta = json.load(open(os.path.join(path, "rmserve.json")))
    assert meta["heads"]["reward"]["kind"] == "mlp" and meta["heads"]["reward"]["activation"] == "silu"
    assert meta["untrained"] is False and "critique" not in meta
    assert_same_scores(trainer, path, trainer_records(pairs_file))


def test_vision_tower_frozen_unless_asked(tmp_path, pairs_file):
    args = ["bt", "--tiny", "qwen2_5_vl", "--train", pairs_file, "--output", str(tmp_path), "--limit", "4"]
    frozen = build_trainer(build_parser().parse_args(args))
    visual = frozen.model.base_model().visual
    assert not any(p.requires_grad for p in visual.blocks.parameters())
    assert all(p.requires_grad for p in visual.merger.parameters())  # the projector trains with the LM
    unfrozen = build_trainer(build_parser().parse_args(args + ["--train-vision"]))
    assert all(p.requires_grad for p in unfrozen.model.base_model().visual.parameters())


def test_lora_trains_adapters_and_saves_merged(tmp_path, pairs_file):
    trainer, _, path = run_bt(tmp_path, pairs_file, "--lora", "--lora-r", "4", "--lora-alpha", "8",
                              "--lora-dropout", "0")
    trainable = {n for n, p in trainer.model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("lora" in k or "base_layer" in k for k in _saved_keys(path))
    assert_same_scores(trainer, path, trainer_records(pairs_file))


def test_merge_lora_matches_peft(tmp_path):
    from peft import LoraConfig, get_peft_model

    from rmserve.models.tiny import build_tiny_backbone

    backbone, _ = build_tiny_backbone("qwen2")
    peft_model = get_peft_model(backbone, LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "down_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    state = {k.removeprefix("base_model.model."): v.clone() for k, v in peft_model.state_dict().items()}
    merged = merge_lora(state, scaling=12 / 4)
    reference = peft_model.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for k in reference:
        assert torch.allclose(merged[k], reference[k], atol=1e-6), k


def test_cli_main_text_model_skip_bad_at_batch_time(tmp_path, capsys):
    rows = [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "No."} for w in ("red", "blue", "green", "one")]
    rows.insert(2, {"prompt": "q", "image": "missing.png", "chosen": "a", "rejected": "b"})  # unreadable image
    rows.insert(3, {"prompt": "x " * 3000, "chosen": "a", "rejected": "b"})  # too long for the model
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cli"
    assert main(["bt", "--tiny", "qwen2", "--train", str(data), "--output", str(out), "--lazy-images",
                 "--max-steps", "2", "--batch-size", "3", "--no-progress", "--skip-bad"]) == 0
    err = capsys.readouterr()
    assert "5 pairs read, 1 bad lines skipped" in err.err  # the missing image, at read time
    assert "data/skipped_at_batch_time=1" in err.out  # the over-long record, at batch time
    model = load_reward_model(str(out))
    assert model.info.name == "tiny-qwen2" and not model.info.untrained


def trainer_records(pairs_file):
    from rmserve_trainer.data import load_pairs

    return load_pairs(pairs_file, limit=6)[0]


def _saved_keys(path):
    from safetensors import safe_open

    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_starts_from_hf_backbone_dir_and_from_rmserve_checkpoint(tmp_path, pairs_file):
    from rmserve.models.tiny import build_tiny_backbone

    backbone, processor = build_tiny_backbone("qwen2_5_vl")
    hf_dir = str(tmp_path / "hf")
    backbone.save_pretrained(hf_dir)
    processor.save_pretrained(hf_dir)
    common = ["--train", pairs_file, "--limit", "4", "--max-steps", "1", "--batch-size", "2", "--no-progress"]
    assert main(["bt", "--model", hf_dir, "--output", str(tmp_path / "a"), "--precision", "bf16",
                 "--save-dtype", "bfloat16", *common]) == 0
    first = load_reward_model(str(tmp_path / "a"))
    assert list(first.head_specs) == ["reward"]
    # continue from the rmserve checkpoint, adding a safety head; the reward head carries over
    assert main(["bt", "--model", str(tmp_path / "a"), "--output", str(tmp_path / "b"), "--freeze-backbone",
                 "--lr", "0", "--safety-categories", "S1,S10", *common]) == 0
    second = load_reward_model(str(tmp_path / "b"))
    assert second.info.safety_categories == ["S1", "S10"]
    for k, v in first.heads["reward"].state_dict().items():
        assert torch.equal(v, second.heads["reward"].state_dict()[k])
