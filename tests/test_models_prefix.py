"""Shared-prefix scoring equals scoring every full sequence alone (1e-4, fp32), for every family."""

from __future__ import annotations

import pytest
import torch

from rmserve.models import ScoreItem
from rmserve.models.chunking import ChunkPolicy
from rmserve.models.prefix import find_groups
from rmserve.models.tiny import FAMILIES
from tests.conftest import random_image

MULTIMODAL = {"qwen2_5_vl", "qwen2_vl", "llava_onevision"}


def grpo_batch(family: str) -> list[ScoreItem]:
    """Three groups (G = 4, 3, 2) with different prompts and images, plus two singletons, shuffled."""
    mm = family in MULTIMODAL
    items = []
    for g, (prompt, size, n) in enumerate(
        [
            ("Describe the image.", (56, 42), 4),
            ("What colour is the shape? " * 3, (28, 70), 3),
            ("How many objects?", (42, 42), 2),
        ]
    ):
        images = [random_image(*size, seed=g)] if mm else []
        for k in range(n):
            items.append(
                ScoreItem(
                    prompt=prompt,
                    images=images,
                    response="There are" + " three red circles" * (k + 1) + f" {k}.",
                )
            )
    alone_images = [random_image(28, 28, 9)] if mm else []
    items.append(ScoreItem(prompt="Alone.", response="A single answer.", images=alone_images))
    items.append(
        ScoreItem(
            prompt="Describe the image.",
            response="Same prompt, other image.",
            images=[random_image(56, 42, seed=77)] if mm else [],
        )
    )
    order = [5, 0, 9, 3, 7, 1, 10, 8, 2, 6, 4]
    return [items[i] for i in order]


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_equals_alone(tiny_models, family):
    model = tiny_models(family)
    encoded = [model.encode(it) for it in grpo_batch(family)]
    groups, rest = find_groups(encoded)
    # Text models cannot see the "other image" item's image, so it joins the first group there.
    assert len(groups) == 3 and sorted(len(g) for g in groups) == [2, 3, 4 if family in MULTIMODAL else 5]
    alone = torch.tensor([model.score_batch([e])[0].reward for e in encoded])
    model.share_prefix = True
    try:
        shared = torch.tensor([o.reward for o in model.score_batch(encoded)])
    finally:
        model.share_prefix = False
    assert alone.std() > 1e-3
    assert torch.allclose(alone, shared, atol=1e-4, rtol=0), (alone - shared).abs().max()


CALL_PLANS = {
    "one call": None,
    "every row alone": ChunkPolicy(overhead_tokens=0, max_tokens=1),
    "mixed calls": ChunkPolicy(overhead_tokens=0, max_tokens=40),
}


@pytest.mark.parametrize("plan", CALL_PLANS)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_call_plan_does_not_change_scores(tiny_models, family, plan):
    """However a batch is cut into forward calls (prefixes and responses, shared or not), every row is the same."""
    model = tiny_models(family)
    encoded = [model.encode(it) for it in grpo_batch(family)]
    previous = model.chunk_policy
    try:
        model.chunk_policy = None
        alone = torch.tensor([model.score_batch([e])[0].reward for e in encoded])
        model.chunk_policy = CALL_PLANS[plan]
        unshared = torch.tensor([o.reward for o in model.score_batch(encoded)])
        model.share_prefix = True
        shared = torch.tensor([o.reward for o in model.score_batch(encoded)])
    finally:
        model.share_prefix, model.chunk_policy = False, previous
    assert alone.std() > 1e-3
    assert torch.allclose(alone, unshared, atol=1e-4, rtol=0), (alone - unshared).abs().max()
    assert torch.allclose(alone, shared, atol=1e-4, rtol=0), (alone - shared).abs().max()


def test_same_prompt_different_image_is_not_grouped(tiny_models):
    model = tiny_models("qwen2_5_vl")
    a = model.encode(ScoreItem(prompt="Describe.", response="red", images=[random_image(56, 56, 1)]))
    b = model.encode(ScoreItem(prompt="Describe.", response="red", images=[random_image(56, 56, 2)]))
    assert a.input_ids == b.input_ids
    groups, rest = find_groups([a, b])
    assert groups == [] and rest == [0, 1]
