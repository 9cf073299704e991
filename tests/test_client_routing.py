"""The routing key (x-rmserve-group): set by the client on every request so that a proxy hashing on it keeps
a GRPO group on one replica; uploads go where the requests using them go; an image reference that lands
on a replica without the image is resent inline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import grpc
import httpx
import pytest
from rmserve_client import RewardClient
from rmserve_client._base import ROUTING_HEADER, RetryPolicy, routing_key
from rmserve_client._images import ImageRef, load_image
from rmserve_client.proto import reward_pb2 as pb

from tests.conftest import png_bytes, random_image
from tests.fakes import FakeRewardModel
from tests.grpc_serving import served

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK = {"items": [{"reward": 0.5}], "model": "m", "usage": {"items": 1, "prompt_tokens": 1, "total_tokens": 2},
      "reward_a": 1.0, "reward_b": 0.0, "prob_a_better": 0.73, "ranking": [{"index": 0, "reward": 1.0}]}


def _recording_client(**options) -> tuple[RewardClient, list[tuple[str, str | None]]]:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get(ROUTING_HEADER)))
        if request.url.path == "/v1/images":
            digest = hashlib.sha256(request.read()).hexdigest()
            return httpx.Response(200, json={"sha256": digest, "width": 8, "height": 8, "bytes": 1})
        return httpx.Response(200, json=OK)

    return RewardClient("http://rm.test", transport=httpx.MockTransport(handler), **options), seen


def test_a_group_shares_one_key_and_its_upload_carries_it():
    client, seen = _recording_client()
    image = png_bytes()
    with client:
        for i in range(8):  # a GRPO group, one response per request
            client.score(prompt="What is shown?", images=[image], response=f"answer {i}")
        client.score(prompt="What colour is it?", images=[image], response="red")
        client.score(prompt="What is shown?", images=[png_bytes(color=(0, 0, 255))], response="blue")
        client.score(messages=[{"role": "user", "content": "What is shown?"}], images=[image], response="x")
    assert seen[0][0] == "/v1/images"  # uploaded once, routed like the group's requests
    group_keys = {key for _, key in seen[:9]}
    assert len(group_keys) == 1 and None not in group_keys, seen[:9]
    others = [key for path, key in seen[9:] if path == "/v1/score"]
    assert len(others) == 3 and len({*others, *group_keys}) == 4  # another prompt / image / message form
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in group_keys)


def test_the_key_is_the_users_group_when_given_and_off_on_request():
    client, seen = _recording_client()
    with client:
        client.score([{"prompt": "a", "response": "x", "group": "g-17"}])
        client.score([{"prompt": "b", "response": "y", "group": "g-17"}])
        client.compare(prompt="a", response_a="x", response_b="y")
        client.rank(prompt="a", responses=["x", "y"])
    assert seen[0][1] == seen[1][1]  # the group id, whatever the prompt
    assert seen[2][1] == seen[3][1] == routing_key({"prompt": "a"}) != seen[0][1]
    client, seen = _recording_client(routing=False)
    with client:
        client.score(prompt="a", response="x")
    assert seen == [("/v1/score", None)]


def test_key_is_the_same_for_image_bytes_and_their_reference():
    data = load_image(png_bytes())
    assert routing_key({"items": [{"prompt": "p", "images": [data]}]}) == routing_key(
        {"items": [{"prompt": "p", "images": [ImageRef(data.sha256)], "response": "other"}]}
    )


def test_grpc_metadata_carries_the_key():
    seen: list[str | None] = []

    class Recorder(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            seen.append(dict(details.metadata or ()).get(ROUTING_HEADER))
            return continuation(details, request)

    from rmserve_client._grpc import GrpcTransport

    with served(FakeRewardModel()) as server:
        channel = grpc.intercept_channel(grpc.insecure_channel(server.grpc_target), Recorder())
        transport = GrpcTransport(server.grpc_url, channel=channel)
        with RewardClient(server.grpc_url, transport=transport) as client:
            client.score(prompt="What is shown?", response="a")
            client.score(prompt="What is shown?", response="b")
    assert seen[0] == seen[1] == routing_key({"prompt": "What is shown?"})


class KeyHashing(httpx.BaseTransport):
    """Two replicas behind a proxy that hashes x-rmserve-group (what nginx/HAProxy do; test-only)."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.inner = httpx.HTTPTransport()
        self.log: list[tuple[int, str, int]] = []  # (replica, path, status)

    def replica(self, key: str) -> int:
        return int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(self.urls)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        k = self.replica(request.headers[ROUTING_HEADER])
        url = httpx.URL(self.urls[k]).copy_with(path=request.url.path)
        response = self.inner.handle_request(
            httpx.Request(request.method, url, headers=request.headers, content=request.read())
        )
        response.read()
        self.log.append((k, request.url.path, response.status_code))
        return response


