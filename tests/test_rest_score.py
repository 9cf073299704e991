"""POST /v1/score end to end: batching across concurrent HTTP requests, outputs, headers, deadlines."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx
import pytest
from PIL import Image

from rmserve.models.types import ScoreItem
from tests.conftest import data_url, item, png_bytes
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app, uvicorn_server, wait_ready

pytestmark = pytest.mark.asyncio


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


async def test_64_concurrent_requests_over_real_http_are_batched_and_exact():
    model = FakeRewardModel(forward_sleep_s=0.005)  # compute time lets requests pile up, as in RL loops
    app = make_app(model, max_batch_size=32, max_wait_ms=10)
    prompts = [(f"prompt {i}", f"response number {i} " + "x" * (i % 7)) for i in range(64)]
    with uvicorn_server(app) as url:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            await wait_ready(client)

            async def one(prompt, response):
                r = await client.post("/v1/score", json={"items": [{"prompt": prompt, "response": response}]})
                assert r.status_code == 200, r.text
                assert float(r.headers["x-queue-time-ms"]) >= 0 and "x-inference-time-ms" in r.headers
                return r.json()

            bodies = await asyncio.gather(*(one(p, r) for p, r in prompts))
            metrics = (await client.get("/metrics")).text
    for (prompt, response), body in zip(prompts, bodies, strict=True):
        assert body["items"][0]["reward"] == model.expected(item(response, prompt=prompt)).reward
        assert set(body["items"][0]) == {"reward"}
    assert max(len(b) for b in model.batches) > 1
    model_label = '{model="fake-rm"}'
    assert _metric(metrics, "rmserve_items_scored_total", model_label) == 64
    batches = _metric(metrics, "rmserve_batches_total", model_label)
    assert batches < 64
    assert _metric(metrics, "rmserve_batch_size_count", model_label) == batches
    # some batches had > 1 item
    assert _metric(metrics, "rmserve_batch_size_bucket", '{le="1.0",model="fake-rm"}') < batches
    assert (
        _metric(metrics, "rmserve_requests_total", '{endpoint="/v1/score",method="POST",status="200"}') == 64
    )
    assert "rmserve_batch_tokens_bucket" in metrics and "rmserve_queue_depth" in metrics


async def test_multi_item_request_with_images_and_all_outputs():
    model = FakeRewardModel(heads=("reward", "attributes", "safety"))
    image = data_url(png_bytes(color=(0, 128, 255)))
    payload = {
        "items": [
            {"prompt": "What colour?", "images": [image], "response": "Blue-ish."},
            {
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "response": "Hello.",
            },
        ],
        "return": ["reward", "attributes", "safety"],
    }
    async with asgi_client(make_app(model)) as client:
        r = await client.post("/v1/score", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "fake-rm" and body["usage"]["items"] == 2
    # Asking for safety applies the safety policy: its verdict and the model's raw reward come along.
    verdict = {"raw_reward", "flagged", "flagged_categories", "safety_action"}
    assert set(body["items"][0]) == {"reward", "attributes", "safety"} | verdict
    assert set(body["items"][0]["attributes"]) == {"helpfulness", "correctness"}
    # The values are the model's own, item by item (a keys-only check would pass on swapped or zeroed outputs).
    sent = [
        ScoreItem(prompt="What colour?", images=[Image.new("RGB", (8, 8), (0, 128, 255))], response="Blue-ish."),
        ScoreItem(messages=payload["items"][1]["messages"], response="Hello."),
    ]
    for got, want in zip(body["items"], map(model.expected, sent), strict=True):
        assert got["raw_reward"] == pytest.approx(want.reward, abs=1e-9)
        assert got["attributes"] == pytest.approx(want.attributes, abs=1e-9)
        assert got["safety"] == pytest.approx(want.safety, abs=1e-9)
        assert got["flagged"] == bool(got["flagged_categories"])
        assert set(got["flagged_categories"]) <= set(want.safety)
        if got["safety_action"] in ("none", "flag"):  # the policy leaves the reward alone
            assert got["reward"] == got["raw_reward"]
    assert body["items"][0]["raw_reward"] != body["items"][1]["raw_reward"]
    for key in ("x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms"):
        assert float(r.headers[key]) >= 0


async def test_deadline_header_drops_queued_work_with_504():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    async with asgi_client(make_app(model, max_wait_ms=0)) as client:
        blocker = asyncio.create_task(
            client.post("/v1/score", json={"items": [{"prompt": "p", "response": "first"}]})
        )
        await asyncio.sleep(0.05)
        late = {"items": [{"prompt": "p", "response": "too late"}]}
        r = await client.post("/v1/score", json=late, headers={"x-request-timeout-ms": "50"})
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "deadline_exceeded"
        gate.set()
        assert (await blocker).status_code == 200
        r = await client.post("/v1/score", json={"items": [{"prompt": "p", "response": "next"}]})
        assert r.status_code == 200
    assert model.encode(item("too late", prompt="p")).num_tokens not in [n for b in model.batches for n in b]


async def test_client_that_disconnects_has_its_work_dropped():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    app = make_app(model, max_wait_ms=0)
    with uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await wait_ready(client)
            blocker = asyncio.create_task(
                client.post("/v1/score", json={"items": [{"prompt": "p", "response": "b"}]})
            )
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=url, timeout=0.2) as impatient:
                with pytest.raises(httpx.TimeoutException):
                    await impatient.post(
                        "/v1/score", json={"items": [{"prompt": "p", "response": "gone away"}]}
                    )
            end = time.monotonic() + 5
            while app.state.rmserve.engine.snapshot().in_flight > 1 and time.monotonic() < end:
                await asyncio.sleep(0.01)
            assert app.state.rmserve.engine.snapshot().in_flight == 1  # only the blocker is left
            gate.set()
            assert (await blocker).status_code == 200
            assert (
                await client.post("/v1/score", json={"items": [{"prompt": "p", "response": "c"}]})
            ).status_code == 200
    gone = model.encode(item("gone away", prompt="p")).num_tokens
    assert gone not in [n for b in model.batches for n in b]
