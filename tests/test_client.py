"""rmserve-client against a real server on loopback (REST and gRPC, sync and async), and with injected
transports (retries, Retry-After, fallbacks) where a real server cannot misbehave on demand."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import threading

import httpx
import pytest
from PIL import Image
from rmserve_client import (
    AsyncRewardClient,
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    RewardClient,
    TransportError,
    Unauthenticated,
    Unavailable,
)
from rmserve_client._base import RetryPolicy

from tests.conftest import png_bytes, random_image
from tests.fakes import FakeRewardModel
from tests.grpc_serving import served
from tests.serving import free_port


@pytest.fixture(scope="module")
def fake_server():
    model = FakeRewardModel(max_length=256, heads=("reward", "attributes", "safety"))
    with served(model, max_items_per_request=16) as s:
        yield s


@pytest.fixture(scope="module")
def vl_server(tiny_models):
    """The tiny real Qwen2.5-VL (images through the real processor and vision tower)."""
    with served(tiny_models("qwen2_5_vl"), max_wait_ms=5.0, max_batch_size=8) as s:
        yield s


def _png(image: Image.Image) -> bytes:
    """What the client sends for a PIL image (PNG)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ── the same rewards through every path ────────────────────────────────────────────────────────


def test_same_rewards_across_rest_grpc_stream_sync_and_async(vl_server, tmp_path):
    images = [random_image(56, 56, seed) for seed in range(2)]
    path = tmp_path / "img1.png"
    path.write_bytes(_png(images[1]))
    items = [
        {"prompt": "What is shown?", "images": [images[0]], "response": "Noise, mostly red."},
        {"prompt": "What is shown?", "images": [images[0]], "response": "A cat on a mat."},
        {"prompt": "Describe it.", "images": [str(path)], "response": "Static."},  # a file path
        {"messages": [{"role": "user", "content": "Hi there"}], "response": "Hello! How can I help?"},
    ]
    # the raw REST API, as the reference

    def url(image):
        raw = open(image, "rb").read() if isinstance(image, str) else _png(image)
        return "data:image/png;base64," + base64.b64encode(raw).decode()

    body = {"items": [{**it, "images": [url(im) for im in it.get("images", [])]} for it in items]}
    want = [r["reward"] for r in httpx.post(f"{vl_server.rest_url}/v1/score", json=body, timeout=60).json()["items"]]

    got: dict[str, list[float]] = {}
    for name, url_ in (("rest", vl_server.rest_url), ("grpc", vl_server.grpc_url)):
        with RewardClient(url_) as client:
            got[f"sync-{name}"] = [r.reward for r in client.score(items)]
            got[f"sync-{name}-single"] = [client.score(**items[0]).reward]
            streamed = {r.id: r.reward for r in client.score_stream(items)}
            got[f"sync-{name}-stream"] = [streamed[str(i)] for i in range(len(items))]

        async def run(url_=url_, name=name):
            async with AsyncRewardClient(url_) as client:
                got[f"async-{name}"] = [r.reward for r in await client.score(items)]
                streamed = {r.id: r.reward async for r in client.score_stream(items)}
                got[f"async-{name}-stream"] = [streamed[str(i)] for i in range(len(items))]

        asyncio.run(run())
    for path_name, rewards in got.items():
        assert rewards == pytest.approx(want[: len(rewards)], abs=1e-6), path_name
    assert len({round(w, 3) for w in want}) > 1  # a real model: different items, different rewards


def test_typed_results_and_operations_on_both_transports(fake_server):
    image = png_bytes((8, 8), (0, 0, 255))
    for url in (fake_server.rest_url, fake_server.grpc_url):
        with RewardClient(url) as client:
            result = client.score(prompt="Hi", response="Hello.", returns=["reward", "attributes", "safety"])
            assert set(result.attributes) == {"helpfulness", "correctness"}
            assert set(result.safety.categories) == {"S1", "S10"} and result.safety.action is not None
            cmp = client.compare("What colour?", images=[image], response_a="Blue.", response_b="Red.")
            assert cmp.prob_a_better == pytest.approx(1 / (1 + math.exp(-(cmp.reward_a - cmp.reward_b))))
            ranked = client.rank("What colour?", images=[image], responses=["Blue.", "Red.", "Green."])
            assert sorted(e.index for e in ranked.ranking) == [0, 1, 2] and ranked.chosen_index is not None
            safety = client.safety([{"prompt": "Hi", "response": "Hello."}])
            assert safety[0].reward is not None and safety[0].action
            upload = client.upload_image(image)
            assert (upload.width, upload.height) == (8, 8) and upload.sha256 in client.images


