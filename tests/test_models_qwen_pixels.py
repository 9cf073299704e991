"""Qwen-VL image inputs without the processor call (rmserve.models.qwen_pixels): the processor's bits, or its path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rmserve.errors import InvalidInput
from rmserve.models import ScoreItem
from rmserve.models.qwen_pixels import QwenPixels
from tests.conftest import random_image

SIZES = [(56, 42), (28, 28), (224, 224), (300, 97), (97, 300), (10, 10), (1000, 700), (150, 1), (1, 150)]


def processor_inputs(family, prompt: str, images: list, add_special_tokens: bool = False):
    out = family.processor(images=images, text=[prompt], return_tensors="pt", add_special_tokens=add_special_tokens)
    return out["input_ids"][0].tolist(), out["pixel_values"], out["image_grid_thw"]


def placeholders(family, n: int) -> str:
    pad = family.processor.image_token
    return "".join(f"Picture {k}: <|vision_start|>{pad}<|vision_end|> " for k in range(n)) + "What is shown?"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_both_qwen_vl_families_take_the_fast_path(tiny_models, family):
    assert tiny_models(family).family.pixels is not None


@pytest.mark.parametrize("family_name", ["qwen2_5_vl", "qwen2_vl"])
@pytest.mark.parametrize("size", SIZES)
def test_pixels_grid_and_ids_are_the_processors_bit_for_bit(tiny_models, family_name, size):
    family = tiny_models(family_name).family
    image = random_image(*size, seed=sum(size))
    prompt = placeholders(family, 1)
    ids, vision = family.tokenize_prompt(prompt, [image], add_special_tokens=False)
    want_ids, want_pixels, want_grid = processor_inputs(family, prompt, [image])
    assert ids == want_ids
    assert torch.equal(vision["image_grid_thw"], want_grid)
    assert vision["pixel_values"].dtype == want_pixels.dtype and torch.equal(vision["pixel_values"], want_pixels)


def test_several_images_of_different_sizes_in_one_prompt(tiny_models):
    family = tiny_models("qwen2_5_vl").family
    images = [random_image(56, 42, 1), random_image(224, 112, 2), random_image(30, 90, 3)]
    prompt = placeholders(family, 3)
    for special in (True, False):
        ids, vision = family.tokenize_prompt(prompt, images, add_special_tokens=special)
        want_ids, want_pixels, want_grid = processor_inputs(family, prompt, images, special)
        assert ids == want_ids and torch.equal(vision["image_grid_thw"], want_grid)
        assert torch.equal(vision["pixel_values"], want_pixels)


def test_a_processor_the_table_does_not_cover_keeps_the_processor_path(tiny_models):
    ip = tiny_models("qwen2_5_vl").family.processor.image_processor
    original = ip.do_normalize
    try:
        ip.do_normalize = False
        assert QwenPixels.from_processor(ip) is None
    finally:
        ip.do_normalize = original
    assert QwenPixels.from_processor(object()) is None


def test_non_rgb_images_go_through_the_processor_and_match(tiny_models):
    family = tiny_models("qwen2_5_vl").family
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8), mode="L")
    assert not family.pixels.covers([gray])
    prompt = placeholders(family, 1)
    ids, vision = family.tokenize_prompt(prompt, [gray], add_special_tokens=False)
    want_ids, want_pixels, _ = processor_inputs(family, prompt, [gray])
    assert ids == want_ids and torch.equal(vision["pixel_values"], want_pixels)


def test_an_image_the_processor_refuses_is_named(tiny_models):
    model = tiny_models("qwen2_5_vl")
    thin = random_image(2000, 5, seed=4)  # aspect ratio 400: Qwen-VL's limit is 200
    with pytest.raises(InvalidInput) as err:
        model.encode(ScoreItem(prompt="What?", response="A line.", images=[random_image(28, 28, 1), thin]))
    assert err.value.param == "images.1"


def test_rewards_through_the_fast_path_equal_the_processors(tiny_models):
    model = tiny_models("qwen2_5_vl")
    items = [ScoreItem(prompt="What is shown?", response=f"A shape, take {k}.",
                       images=[random_image(60 + 8 * k, 44, k)]) for k in range(4)]
    fast = model.score_batch([model.encode(it) for it in items])
    pixels, model.family.pixels = model.family.pixels, None
    try:
        slow = model.score_batch([model.encode(it) for it in items])
    finally:
        model.family.pixels = pixels
    assert [o.reward for o in fast] == [o.reward for o in slow]
