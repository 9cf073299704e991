"""Metrics per model, cache and load-time metrics, in-flight gauges; request ids in headers and log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import time

import grpc
import httpx
import pytest
from rmserve_client.proto import reward_pb2 as pb

from rmserve.config import ServerConfig
from rmserve.server import create_app
from rmserve.server.logs import configure_logging
from tests.conftest import data_url, png_bytes
from tests.fakes import NAN_MARKER, RAISE_MARKER, FakeRewardModel
from tests.grpc_serving import served
from tests.serving import asgi_client, make_app

GOOD = {"items": [{"prompt": "What is shown?", "response": "A red square."}]}


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample; labels in any order."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            sample, value = line.rsplit(" ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', sample[len(name):]))
            if sample.split("{")[0] == name and found == {k: str(v) for k, v in labels.items()}:
                return float(value)
    raise AssertionError(f"{name}{labels} not in metrics")


class FakeVisionCache:
    def stats(self) -> dict:
        return {"entries": 2, "bytes": 4096, "hits": 6, "misses": 2, "hit_ratio": 0.75}


async def test_every_model_gets_its_own_labelled_metrics():
    a, b = FakeRewardModel(name="a"), FakeRewardModel(name="b")
    b.vision_cache = FakeVisionCache()
    app = create_app(ServerConfig(max_wait_ms=2.0), models=[a, b])
    async with asgi_client(app) as client:
        for _ in range(3):
            assert (await client.post("/v1/score", json=GOOD)).status_code == 200  # the ensemble: both models
        assert (await client.post("/v1/score", json={**GOOD, "model": "b"})).status_code == 200
        text = (await client.get("/metrics")).text
    assert metric(text, "rmserve_items_scored_total", model="a") == 3
    assert metric(text, "rmserve_items_scored_total", model="b") == 4
    for name in ("rmserve_batches_total", "rmserve_items_failed_total", "rmserve_items_expired_total",
                 "rmserve_items_cancelled_total", "rmserve_queue_depth", "rmserve_in_flight_items",
                 "rmserve_batch_size_count", "rmserve_batch_tokens_count", "rmserve_batch_duration_seconds_count"):
        for model in ("a", "b"):
            metric(text, name, model=model)
    assert metric(text, "rmserve_batch_size_count", model="b") >= 1
    assert metric(text, "rmserve_model_load_seconds", model="a", phase="warmup") >= 0
    assert metric(text, "rmserve_vision_cache_hit_ratio", model="b") == 0.75
    assert metric(text, "rmserve_vision_cache_hits_total", model="b") == 6
    assert 'rmserve_vision_cache_hits_total{model="a"}' not in text  # a has no vision cache


async def test_load_time_image_cache_and_outcome_counters():
    def slow_factory(config):
        time.sleep(0.2)
        return FakeRewardModel(heads=("reward",))

    app = create_app(ServerConfig(max_wait_ms=2.0), model_factory=slow_factory)
    image = data_url(png_bytes((8, 8), (1, 2, 3)))
    async with asgi_client(app) as client:
        for _ in range(3):
            body = {"items": [{"prompt": "p", "response": "r", "images": [image]}]}
            assert (await client.post("/v1/score", json=body)).status_code == 200
        nan = {"items": [{"prompt": "p", "response": NAN_MARKER}]}
        assert (await client.post("/v1/score", json=nan)).status_code == 500
        text = (await client.get("/metrics")).text
    assert metric(text, "rmserve_model_load_seconds", model="fake-rm", phase="load") >= 0.2
    assert metric(text, "rmserve_image_cache_misses_total") >= 1
    assert metric(text, "rmserve_image_cache_hits_total") >= 2
    assert 0 < metric(text, "rmserve_image_cache_hit_ratio") < 1
    assert metric(text, "rmserve_image_cache_entries") == 1
    assert metric(text, "rmserve_items_failed_total", model="fake-rm") == 1


async def test_in_flight_gauges_and_expired_items():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    async with asgi_client(make_app(model)) as client:
        blocked = asyncio.ensure_future(client.post("/v1/score", json=GOOD))
        while not model.batches:  # the worker is busy with it
            await asyncio.sleep(0.005)
        expiring = asyncio.ensure_future(
            client.post("/v1/score", json=GOOD, headers={"x-request-timeout-ms": "150"})
        )
        await asyncio.sleep(0.05)
        text = (await client.get("/metrics")).text
        assert metric(text, "rmserve_requests_in_flight", transport="http") == 3  # two scores + this scrape
        assert metric(text, "rmserve_in_flight_items", model="fake-rm") == 2
        assert (await expiring).status_code == 504
        gate.set()
        assert (await blocked).status_code == 200
        text = (await client.get("/metrics")).text
    assert metric(text, "rmserve_items_expired_total", model="fake-rm") == 1
    assert metric(text, "rmserve_requests_in_flight", transport="http") == 1


def test_grpc_calls_are_counted_per_method():
    with served() as s, s.channel() as channel:
        stub = s.stub(channel)
        stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(prompt="p", response="r")]), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.Score(pb.ScoreRequest(), timeout=5)
        text = httpx.get(s.rest_url + "/metrics").text
    score = "/rmserve.v1.RewardService/Score"
    assert metric(text, "rmserve_requests_total", endpoint=score, method="GRPC", status="200") == 1
    assert metric(text, "rmserve_requests_total", endpoint=score, method="GRPC", status="422") == 1
    assert metric(text, "rmserve_requests_in_flight", transport="grpc") == 0


# ── request ids and log lines ──────────────────────────────────────────────────────────────────


@pytest.fixture
def json_logs():
    """Log lines as parsed JSON objects (the root handler swapped for the test, then restored)."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