def test_images_are_uploaded_once_then_referred_to_and_resent_when_lost(fake_server):
    sent: list[tuple[str, bytes]] = []

    class Recording(httpx.BaseTransport):
        def __init__(self):
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request):
            sent.append((request.url.path, request.read()))
            return self.inner.handle_request(request)

    image = random_image(16, 16, seed=7)
    group = [{"prompt": "What is shown?", "images": [image], "response": f"Answer {i}."} for i in range(4)]
    with RewardClient(fake_server.rest_url, transport=Recording()) as client:
        first = [r.reward for r in client.score(group)]
        assert [p for p, _ in sent] == ["/v1/images", "/v1/score"]  # one upload for the whole group
        assert sent[0][1] == _png(image)  # raw bytes, no base64
        assert b"sha256" in sent[1][1] and b"base64" not in sent[1][1]
        sent.clear()
        assert [r.reward for r in client.score(group)] == first
        assert [p for p, _ in sent] == ["/v1/score"]  # known: referred to at once
        fake_server.state.service.images.cache.clear()  # the server forgets (restart, eviction)
        sent.clear()
        assert [r.reward for r in client.score(group)] == first
        paths = [p for p, _ in sent]
        assert paths == ["/v1/score", "/v1/score"] and b"base64" in sent[1][1]  # refused ref, then inline


def test_stream_over_grpc_reports_item_errors_without_raising(fake_server):
    too_long = "x" * 100000
    items = [{"prompt": "Hi", "response": "Hello.", "id": "ok"}, {"prompt": "Hi", "response": too_long, "id": "bad"}]
    with RewardClient(fake_server.grpc_url) as client:
        results = {r.id: r for r in client.score_stream(items)}
    assert results["ok"].ok and not results["bad"].ok
    assert isinstance(results["bad"].error, InvalidRequest) and results["bad"].error.param == "response"
    assert math.isnan(results["bad"].reward)


# ── errors ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_errors_map_to_the_exception_tree(fake_server, transport):
    url = fake_server.rest_url if transport == "rest" else fake_server.grpc_url
    with RewardClient(url) as client:
        with pytest.raises(InvalidRequest) as info:
            client.score(prompt="Hi", response="x" * 100000)  # over max_length, no truncate
        assert info.value.param == "items.0.response" and info.value.type == "invalid_request_error"
        assert "items.0.response" not in info.value.message  # the path is in .param, not repeated
        with pytest.raises(InvalidRequest) as info:
            client.score(prompt="Hi", response="x", images=[b"not an image"])
        assert (info.value.param, info.value.code) == ("items.0.images.0", "invalid_image")
        with pytest.raises(ValueError, match="items.0.images.0"):
            client.score(prompt="Hi", response="x", images=[42])
        assert client.score(prompt="Hi", response="Fine.").reward  # still serving


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_api_key_and_deadlines(transport):
    gate = threading.Event()
    with served(FakeRewardModel(forward_gate=gate), api_key="k3y") as s:
        url = s.rest_url if transport == "rest" else s.grpc_url
        with RewardClient(url, api_key="wrong") as client, pytest.raises(Unauthenticated):
            client.score(prompt="Hi", response="x")
        with RewardClient(url, api_key="k3y") as client:
            with pytest.raises(DeadlineExceeded):
                client.score(prompt="Hi", response="x", timeout=0.3)  # the forward is held: nothing answers
            gate.set()
            assert client.score(prompt="Hi", response="x").reward
            assert s.state.engine.snapshot().queue_depth == 0


def test_nothing_listening_is_a_transport_error_or_unavailable():
    port = free_port()
    with RewardClient(f"http://127.0.0.1:{port}", max_retries=1) as client:
        client._sleep = lambda s: None
        with pytest.raises(TransportError):
            client.score(prompt="Hi", response="x", timeout=5)
    with RewardClient(f"grpc://127.0.0.1:{port}", max_retries=0) as client, pytest.raises(Unavailable):
        client.score(prompt="Hi", response="x", timeout=5)


# ── retries (injected transports: no server) ───────────────────────────────────────────────────

OK = {"items": [{"reward": 1.5}], "model": "m", "usage": {"items": 1, "prompt_tokens": 3, "total_tokens": 3}}


def _flaky(statuses: list[tuple[int, dict[str, str]]]):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= len(statuses):
            status, headers = statuses[len(calls) - 1]
            body = {"error": {"message": "busy", "type": "overloaded_error", "param": None, "code": "queue_full"}}
            return httpx.Response(status, json=body, headers=headers)
        return httpx.Response(200, json=OK)

    return handler, calls


