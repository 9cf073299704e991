"""ScoreService steps against a real engine and the fake model: limits, param paths, outputs."""

from __future__ import annotations

import pytest

from rmserve.api import ImageLimits, ScoreRequest, ScoreService, ServiceLimits
from rmserve.errors import InvalidInput
from tests.conftest import data_url, item, png_bytes, running_engine
from tests.fakes import FakeRewardModel

pytestmark = pytest.mark.asyncio


def _request(*items, **extra):
    return ScoreRequest.model_validate({"items": list(items), **extra})


def _service(engine, **limits):
    return ScoreService(engine, limits=ServiceLimits(**limits))


async def test_scores_items_in_order_with_usage():
    model = FakeRewardModel(heads=("reward", "attributes", "safety"))
    with running_engine(model, max_wait_ms=1) as engine:
        service = _service(engine)
        items = [{"prompt": f"p{i}", "response": f"answer {i}"} for i in range(5)]
        result = await service.score(_request(*items, **{"return": ["reward", "safety"]}))
    response = result.response
    assert len(response.items) == 5
    assert response.model == "fake-rm" and response.usage.items == 5
    for wire, out in zip(items, response.items, strict=True):
        expected = model.expected(item(wire["response"], prompt=wire["prompt"]))
        assert out.reward == expected.reward
        assert out.safety == expected.safety and out.attributes is None
    assert response.usage.prompt_tokens == response.usage.total_tokens > 0
    assert result.timings.total_ms >= result.timings.inference_ms >= 0


async def test_images_change_the_score_and_count_as_tokens():
    model = FakeRewardModel()
    with running_engine(model, max_wait_ms=1) as engine:
        service = _service(engine)
        red = data_url(png_bytes(color=(255, 0, 0)))
        blue = data_url(png_bytes(color=(0, 0, 255)))
        plain = await service.score(_request({"prompt": "p", "response": "r"}))
        with_red = await service.score(_request({"prompt": "p", "response": "r", "images": [red]}))
        with_blue = await service.score(_request({"prompt": "p", "response": "r", "images": [blue]}))
    assert with_red.response.usage.prompt_tokens == plain.response.usage.prompt_tokens + model.image_tokens
    assert (
        len(
            {
                plain.response.items[0].reward,
                with_red.response.items[0].reward,
                with_blue.response.items[0].reward,
            }
        )
        == 3
    )


@pytest.mark.parametrize(
    "payload, limits, param, code",
    [
        (
            {"items": [{"prompt": "p", "response": "r"}] * 3},
            {"max_items_per_request": 2},
            "items",
            "too_many_items",
        ),
        (
            {"items": [{"prompt": "p", "response": "r", "images": ["x", "y"]}]},
            {"max_images_per_item": 1},
            "items.0.images",
            "too_many_images",
        ),
        ({"items": [{"prompt": "p", "response": "r"}], "model": "other"}, {}, "model", "model_not_found"),
        (
            {"items": [{"prompt": "p", "response": "r"}], "return": ["attributes"]},
            {},
            "return",
            "unsupported_output",
        ),
        (
            {"items": [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": "r", "images": ["@@"]}]},
            {},
            "items.1.images.0",
            "invalid_base64",
        ),
        (
            {"items": [{"prompt": "p", "response": "ok"}, {"prompt": "p", "response": "x" * 600}]},
            {},
            "items.1.response",
            "too_long",
        ),
        ({"items": [{"prompt": "p" * 600, "response": "ok"}]}, {}, "items.0.prompt", "too_long"),
    ],
)
async def test_invalid_requests_name_the_field(payload, limits, param, code):
    model = FakeRewardModel(max_length=512)
    with running_engine(model, max_wait_ms=1) as engine:
        service = _service(engine, **limits)
        with pytest.raises(InvalidInput) as info:
            await service.score(ScoreRequest.model_validate(payload))
        assert (info.value.param, info.value.code) == (param, code)
        assert engine.snapshot().in_flight == 0  # admission released on failure
        assert model.batches == []  # nothing reached the model


async def test_truncate_lets_long_prompts_through():
    model = FakeRewardModel(max_length=64)
    with running_engine(model, max_wait_ms=1) as engine:
        result = await _service(engine).score(
            _request({"prompt": "p" * 200, "response": "ok", "truncate": True})
        )
    assert result.response.usage.prompt_tokens == 64


async def test_image_limits_come_from_the_service_limits():
    model = FakeRewardModel()
    with running_engine(model, max_wait_ms=1) as engine:
        service = _service(engine, images=ImageLimits(max_pixels=10, max_bytes=100_000))
        with pytest.raises(InvalidInput) as info:
            await service.score(
                _request({"prompt": "p", "response": "r", "images": [data_url(png_bytes((4, 4)))]})
            )
    assert info.value.param == "items.0.images.0" and info.value.code == "image_too_large"
