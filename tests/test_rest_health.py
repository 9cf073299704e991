"""Lifecycle endpoints: /healthz, /readyz (503 until warm, 503 while draining), /v1/models, /metrics, docs."""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from rmserve.config import ServerConfig
from rmserve.server import create_app
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app, wait_ready

pytestmark = pytest.mark.asyncio

GOOD = {"items": [{"prompt": "p", "response": "r"}]}


async def test_readyz_is_503_until_the_model_is_warm():
    gate = threading.Event()
    model = FakeRewardModel(warmup_gate=gate)
    async with asgi_client(make_app(model), ready=False) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "unavailable"
        assert (await client.get("/healthz")).status_code == 200  # alive while loading
        r = await client.post("/v1/score", json=GOOD)
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        assert not model.warmed_up
        gate.set()
        await wait_ready(client)
        assert model.warmed_up
        assert (await client.post("/v1/score", json=GOOD)).status_code == 200


async def test_readyz_is_503_while_draining():
    app = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        async with app.router.lifespan_context(app):
            await wait_ready(client)
        # Lifespan over: the server is draining/stopped.
        assert (await client.get("/readyz")).status_code == 503
        r = await client.post("/v1/score", json=GOOD)
        assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]


async def test_model_load_failure_is_visible_on_healthz():
    def broken(config):
        raise FileNotFoundError("no rmserve.json in /nowhere")

    app = create_app(ServerConfig(), model_factory=broken)
    async with asgi_client(app, ready=False) as client:
        for _ in range(100):
            r = await client.get("/healthz")
            if r.status_code == 503:
                break
            await asyncio.sleep(0.01)
        assert r.status_code == 503 and "no rmserve.json" in r.json()["error"]["message"]
        assert (await client.get("/readyz")).status_code == 503


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
async def test_healthz_is_503_when_an_engine_thread_dies():
    """Liveness must notice a dead engine (the k8s liveness probe restarts the pod), not only a failed load."""
    app = make_app(FakeRewardModel())
    async with asgi_client(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        engine = app.state.rmserve.engine

        def bug(now):  # a bug in the batcher's own loop, outside any per-batch error handling
            raise RuntimeError("simulated batcher bug")

        engine._maybe_close_batch_locked = bug
        with engine._cv:
            engine._cv.notify_all()  # wake the batcher: it runs into the bug and its thread ends
        for _ in range(200):
            r = await client.get("/healthz")
            if r.status_code != 200:
                break
            await asyncio.sleep(0.01)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "engine_dead" and "thread died" in r.json()["error"]["message"]
        assert (await client.get("/readyz")).status_code == 503  # and it takes no traffic


async def test_models_lists_the_served_model_with_untrained_flag():
    model = FakeRewardModel(untrained=True, heads=("reward", "safety"))
    async with asgi_client(make_app(model)) as client:
        body = (await client.get("/v1/models")).json()
    card = body["data"][0]
    assert card["id"] == "fake-rm" and card["untrained"] is True
    assert card["heads"] == ["reward", "safety"] and card["safety_categories"] == ["S1", "S10"]


async def test_an_untrained_default_model_is_reported_and_logged_loudly(default_model_dir, caplog):
    caplog.set_level(logging.INFO)
    async with asgi_client(create_app(ServerConfig(model=default_model_dir, max_wait_ms=1))) as client:
        card = (await client.get("/v1/models")).json()["data"][0]
    assert card["untrained"] is True
    (warning,) = [r for r in caplog.records if "UNTRAINED" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "!" * 78 in warning.getMessage()
    assert card["id"] in warning.getMessage() and "--model" in warning.getMessage()

    caplog.clear()
    async with asgi_client(make_app(FakeRewardModel(untrained=False))) as client:
        assert (await client.get("/v1/models")).json()["data"][0]["untrained"] is False
    assert not [r for r in caplog.records if "UNTRAINED" in r.getMessage()]  # a trained model: no banner


async def test_metrics_count_requests_by_endpoint_and_status():
    async with asgi_client(make_app()) as client:
        await client.post("/v1/score", json=GOOD)
        await client.post("/v1/score", json={"items": []})
        text = (await client.get("/metrics")).text
    assert 'rmserve_requests_total{endpoint="/v1/score",method="POST",status="200"} 1.0' in text
    assert 'rmserve_requests_total{endpoint="/v1/score",method="POST",status="422"} 1.0' in text
    assert "rmserve_request_duration_seconds_bucket" in text
    assert "rmserve_ready 1.0" in text
    for name in (
        "rmserve_queue_depth",
        "rmserve_batch_size_bucket",
        "rmserve_batch_tokens_bucket",
        'rmserve_items_scored_total{model="fake-rm"} 1.0',
        "rmserve_request_queue_seconds_count 1.0",
    ):
        assert name in text


async def test_openapi_docs_describe_the_score_api():
    async with asgi_client(make_app()) as client:
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
    item = spec["components"]["schemas"]["ScoreItemIn"]
    assert item["additionalProperties"] is False
    assert all(prop.get("description") for prop in item["properties"].values())
    assert "422" in spec["paths"]["/v1/score"]["post"]["responses"]
