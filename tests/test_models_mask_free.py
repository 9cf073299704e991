"""Right-padded batches on causal decoders run without a padding mask, with the same rewards.

The real tokens of a right-padded row attend only to earlier real tokens under the causal mask alone, so the
padding mask is redundant there; dropping it lets Hugging Face skip building a (B, 1, L, L) mask and lets
SDPA run its causal kernel (reward_model.py ``pooled_hidden``). These tests pin when that happens, that the
kernel really gets no mask (HF's packed-sequence detection would otherwise build one), and that it does not
happen where the mask matters (left padding, encoders).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from rmserve.models.pooling import causal_decoder, text_position_ids
from rmserve.models.tiny import FAMILIES, build_tiny_reward_model
from tests.test_models_fidelity import mixed_items


def test_text_positions_count_real_tokens_and_continue_over_trailing_pads():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert text_position_ids(mask).tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


def _tiny(config_cls, **kw):
    return transformers.AutoModel.from_config(config_cls(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=37, vocab_size=100, **kw))


@pytest.mark.parametrize(("name", "model", "causal"), [
    ("qwen2", lambda: _tiny(transformers.Qwen2Config, num_key_value_heads=1), True),
    ("bert", lambda: _tiny(transformers.BertConfig), False),
    ("deberta-v2", lambda: _tiny(transformers.DebertaV2Config), False),
])
def test_only_causal_text_stacks_qualify(name, model, causal):
    assert causal_decoder(model()) is causal


def test_a_vision_language_model_is_judged_by_its_language_model():
    model = build_tiny_reward_model("qwen2_5_vl")
    vision_flags = {m.is_causal for m in model.base_model().visual.modules() if hasattr(m, "is_causal")}
    assert vision_flags == {False}, "the vision tower attends bidirectionally and must not count"
    assert model.causal_rows


def _sdpa_masks(monkeypatch) -> list:
    """Every attention mask SDPA is called with (None when it runs unmasked)."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("attn_mask", args[3] if len(args) > 3 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_right_padding_runs_attention_unmasked_with_the_same_rewards(monkeypatch, family, padding_side):
    model = build_tiny_reward_model(family, seed=5)
    encoded = [model.encode(it) for it in mixed_items(family, n=8)]
    assert len({e.num_tokens for e in encoded}) > 3, "rows must need padding"
    alone = torch.tensor([model.score_batch([e])[0].reward for e in encoded])
    model.padding_side = padding_side
    model.chunk_policy = None  # one padded call, so every row but the longest is padded
    masks = _sdpa_masks(monkeypatch)
    batched = torch.tensor([o.reward for o in model.score_batch(encoded)])
    assert masks, "the tiny models attend through SDPA"
    with_mask = [m for m in masks if m is not None]
    if padding_side == "right":
        assert not with_mask, f"{len(with_mask)} of {len(masks)} SDPA calls still got a mask"
    else:
        assert with_mask, "left padding needs its mask"
    assert torch.allclose(alone, batched, atol=1e-5, rtol=0), (alone - batched).abs().max()