async def test_request_id_is_echoed_or_generated():
    async with asgi_client(make_app()) as client:
        r = await client.post("/v1/score", json=GOOD, headers={"x-request-id": "trace-4f1c.7:a/b"})
        assert r.headers["x-request-id"] == "trace-4f1c.7:a/b"
        generated = (await client.post("/v1/score", json=GOOD)).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert (await client.post("/v1/score", json=GOOD)).headers["x-request-id"] != generated
        insane = await client.post("/v1/score", json=GOOD, headers={"x-request-id": "x" * 300})
        assert re.fullmatch(r"[0-9a-f]{32}", insane.headers["x-request-id"])
        assert (await client.post("/v1/score", json={})).headers["x-request-id"]  # errors carry it too
        assert (await client.get("/healthz")).headers["x-request-id"]


async def test_every_log_line_of_a_request_carries_its_id(json_logs):
    async with asgi_client(make_app()) as client:
        bad = {"items": [{"prompt": "p", "response": "fine"}, {"prompt": "p", "response": "x " + RAISE_MARKER}]}
        r = await client.post("/v1/score", json=bad, headers={"x-request-id": "req-nan-1"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "req-nan-1"
        await client.post("/v1/score", json=GOOD, headers={"x-request-id": "req-ok-2"})
    lines = json_logs()
    mine = [line for line in lines if "req-nan-1" in line["request_id"]]
    loggers = {line["logger"] for line in mine}
    # the model's failure (engine worker thread), the 5xx warning (handler) and the access line
    assert {"rmserve.engine.isolation", "rmserve.server.errors", "rmserve.access"} <= loggers, mine
    access = next(line for line in mine if line["logger"] == "rmserve.access")
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/score", 500)
    assert access["duration_ms"] >= 0 and access["level"] == "INFO" and access["ts"].endswith("Z")
    assert any(line["request_id"] == "req-ok-2" and line["logger"] == "rmserve.access" for line in lines)
    # nothing about these requests was logged without an id
    during = [line for line in lines if line["logger"].startswith(("rmserve.access", "rmserve.server.errors"))]
    assert all(line["request_id"] != "-" for line in during), during


def test_text_logs_show_the_id(capsys):
    root = logging.getLogger()
    saved = list(root.handlers)
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    try:
        logging.getLogger("rmserve.test").info("hello")
        from rmserve.server.logs import request_id_var

        token = request_id_var.set("abc123")
        logging.getLogger("rmserve.test").warning("inside")
        request_id_var.reset(token)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
    out = stream.getvalue().splitlines()
    assert out[0].endswith("INFO rmserve.test [-]: hello") and "WARNING rmserve.test [abc123]: inside" in out[1]


def test_grpc_request_id_in_metadata_and_logs(json_logs):
    with served() as s, s.channel() as channel:
        stub = s.stub(channel)
        request = pb.ScoreRequest(items=[pb.ScoreItem(prompt="p", response=RAISE_MARKER)])
        call = stub.Score.future(request, timeout=5, metadata=(("x-request-id", "grpc-req-9"),))
        with pytest.raises(grpc.RpcError) as info:
            call.result()
        assert info.value.code() == grpc.StatusCode.INTERNAL  # the fake model raised: a backend error
        assert dict(call.initial_metadata())["x-request-id"] == "grpc-req-9"
        _, call = stub.Score.with_call(pb.ScoreRequest(items=[pb.ScoreItem(prompt="p", response="r")]), timeout=5)
        assert re.fullmatch(r"[0-9a-f]{32}", dict(call.initial_metadata())["x-request-id"])
    mine = [line for line in json_logs() if line["request_id"] == "grpc-req-9"]
    assert {"rmserve.engine.isolation", "rmserve.grpc"} <= {line["logger"] for line in mine}, mine
