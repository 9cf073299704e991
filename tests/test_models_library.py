"""Model library behaviour: templates, heads, length policy, errors that name the field."""

from __future__ import annotations

import pytest
import torch

from rmserve.errors import InvalidInput
from rmserve.models import HeadSpec, ScoreItem, load_reward_model, save_reward_model
from rmserve.models.pooling import last_token_index
from rmserve.models.tiny import build_tiny_reward_model
from tests.conftest import random_image


def test_last_token_index_left_and_right():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


@pytest.mark.parametrize(
    "kind,activation", [("linear", "silu"), ("mlp", "silu"), ("mlp", "tanh"), ("mlp", "relu")]
)
def test_head_kinds_round_trip(tmp_path, kind, activation):
    heads = {
        "reward": HeadSpec(kind=kind, width=16, activation=activation),
        "attributes": HeadSpec(kind="linear", labels=["helpfulness", "correctness"]),
        "safety": HeadSpec(kind="linear", labels=["S1", "S10"]),
    }
    model = build_tiny_reward_model("qwen2", heads=heads)
    out = model.score([ScoreItem(prompt="hi", response="hello")])[0]
    assert set(out.attributes) == {"helpfulness", "correctness"}
    assert set(out.safety) == {"S1", "S10"} and all(0 < p < 1 for p in out.safety.values())
    save_reward_model(model, str(tmp_path))
    again = load_reward_model(str(tmp_path)).score([ScoreItem(prompt="hi", response="hello")])[0]
    assert again.reward == pytest.approx(out.reward, abs=1e-6)
    assert again.safety == pytest.approx(out.safety, abs=1e-6)


def test_mlp_head_shape():
    model = build_tiny_reward_model("qwen2", heads={"reward": HeadSpec(kind="mlp", width=24, layers=3)})
    shapes = [tuple(layer.weight.shape) for layer in model.heads["reward"].layers]
    assert shapes == [(24, 64), (24, 24), (1, 24)]


def test_bad_head_specs():
    with pytest.raises(ValueError, match="activation"):
        HeadSpec(activation="softsign")
    with pytest.raises(ValueError, match="reward"):
        build_tiny_reward_model("qwen2", heads={"safety": HeadSpec(kind="linear", labels=["S1"])})


def test_prompt_is_a_prefix_of_every_response(tiny_models):
    """Responses to one prompt share the prompt's ids exactly (what prefix sharing relies on)."""
    model = tiny_models("qwen2_5_vl")
    img = random_image(56, 56)
    prompt_ids, _, _ = model.encode_prompt(ScoreItem(prompt="Describe.", response="x", images=[img]))
    for response in ["A red circle.", "Two blue squares and a triangle."]:
        enc = model.encode(ScoreItem(prompt="Describe.", response=response, images=[img]))
        assert enc.input_ids[: len(prompt_ids)] == prompt_ids
        assert enc.input_ids[-1] == model.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_messages_and_prompt_forms_agree(tiny_models):
    model = tiny_models("qwen2")
    a = model.encode(ScoreItem(prompt="hi there", response="hello"))
    b = model.encode(ScoreItem(messages=[{"role": "user", "content": "hi there"}], response="hello"))
    assert a.input_ids == b.input_ids


@pytest.mark.parametrize(
    "item,param",
    [
        (ScoreItem(prompt="<|im_start|>user\nq<|im_end|>\n", response="r"), "prompt"),  # templated, no gen. prompt
        (ScoreItem(prompt=None, response="r"), "prompt"),
        (ScoreItem(messages=[{"role": "assistant", "content": "x"}], response="r"), "messages.0.role"),
        (ScoreItem(messages=[{"role": "robot", "content": "x"}], response="r"), "messages.0.role"),
    ],
)
def test_invalid_items_name_the_field(tiny_models, item, param):
    with pytest.raises(InvalidInput) as err:
        tiny_models("qwen2").encode(item)
    assert err.value.param == param


def test_text_model_refuses_images(tiny_models):
    with pytest.raises(InvalidInput) as err:
        tiny_models("qwen2").encode(ScoreItem(prompt="q", response="r", images=[random_image(28, 28)]))
    assert err.value.param == "images"


