"""`rmserve convert mm-rlhf`: a tiny LLaVA-OV written in MM-RLHF's original llava_qwen layout converts,
loads with load_reward_model, and scores exactly what the original weights compute."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from rmserve.models import ScoreItem, convert, load_reward_model
from rmserve.models.tiny import build_tiny_backbone
from tests.conftest import random_image

VISION_HEADS = 2  # the tiny SigLIP's head count (the weights cannot tell it)


def to_llava_qwen(key: str) -> str | None:
    """HF LLaVA-OneVision key -> LLaVA-NeXT llava_qwen key (None: LLaVA has no such weight)."""
    if key.startswith("model.vision_tower.head."):
        return None  # LLaVA replaces SigLIP's pooling head with Identity
    for hf, original in (("model.language_model.", "model."),
                         ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
                         ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
                         ("model.multi_modal_projector.linear_2.", "model.mm_projector.2.")):
        if key.startswith(hf):
            return original + key[len(hf):]
    assert key in ("model.image_newline", "lm_head.weight"), key
    return key


@pytest.fixture(scope="module")
def mm_rlhf_checkpoint(tmp_path_factory):
    """(src dir, original HF model, rm_head tensors) in the original layout, weights in two shards."""
    hf, processor = build_tiny_backbone("llava_onevision", seed=3)
    hidden = hf.config.text_config.hidden_size
    gen = torch.Generator().manual_seed(7)
    head = {
        "rm_head.dense.weight": torch.randn(hidden, hidden, generator=gen) * 0.2,
        "rm_head.dense.bias": torch.randn(hidden, generator=gen) * 0.1,
        "rm_head.out_proj.weight": torch.randn(1, hidden, generator=gen) * 0.2,
        "rm_head.out_proj.bias": torch.randn(1, generator=gen) * 0.1,
    }
    state = {new: v.contiguous() for k, v in hf.state_dict().items() if (new := to_llava_qwen(k))}
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # old checkpoints carry these
    keys = sorted(state)
    src = tmp_path_factory.mktemp("mm-rlhf-src")
    save_file({k: state[k] for k in keys[: len(keys) // 2]}, str(src / "model-00001-of-00002.safetensors"))
    save_file({**{k: state[k] for k in keys[len(keys) // 2:]}, **head}, str(src / "model-00002-of-00002.safetensors"))
    text = hf.config.text_config
    cfg = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava_qwen",
        "vocab_size": text.vocab_size, "hidden_size": hidden, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "hidden_act": "silu", "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings, "rope_theta": text.rope_parameters["rope_theta"],
        "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2,
        "eos_token_id": text.eos_token_id, "torch_dtype": "float32",
        "mm_vision_tower": "tiny-siglip-test", "mm_hidden_size": hf.config.vision_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu", "mm_patch_merge_type": "spatial_unpad", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": hf.config.image_grid_pinpoints, "mm_spatial_pool_mode": "bilinear",
        "tokenizer_model_max_length": 2048,
    }
    (src / "config.json").write_text(json.dumps(cfg))
    processor.tokenizer.save_pretrained(str(src))
    return src, hf, head


@pytest.fixture(scope="module")
def converted(mm_rlhf_checkpoint, tmp_path_factory):
    src, _, _ = mm_rlhf_checkpoint
    dst = tmp_path_factory.mktemp("converted") / "rm"
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    args = parser.parse_args(["mm-rlhf", str(src), str(dst), "--vision-heads", str(VISION_HEADS)])
    assert convert.run(args) == 0
    return dst


def test_backbone_weights_and_config(mm_rlhf_checkpoint, converted):
    _, hf, _ = mm_rlhf_checkpoint
    rm = load_reward_model(str(converted))
    assert rm.family_name == "llava_onevision"
    spec = rm.head_specs["reward"]
    hidden = hf.config.text_config.hidden_size
    assert (spec.kind, spec.activation, spec.layers, spec.width) == ("mlp", "tanh", 2, hidden)
    ref = {k: v for k, v in hf.state_dict().items() if not k.startswith("model.vision_tower.head.")}
    got = rm.backbone.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    vc = rm.backbone.config.vision_config
    assert (vc.num_hidden_layers, vc.image_size, vc.patch_size, vc.vision_use_head) == (2, 28, 14, False)
    assert os.path.exists(converted / "model.safetensors.index.json")  # two source shards -> two output shards


@torch.inference_mode()
def test_reward_matches_reference(mm_rlhf_checkpoint, converted):
    """Reward = out_proj(tanh(dense(h_last))) on the ORIGINAL model's final hidden state, within 1e-5."""
    _, hf, head = mm_rlhf_checkpoint
    rm = load_reward_model(str(converted))
    items = [ScoreItem(prompt="What colour is the shape?", images=[random_image(40, 60, seed=1)], response="Red."),
             ScoreItem(prompt="Describe the image.", images=[random_image(28, 28, seed=2)],
                       response="A blue square and two circles."),
             ScoreItem(prompt="Say hello.", response="Hello!")]
    got = [out.reward for out in rm.score(items)]
    for item, reward in zip(items, got, strict=True):
        enc = rm.encode(item)
        kwargs = {}
        if "pixel_values" in enc.vision:
            kwargs = {"pixel_values": enc.vision["pixel_values"], "image_sizes": enc.vision["image_sizes"]}
        ids = torch.tensor([enc.input_ids])
        h = hf.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).last_hidden_state[0, -1]
        x = torch.tanh(h @ head["rm_head.dense.weight"].T + head["rm_head.dense.bias"])
        ref = (x @ head["rm_head.out_proj.weight"].T + head["rm_head.out_proj.bias"]).item()
        assert abs(reward - ref) < 1e-5, (reward, ref)
    assert len({round(r, 6) for r in got}) == 3  # the inputs matter (not a constant head)
    assert enc.input_ids[-1] == rm.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_rejects_other_layouts(mm_rlhf_checkpoint, tmp_path):
    src, _, _ = mm_rlhf_checkpoint
    with pytest.raises(convert.ConversionError, match="unexpected key"):
        convert.map_key("model.some_adapter.weight")
    assert convert.map_key("model.vision_tower.vision_tower.vision_model.head.probe") is None
    bad = json.loads((src / "config.json").read_text()) | {"mm_projector_type": "linear"}
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(convert.ConversionError, match="mlp2x_gelu"):
        convert.convert_mm_rlhf(str(tmp_path), str(tmp_path / "out"), vision_heads=VISION_HEADS)
    with pytest.raises(convert.ConversionError, match="--vision-heads"):  # unknown tower name, no head count
        convert.convert_mm_rlhf(str(src), str(tmp_path / "out2"))


def test_embedding_rows_added_for_new_tokens_are_the_mean_row():
    t = torch.arange(6.0).view(3, 2)
    grown = convert._pad_rows(t, 5)
    assert grown.shape == (5, 2) and torch.equal(grown[:3], t)
    assert torch.equal(grown[3], t.mean(0)) and torch.equal(grown[4], t.mean(0))
    assert convert._pad_rows(t, 3) is t
