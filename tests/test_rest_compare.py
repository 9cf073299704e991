"""POST /v1/compare over HTTP: the response shape, the MM-DPO beta parameters, batching of the pair."""

from __future__ import annotations

import math

import pytest

from tests.conftest import data_url, item, png_bytes
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app


async def test_compare_shape_and_values():
    model = FakeRewardModel()
    payload = {"prompt": "Which is right?", "response_a": "Paris", "response_b": "Lyon", "beta0": 0.2, "w": 2.0, "k": 1}
    async with asgi_client(make_app(model)) as client:
        r = await client.post("/v1/compare", json=payload)
        swap = {**payload, "response_a": "Lyon", "response_b": "Paris"}
        swapped = (await client.post("/v1/compare", json=swap)).json()
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"reward_a", "reward_b", "prob_a_better", "margin", "beta", "model", "usage"}
    r_a = model.expected(item("Paris", prompt="Which is right?")).reward
    r_b = model.expected(item("Lyon", prompt="Which is right?")).reward
    assert (body["reward_a"], body["reward_b"], body["margin"]) == (r_a, r_b, r_a - r_b)
    assert body["prob_a_better"] == pytest.approx(1 / (1 + math.exp(r_b - r_a)))
    assert body["beta"] == pytest.approx(0.2 * (1 + 2.0 * (1 - math.exp(-abs(r_a - r_b)))))
    assert body["usage"]["items"] == 2 and body["model"] == "fake-rm"
    # symmetric: swapping the pair flips the probability and keeps beta
    assert swapped["prob_a_better"] == pytest.approx(1 - body["prob_a_better"])
    assert swapped["beta"] == pytest.approx(body["beta"])


async def test_compare_with_messages_and_an_image_defaults_to_mm_dpo_constants():
    model = FakeRewardModel()
    payload = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour?"}],
        "images": [data_url(png_bytes(color=(0, 0, 255)))],
        "response_a": "Blue.",
        "response_b": "Red.",
    }
    async with asgi_client(make_app(model)) as client:
        body = (await client.post("/v1/compare", json=payload)).json()
    assert body["beta"] == pytest.approx(0.1 * (1 + 0.5 * (1 - math.exp(-0.5 * abs(body["margin"])))))
    assert len(model.batches[-1]) == 2  # both responses in one forward