@pytest.mark.parametrize("via_upload", [True, False])
def test_an_image_reference_that_reaches_another_replica_is_resent_inline(via_upload):
    model = FakeRewardModel()
    with served(model) as one, served(FakeRewardModel()) as two:
        proxy = KeyHashing([one.rest_url, two.rest_url])
        image = random_image(24, 24, seed=3)
        prompts = [f"Question {i} about the image?" for i in range(20)]
        keys = [routing_key({"items": [{"prompt": p, "images": [load_image(image)]}]}) for p in prompts]
        first = prompts[0]
        other = next(p for p, k in zip(prompts, keys, strict=True) if proxy.replica(k) != proxy.replica(keys[0]))
        with RewardClient("http://proxy.test", transport=proxy, upload_images=via_upload) as client:
            client.score(prompt=first, images=[image], response="a")
            got = client.score(prompt=other, images=[image], response="b").reward  # the client thinks it is held
        with RewardClient(one.rest_url, upload_images=False) as direct:
            expected = direct.score(prompt=other, images=[image], response="b").reward
    home, away = proxy.log[0][0], 1 - proxy.log[0][0]
    if via_upload:  # the reference is refused (image_not_found) on the other replica, then sent inline
        expected_log = [(home, "/v1/images", 200), (home, "/v1/score", 200), (away, "/v1/score", 422),
                        (away, "/v1/score", 200)]
    else:  # upload_images=False: always inline, nothing to refuse
        expected_log = [(home, "/v1/score", 200), (away, "/v1/score", 200)]
    assert proxy.log == expected_log
    assert got == pytest.approx(expected, abs=1e-6)


def test_connection_resets_are_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset by peer", request=request)
        if len(calls) == 2:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json=OK)

    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler), retry=RetryPolicy(4, 0.01)) as c:
        assert c.score(prompt="p", response="r").reward == 0.5
    assert calls == ["/v1/score"] * 3