def test_retries_honour_retry_after():
    handler, calls = _flaky([(429, {"Retry-After": "3"}), (503, {"Retry-After": "2"})])
    slept: list[float] = []
    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler)) as client:
        client._sleep = slept.append
        assert client.score(prompt="Hi", response="x", timeout=30).reward == 1.5
    assert len(calls) == 3 and 3.0 <= slept[0] <= 3.3 and 2.0 <= slept[1] <= 2.2
    timeouts = [int(c.headers["x-request-timeout-ms"]) for c in calls]
    assert timeouts[0] <= 30_000 and timeouts == sorted(timeouts, reverse=True)  # the server hears the remainder


def test_backoff_without_retry_after_is_exponential_with_jitter_and_bounded():
    handler, calls = _flaky([(503, {})] * 4)
    slept: list[float] = []
    with RewardClient(
        "http://rm.test", transport=httpx.MockTransport(handler), retry=RetryPolicy(4, backoff=0.5, max_backoff=1.5)
    ) as client:
        client._sleep = slept.append
        assert client.score(prompt="Hi", response="x").reward == 1.5
    caps = [0.5, 1.0, 1.5, 1.5]
    assert len(slept) == 4 and all(0 <= s <= cap for s, cap in zip(slept, caps, strict=True))


def test_gives_up_when_retry_after_passes_the_deadline_or_retries_run_out():
    handler, calls = _flaky([(429, {"Retry-After": "30"})])
    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler)) as client:
        client._sleep = lambda s: pytest.fail("must not sleep past the deadline")
        with pytest.raises(Overloaded) as info:
            client.score(prompt="Hi", response="x", timeout=5)
    assert info.value.retry_after == 30 and len(calls) == 1
    handler, calls = _flaky([(429, {})] * 10)
    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler), max_retries=2) as client:
        client._sleep = lambda s: None
        with pytest.raises(Overloaded):
            client.score(prompt="Hi", response="x")
    assert len(calls) == 3


def test_async_retries_and_grpc_style_errors_through_an_injected_transport():
    class Transport:  # an rmserve transport: request(op, body, timeout) -> REST-shaped dict
        def __init__(self):
            self.calls = 0

        async def request(self, op, body, *, timeout, route=None):
            self.calls += 1
            if self.calls == 1:
                raise Overloaded("busy", status="RESOURCE_EXHAUSTED", retry_after=2.0)
            return OK

        async def aclose(self):
            pass

    slept: list[float] = []

    async def run():
        async with AsyncRewardClient("grpc://rm.test:1", transport=Transport()) as client:
            async def sleep(s):
                slept.append(s)

            client._sleep = sleep
            return await client.score(prompt="Hi", response="x")

    assert asyncio.run(run()).reward == 1.5 and 2.0 <= slept[0] <= 2.2


def test_without_an_upload_route_images_go_inline_once_then_by_reference():
    seen: list[tuple[str, str]] = []
    keeps_inline_images = True

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/images":
            seen.append(("upload", ""))
            return httpx.Response(404, json={"error": {"message": "Not Found", "type": "not_found_error"}})
        image = json.loads(request.read())["items"][0]["images"][0]
        if isinstance(image, dict):
            seen.append(("score", "ref"))
            if not keeps_inline_images:  # e.g. image_cache_mb=0: a reference is never found
                error = {"message": "no such image", "type": "invalid_request_error",
                         "param": "items.0.images.0", "code": "image_not_found"}
                return httpx.Response(422, json={"error": error})
        else:
            assert image.startswith("data:image/png;base64,")
            seen.append(("score", "inline"))
        return httpx.Response(200, json=OK)

    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler)) as client:
        for _ in range(2):
            client.score(prompt="Hi", response="x", images=[png_bytes()])
        assert seen == [("upload", ""), ("score", "inline"), ("score", "ref")]  # asked once; inline, then ref
        keeps_inline_images = False
        seen.clear()
        for _ in range(2):
            client.score(prompt="Hi", response="x", images=[png_bytes()])
        assert seen == [("score", "ref"), ("score", "inline"), ("score", "inline")]  # learnt: inline only


def test_grpc_error_metadata_fills_the_exception(fake_server):
    with RewardClient(fake_server.grpc_url) as client, pytest.raises(InvalidRequest) as info:
        client.score([{"prompt": "x", "response": "y"}] * 17)
    assert info.value.status == "INVALID_ARGUMENT" and info.value.code == "too_many_items"
    assert info.value.param == "items"

