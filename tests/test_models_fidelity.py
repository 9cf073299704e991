"""Scores must not depend on batch neighbours, padding side, or a save/load round trip."""

from __future__ import annotations

import pytest
import torch

from rmserve.models import ScoreItem, load_reward_model, save_reward_model
from rmserve.models.tiny import FAMILIES, build_tiny_backbone, build_tiny_reward_model
from tests.conftest import random_image

MULTIMODAL = {"qwen2_5_vl", "qwen2_vl", "llava_onevision"}


def mixed_items(family: str, n: int = 16) -> list[ScoreItem]:
    """Mixed prompt/response lengths, mixed image sizes, some text-only items among image items."""
    items = []
    for i in range(n):
        images = []
        if family in MULTIMODAL and i % 4 != 3:
            images = [random_image(28 + 14 * (i % 5), 28 + 28 * (i % 3), seed=i)]
            if i % 7 == 5:
                images.append(random_image(42, 28, seed=100 + i))
        items.append(
            ScoreItem(
                prompt="What colour is the shape? " * (i % 4 + 1),
                response="The red circle" + " is to the left of the blue square" * (i % 5),
                images=images,
            )
        )
    return items


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("serving_switches", [False, True], ids=["plain", "sharing+cache"])
def test_batch_of_16_equals_alone(family, padding_side, serving_switches):
    model = build_tiny_reward_model(family)
    items = mixed_items(family)
    if serving_switches:  # add a GRPO-style group so the shared-prefix path really runs
        items += [ScoreItem(prompt=items[0].prompt, images=items[0].images, response=f"Answer number {k}.")
                  for k in range(4)]
    encoded = [model.encode(it) for it in items]
    assert len({e.num_tokens for e in encoded}) > 5, "the batch must mix lengths"
    alone = torch.tensor([model.score_batch([e])[0].reward for e in encoded])
    model.padding_side = padding_side
    if serving_switches:
        model.share_prefix = True
        model.enable_vision_cache(1 << 22)
    batched = torch.tensor([o.reward for o in model.score_batch(encoded)])
    assert alone.std() > 1e-3, "rewards must differ between items or the comparison proves nothing"
    assert torch.allclose(alone, batched, atol=1e-4, rtol=0), (alone - batched).abs().max()


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(tiny_models, tmp_path, family):
    model = tiny_models(family)
    items = mixed_items(family, n=6)
    before = [o.reward for o in model.score(items)]
    save_reward_model(model, str(tmp_path))
    reloaded = load_reward_model(str(tmp_path))
    assert reloaded.family_name == model.family_name
    after = [o.reward for o in reloaded.score(items)]
    assert after == pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_sequence_classifier_matches_hf_logits(padding_side):
    """A plain HF *ForSequenceClassification RM: our reward == HF's logits at the last non-pad token."""
    hf_model, tokenizer = build_tiny_backbone("qwen2_seq_cls", seed=3)
    from rmserve.models import RewardModel

    rm = RewardModel.from_sequence_classifier(hf_model, tokenizer)
    items = mixed_items("qwen2_seq_cls", n=8)
    encoded = [rm.encode(it) for it in items]
    batch = rm.collate(encoded, padding_side=padding_side)
    with torch.inference_mode():
        ours = rm.forward(batch)["reward"]
        # HF's own forward, with its own pooling; positions from the mask for left padding, as HF generate does.
        hf_logits = hf_model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.model_inputs["position_ids"],
        ).logits[:, 0]
        single = torch.tensor(
            [hf_model(input_ids=torch.tensor([e.input_ids])).logits[0, 0].item() for e in encoded]
        )
    assert torch.allclose(ours, hf_logits, atol=1e-5, rtol=0)
    assert torch.allclose(ours, single, atol=1e-5, rtol=0)


def test_plain_hf_sequence_classifier_directory_loads_as_is(tmp_path):
    hf_model, tokenizer = build_tiny_backbone("qwen2_seq_cls", seed=4)
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    rm = load_reward_model(str(tmp_path))
    assert rm.family_name == "seq_cls"
    enc = rm.encode(ScoreItem(prompt="2+2?", response="4"))
    with torch.inference_mode():
        expected = hf_model(input_ids=torch.tensor([enc.input_ids])).logits[0, 0].item()
    assert rm.score_batch([enc])[0].reward == pytest.approx(expected, abs=1e-5)