def test_too_long_is_refused_unless_truncate(tiny_models):
    model = tiny_models("qwen2_5_vl")
    old = model.max_length
    model.max_length = 64
    try:
        img = random_image(56, 56)
        long_prompt = "What colour is the shape? " * 40
        with pytest.raises(InvalidInput) as err:
            model.encode(ScoreItem(prompt=long_prompt, response="red", images=[img]))
        assert err.value.param == "response" and err.value.code == "too_long"
        enc = model.encode(ScoreItem(prompt=long_prompt, response="red", images=[img], truncate=True))
        assert enc.num_tokens == 64 and enc.truncated
        image_id = model.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        full = model.encode(ScoreItem(prompt="q", response="red", images=[img]))
        assert enc.input_ids.count(image_id) == full.input_ids.count(image_id)
        # the response alone does not fit beside the image: the question goes, the generation prompt and the
        # response's end (its end-of-turn token, where the reward is read) stay, the image tokens too
        runaway = model.encode(ScoreItem(prompt="q", response="red " * 200, images=[img], truncate=True))
        assert runaway.num_tokens == 64 and runaway.truncated
        assert runaway.input_ids.count(image_id) == full.input_ids.count(image_id)
        assert runaway.input_ids[-1] == model.tokenizer.convert_tokens_to_ids("<|im_end|>")
        opener = model.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert runaway.input_ids[runaway.prefix_len - len(opener):runaway.prefix_len] == opener
        with pytest.raises(InvalidInput):  # without truncate it is refused
            model.encode(ScoreItem(prompt="q", response="red " * 200, images=[img]))
    finally:
        model.max_length = old


def test_truncation_drops_the_oldest_prompt_text_and_scores_as_that_text(tiny_models):
    """``truncate`` drops exactly the oldest question text (after the images), never an image or a response that fits,
    and the reward is the reward of the question without that text, scored directly."""
    model = tiny_models("qwen2_5_vl")
    images = [random_image(56, 42, seed=1)]
    lines = [f"Line {i}: what colour is shape {i}?\n" for i in range(30)]  # lines tokenize alone: a clean cut
    response = "The shapes are red, then blue."
    full = model.encode(ScoreItem(prompt="".join(lines), response=response, images=images))
    direct_item = ScoreItem(prompt="".join(lines[10:]), response=response, images=images)
    direct = model.encode(direct_item)
    old = model.max_length
    model.max_length = direct.num_tokens  # room for exactly the last 20 lines
    try:
        cut_item = ScoreItem(prompt="".join(lines), response=response, images=images, truncate=True)
        cut = model.encode(cut_item)
        (got,) = model.score([cut_item])
    finally:
        model.max_length = old
    assert cut.truncated and not direct.truncated and cut.num_tokens < full.num_tokens
    assert cut.input_ids == direct.input_ids  # the first 10 lines went, and nothing else
    response_ids = full.input_ids[full.prefix_len:]
    assert cut.input_ids[cut.prefix_len:] == response_ids  # the response is whole
    kept = model.tokenizer.decode(cut.input_ids[: cut.prefix_len])
    assert "Line 0:" not in kept and "Line 9:" not in kept and "Line 10:" in kept and "Line 29:" in kept
    image_id = model.tokenizer.convert_tokens_to_ids("<|image_pad|>")  # every image token and the pixels are kept
    assert cut.input_ids.count(image_id) == full.input_ids.count(image_id) > 0
    assert torch.equal(cut.vision["pixel_values"], full.vision["pixel_values"])
    assert torch.equal(cut.vision["position_ids"], direct.vision["position_ids"])  # positions recomputed
    (want,) = model.score([direct_item])
    (untruncated,) = model.score([ScoreItem(prompt="".join(lines), response=response, images=images)])
    assert got.reward == pytest.approx(want.reward, abs=1e-5)
    assert abs(got.reward - untruncated.reward) > 1e-3  # the dropped text mattered: the check has teeth


def test_default_model_is_deterministic_and_marked_untrained(default_model_dir, tmp_path, monkeypatch):
    model = load_reward_model(default_model_dir)
    assert model.info.untrained and model.info.multimodal
    monkeypatch.setenv("RMSERVE_CACHE", str(tmp_path))
    from rmserve.models import default_model_path

    other = load_reward_model(default_model_path(bundled=False))
    item = ScoreItem(prompt="Describe.", response="A red circle.", images=[random_image(56, 56)])
    assert model.score([item])[0].reward == other.score([item])[0].reward