def test_grpc_ring_hash_keeps_a_group_on_one_backend_without_a_proxy():
    """rmserve_client._grpc.group_hash_channel over three servers (what a headless Service gives)."""
    env = {**os.environ, "GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY": "true"}
    out = subprocess.run([sys.executable, "-m", "tests.grpc_ring_hash"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    per_group = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(sorted(calls["unary"]) == [0, 0, 4] for calls in per_group.values()), per_group
    assert len({calls["unary"].index(4) for calls in per_group.values()}) >= 2, per_group  # spread over backends
    # Each group's ScoreStream goes where its unary calls went (without the key: a random backend per stream).
    assert all(calls["stream"] == [int(n == 4) for n in calls["unary"]] for calls in per_group.values()), per_group


def test_group_hash_channel_refuses_to_start_without_grpcs_flag(monkeypatch):
    """Without the flag grpcio ignores requestHashHeader and hashes every call at random: no affinity, silently."""
    from rmserve_client._grpc import group_hash_channel

    monkeypatch.delenv("GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY", raising=False)
    with pytest.raises(RuntimeError, match="GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY=true"):
        group_hash_channel("ipv4:127.0.0.1:1")


class _MetadataRecorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """(RPC method, x-rmserve-group) of every call a sync channel makes."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []

    def _record(self, details):
        self.seen.append((details.method.rsplit("/", 1)[-1], dict(details.metadata or ()).get(ROUTING_HEADER)))

    def intercept_unary_unary(self, continuation, details, request):
        self._record(details)
        return continuation(details, request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        self._record(details)
        return continuation(details, request_iterator)


def _streams() -> tuple[list[dict], list[dict], dict[str, str]]:
    """A GRPO group as one stream, and a stream that starts with group B and then mixes in group C."""
    image_a, image_c = png_bytes(color=(1, 2, 3)), png_bytes(color=(4, 5, 6))
    group_a = [{"prompt": "What is shown?", "images": [image_a], "response": f"answer {i}"} for i in range(3)]
    mixed = [{"prompt": "Count them.", "response": "two", "group": "B"},
             {"prompt": "What colour?", "images": [image_c], "response": "red"}]
    keys = {"A": routing_key({"items": [{"prompt": "What is shown?", "images": [load_image(image_a)]}]}),
            "B": routing_key({"items": [{"group": "B"}]}),
            "C": routing_key({"items": [{"prompt": "What colour?", "images": [load_image(image_c)]}]})}
    return group_a, mixed, keys


def test_grpc_score_stream_carries_its_first_items_key_and_uploads_follow_it():
    """gRPC sends metadata once, at the start of the call: a ScoreStream is routed by its first item (and the
    images its later items upload go to that same replica, where the stream will refer to them)."""
    from rmserve_client._grpc import GrpcTransport

    group_a, mixed, keys = _streams()
    recorder = _MetadataRecorder()
    with served(FakeRewardModel()) as server:
        channel = grpc.intercept_channel(grpc.insecure_channel(server.grpc_target), recorder)
        with RewardClient(server.grpc_url, transport=GrpcTransport(server.grpc_url, channel=channel)) as client:
            assert all(r.ok for r in client.score_stream(group_a))
            assert all(r.ok for r in client.score_stream(mixed))
        channel = grpc.intercept_channel(grpc.insecure_channel(server.grpc_target), off := _MetadataRecorder())
        with RewardClient(server.grpc_url, transport=GrpcTransport(server.grpc_url, channel=channel),
                          routing=False, upload_images=False) as client:
            assert all(r.ok for r in client.score_stream(group_a))
    # (the call starts first; its items, and the uploads they need, follow)
    assert recorder.seen == [("ScoreStream", keys["A"]), ("UploadImage", keys["A"]),
                             ("ScoreStream", keys["B"]), ("UploadImage", keys["B"])], recorder.seen
    assert off.seen == [("ScoreStream", None)]


def test_async_grpc_score_stream_carries_its_first_items_key(monkeypatch):
    import asyncio

    from rmserve_client import AsyncRewardClient

    seen: list[tuple[str, str | None]] = []

    def record(details):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        seen.append((method.rsplit("/", 1)[-1], dict(details.metadata or ()).get(ROUTING_HEADER)))

    class Unary(grpc.aio.UnaryUnaryClientInterceptor):  # grpc.aio files an interceptor under one kind only
        async def intercept_unary_unary(self, continuation, details, request):
            record(details)
            return await continuation(details, request)

    class Stream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, request_iterator):
            record(details)
            return await continuation(details, request_iterator)

    real_channel = grpc.aio.insecure_channel
    monkeypatch.setattr(grpc.aio, "insecure_channel",
                        lambda target, **kw: real_channel(target, interceptors=[Unary(), Stream()], **kw))
    group_a, mixed, keys = _streams()

    async def rollouts(items):  # rollouts as they finish
        for item in items:
            await asyncio.sleep(0)
            yield item

    async def run(url):
        async with AsyncRewardClient(url) as client:
            assert all([r.ok async for r in client.score_stream(rollouts(group_a))])
            assert all([r.ok async for r in client.score_stream(mixed)])
            assert [r async for r in client.score_stream(rollouts([]))] == []  # nothing to route: no call

    with served(FakeRewardModel()) as server:
        asyncio.run(run(server.grpc_url))
    assert seen == [("ScoreStream", keys["A"]), ("UploadImage", keys["A"]),
                    ("ScoreStream", keys["B"]), ("UploadImage", keys["B"])], seen


def test_a_group_id_routes_and_stays_out_of_the_body():
    """ScoreItemIn.group is not part of the contract (servers ignore it): the client turns the caller's group
    into the routing key and sends the item without it (BaseClient._wire_items: REST and gRPC bodies alike)."""
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((json.loads(request.read()), request.headers.get(ROUTING_HEADER)))
        return httpx.Response(200, json=OK)

    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler)) as client:
        client.score(prompt="a", response="x", group="g-17")
        client.safety([{"prompt": "a", "response": "x", "group": "g-17"}])
    assert all("group" not in body["items"][0] for body, _ in bodies), bodies
    assert bodies[0][1] == bodies[1][1] == routing_key({"group": "g-17"})


def test_servers_accept_and_ignore_a_group_from_older_clients():
    """An old client's body with `group` still validates (no 422) on both transports and scores as without
    it; the OpenAPI schema marks the field deprecated."""
    item = {"prompt": "What is shown?", "response": "A cat."}
    with served() as s, s.channel() as channel:
        s.wait_ready()
        plain = httpx.post(s.rest_url + "/v1/score", json={"items": [item]})
        tagged = httpx.post(s.rest_url + "/v1/score", json={"items": [{**item, "group": "g-17"}]})
        assert plain.status_code == tagged.status_code == 200, tagged.text
        assert tagged.json()["items"] == plain.json()["items"]
        stub = s.stub(channel)
        grpc_plain = stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(**item)]), timeout=10)
        grpc_tagged = stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(**item, group="g-17")]), timeout=10)
        assert grpc_tagged.items[0].reward == grpc_plain.items[0].reward == plain.json()["items"][0]["reward"]
        schema = httpx.get(s.rest_url + "/openapi.json").json()["components"]["schemas"]
        assert schema["ScoreItemIn"]["properties"]["group"]["deprecated"] is True
