"""Engine + shared prefixes: GRPO groups arriving as single-item requests are batched together,
run their prompt once, and still get exactly their unshared scores."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rmserve.engine.batching import select_grouped_batch
from rmserve.models import ScoreItem
from rmserve.models.tiny import build_tiny_reward_model
from tests.conftest import random_image, running_engine


def test_grouped_selection_keeps_groups_whole_and_budgets_prefix_once():
    # items 0,2,4 share group "a" (prefix 50, lengths 60..70); 1 and 3 are singles; 5 is group "b".
    lengths = [60, 30, 65, 35, 70, 90]
    prefix = [50, 10, 50, 10, 50, 80]
    groups = ["a", None, "a", None, "a", "b"]
    idx, full = select_grouped_batch(lengths, prefix, groups, max_batch_size=32, max_batch_tokens=10_000)
    assert idx == [0, 2, 4, 1, 3, 5] and not full
    # Group "a" costs 50 + 3 * 20 = 110 slots, not 3 * 70 = 210: a 120 budget takes it whole
    # (and then has no room for single 1: 110 + 30 > 120).
    idx, full = select_grouped_batch(lengths, prefix, groups, max_batch_size=32, max_batch_tokens=120)
    assert idx == [0, 2, 4] and full
    # The batch-size cap splits a unit rather than exceeding it.
    idx, full = select_grouped_batch(lengths, prefix, groups, max_batch_size=2, max_batch_tokens=10_000)
    assert idx == [0, 2] and full


def test_without_groups_it_is_the_length_sorted_selection():
    idx, _ = select_grouped_batch([50, 10, 48], [5, 5, 5], [None, None, None], max_batch_size=2,
                                  max_batch_tokens=10_000)
    assert sorted(idx) == [0, 2]


@pytest.mark.asyncio
async def test_concurrent_grpo_requests_share_prefix_and_match_alone():
    model = build_tiny_reward_model("qwen2_5_vl")
    model.share_prefix = True
    model.enable_vision_cache(1 << 22)
    items = []
    for g in range(3):
        image = random_image(56, 42 + 14 * g, seed=g)
        for k in range(8):
            items.append(ScoreItem(prompt=f"Question {g}: what is in the image?", images=[image],
                                   response="A red circle" + " and a square" * (k % 4) + f" ({k})."))
    encoded = [model.encode(it) for it in items]
    model.share_prefix = False
    alone = torch.tensor([model.score_batch([e])[0].reward for e in encoded])
    model.share_prefix = True

    shared_calls = []
    import rmserve.models.reward_model as rm_module

    original = rm_module.pooled_hidden_shared

    def spy(m, its, groups, policy=None):
        shared_calls.append([len(g) for g in groups])
        return original(m, its, groups, policy)

    rm_module.pooled_hidden_shared = spy
    try:
        with running_engine(model, max_batch_size=32, max_wait_ms=20, share_prefix=True) as engine:
            async def one(e):
                return (await engine.score_items([e])).outputs[0].reward

            rewards = torch.tensor(await asyncio.gather(*(one(e) for e in encoded)))
    finally:
        rm_module.pooled_hidden_shared = original
    assert torch.allclose(alone, rewards, atol=1e-4, rtol=0), (alone - rewards).abs().max()
    assert shared_calls and max(max(sizes) for sizes in shared_calls) >= 4, shared_calls
