"""compare and rank: the math as pure functions, then the service methods over the fake model."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from rmserve.api import CompareRequest, RankRequest, ScoreService, ServiceLimits
from rmserve.api.pairs import compare_rewards, dynamic_beta, rank_rewards
from rmserve.errors import InvalidInput
from tests.conftest import data_url, item, png_bytes, running_engine
from tests.fakes import FakeRewardModel


def test_compare_math():
    prob, margin = compare_rewards(2.0, 0.5)
    assert margin == 1.5 and prob == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert compare_rewards(0.5, 2.0)[0] == pytest.approx(1 - prob)
    assert compare_rewards(1.0, 1.0) == (0.5, 0.0)
    assert compare_rewards(-800.0, 800.0)[0] == 0.0  # no overflow


def test_dynamic_beta_is_mm_dpo_on_the_absolute_margin():
    assert dynamic_beta(0.0) == pytest.approx(0.1)  # beta0 when the RM sees no difference
    expected = 0.1 * (1 + 0.5 * (1 - math.exp(-0.5 * 2.0)))
    assert dynamic_beta(2.0) == pytest.approx(expected) and dynamic_beta(-2.0) == pytest.approx(expected)
    assert dynamic_beta(1e6) == pytest.approx(0.15)  # saturates at beta0 * (1 + w)
    assert dynamic_beta(1.0, beta0=0.2, w=1.0, k=2.0) == pytest.approx(0.2 * (2 - math.exp(-2)))
    assert dynamic_beta(5.0, w=0.0) == pytest.approx(0.1) and dynamic_beta(5.0, k=0.0) == pytest.approx(0.1)
    assert all(dynamic_beta(a) <= dynamic_beta(b) for a, b in [(0.1, 0.2), (1, 3), (3, 10)])  # monotone


@pytest.mark.parametrize(
    "rewards, min_margin, order, chosen, rejected",
    [
        ([0.1, 0.9, 0.5], 0.0, [1, 2, 0], 1, 0),
        ([0.1, 0.9, 0.5], 0.5, [1, 2, 0], 1, 0),
        ([0.1, 0.9, 0.5], 0.85, [1, 2, 0], 1, -1),  # nothing is 0.85 below the best
        ([0.5, 0.9, 0.1], 0.6, [1, 0, 2], 1, 2),
        ([3.0], 0.0, [0], 0, -1),  # one response: no pair
        ([1.0, 1.0, 1.0], 0.0, [0, 1, 2], 0, 2),  # ties keep request order
        ([1.0, 1.0, 1.0], 0.1, [0, 1, 2], 0, -1),
    ],
)
def test_rank_math(rewards, min_margin, order, chosen, rejected):
    assert rank_rewards(rewards, min_margin=min_margin) == (order, chosen, rejected)


def _expected(model, prompt, response, images=()):
    return model.expected(item(response, prompt=prompt, images=list(images))).reward


async def test_compare_service():
    model = FakeRewardModel()
    with running_engine(model, max_wait_ms=1) as engine:
        service = ScoreService(engine)
        request = CompareRequest(prompt="What is 2+2?", response_a="4", response_b="five", beta0=0.2, w=1.0, k=1.0)
        out = await service.compare(request)
    r_a, r_b = _expected(model, "What is 2+2?", "4"), _expected(model, "What is 2+2?", "five")
    assert (out.reward_a, out.reward_b, out.margin) == (r_a, r_b, r_a - r_b)
    assert out.prob_a_better == pytest.approx(1 / (1 + math.exp(-(r_a - r_b))))
    assert out.beta == pytest.approx(0.2 * (1 + (1 - math.exp(-abs(r_a - r_b)))))
    assert out.model == "fake-rm" and out.usage.items == 2
    assert model.batches and max(len(b) for b in model.batches) == 2  # both responses in one forward


async def test_rank_service_with_images_and_top_k():
    model = FakeRewardModel()
    image = data_url(png_bytes(color=(10, 200, 30)))
    responses = [f"candidate answer {i}" for i in range(6)]
    with running_engine(model, max_wait_ms=1) as engine:
        service = ScoreService(engine)
        full = await service.rank(RankRequest(prompt="Describe.", images=[image], responses=responses))
        top = await service.rank(RankRequest(prompt="Describe.", images=[image], responses=responses, top_k=2))
    pil = Image.open(io.BytesIO(png_bytes(color=(10, 200, 30))))
    rewards = [_expected(model, "Describe.", r, [pil]) for r in responses]
    best_first = sorted(range(6), key=lambda i: -rewards[i])
    assert [r.index for r in full.ranking] == best_first
    assert [r.reward for r in full.ranking] == [rewards[i] for i in best_first]
    assert full.chosen_index == best_first[0] and full.rejected_index == best_first[-1]
    assert full.margin == rewards[best_first[0]] - rewards[best_first[-1]]
    assert [r.index for r in top.ranking] == best_first[:2]
    assert (top.chosen_index, top.rejected_index) == (full.chosen_index, full.rejected_index)


@pytest.mark.parametrize(
    "payload, param, code",
    [
        ({"prompt": "p", "responses": ["a", "x" * 600]}, "responses.1", "too_long"),
        ({"prompt": "p", "responses": ["a"] * 5}, "responses", "too_many_items"),
        ({"prompt": "p", "responses": ["a"], "images": ["@@"]}, "images.0", "invalid_base64"),
        ({"prompt": "p", "responses": ["a"], "images": [{"sha256": "ab" * 32}]}, "images.0", "image_not_found"),
        ({"prompt": "p", "responses": ["a"], "model": "nope"}, "model", "model_not_found"),
        ({"prompt": "p" * 600, "responses": ["a"]}, "prompt", "too_long"),
    ],
)
async def test_rank_errors_name_the_field(payload, param, code):
    model = FakeRewardModel(max_length=512)
    with running_engine(model, max_wait_ms=1) as engine:
        service = ScoreService(engine, limits=ServiceLimits(max_items_per_request=4))
        with pytest.raises(InvalidInput) as info:
            await service.rank(RankRequest.model_validate(payload))
        assert (info.value.param, info.value.code) == (param, code)
        assert engine.snapshot().in_flight == 0 and model.batches == []
