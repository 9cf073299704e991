"""The gRPC server (rmserve/server/rpc/) beside REST, over the same engine.

Health follows readiness, reflection lists the service, Score/ScoreStream give the REST scores,
deadlines drop queued work, bad input is INVALID_ARGUMENT naming the field (and the server keeps
serving), overload is RESOURCE_EXHAUSTED with retry-after, the API key is enforced.
"""

from __future__ import annotations

import queue
import threading
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rmserve_client.proto import reward_pb2 as pb

from tests.conftest import data_url, png_bytes
from tests.fakes import FakeRewardModel
from tests.grpc_serving import served
from tests.images_util import png_bomb

SERVICE = "rmserve.v1.RewardService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _item(response: str = "A red square.", **fields) -> pb.ScoreItem:
    fields.setdefault("prompt", "Describe the image.")
    return pb.ScoreItem(response=response, **fields)


def _health(channel, service: str = SERVICE) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _meta(error: grpc.RpcError) -> dict[str, str]:
    return {m.key: m.value for m in error.trailing_metadata() or ()}


@pytest.fixture(scope="module")
def server():
    model = FakeRewardModel(max_length=256, heads=("reward", "attributes", "safety"))
    with served(model, max_items_per_request=4, max_images_per_item=2, max_image_pixels=10_000) as s:
        yield s


# ── health, reflection, lifecycle ──────────────────────────────────────────────────────────────


def test_health_is_serving_only_once_the_model_is_ready():
    gate = threading.Event()
    with served(FakeRewardModel(warmup_gate=gate), wait=False) as s, s.channel() as channel:
        end = time.monotonic() + 10
        while s.state.grpc is None or s.state.grpc.port is None:  # the gRPC server is up before the model
            assert time.monotonic() < end
            time.sleep(0.01)
        assert _health(channel) == NOT_SERVING and _health(channel, "") == NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            s.stub(channel).Score(pb.ScoreRequest(items=[_item()]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading" in info.value.details()
        gate.set()
        end = time.monotonic() + 10
        while _health(channel) != SERVING:
            assert time.monotonic() < end, "health never became SERVING"
            time.sleep(0.02)
        assert _health(channel, "") == SERVING
        assert s.stub(channel).Score(pb.ScoreRequest(items=[_item()]), timeout=5).items[0].reward


def test_shutdown_drains_running_calls_and_stops_serving():
    gate = threading.Event()
    with served(FakeRewardModel(forward_gate=gate), drain_timeout_s=10) as s, s.channel() as channel:
        stub = s.stub(channel)
        running = stub.Score.future(pb.ScoreRequest(items=[_item()]), timeout=20)
        end = time.monotonic() + 5
        while s.state.engine.snapshot().in_flight == 0:
            assert time.monotonic() < end
            time.sleep(0.01)
        s.server.should_exit = True  # shutdown starts while the call runs
        end = time.monotonic() + 5
        while not s.state.draining:
            assert time.monotonic() < end
            time.sleep(0.01)
        # gRPC stays up until the admitted work is done: health reads NOT_SERVING (never a CANCELLED
        # from a server mid-stop) and new work is refused with UNAVAILABLE and a retry hint.
        assert _health(channel) == NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:
            stub.Score(pb.ScoreRequest(items=[_item()]), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry-after" in _meta(refused.value)
        assert not running.done()
        gate.set()
        assert running.result().items[0].reward  # the running call finished within the grace


def test_reflection_lists_the_service(server):
    with server.channel() as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        assert SERVICE in services and "grpc.health.v1.Health" in services
        proto = db.FindFileContainingSymbol(SERVICE)
        assert proto.name == "rmserve/v1/reward.proto"
        assert {m.name for m in proto.service[0].method} >= {"Score", "ScoreStream", "Critique", "UploadImage"}


# ── scoring ────────────────────────────────────────────────────────────────────────────────────


def test_score_equals_rest_and_echoes_ids(server):
    image = png_bytes((8, 8), (10, 200, 30))
    rest_items = [
        {"prompt": "What colour?", "images": [data_url(image)], "response": "Green."},
        {"messages": [{"role": "user", "content": "Hi"}], "response": "Hello!"},
    ]
    grpc_items = [
        pb.ScoreItem(id="a", prompt="What colour?", images=[pb.Image(data=image)], response="Green."),
        pb.ScoreItem(id="b", messages=[pb.Message(role="user", content="Hi")], response="Hello!"),
    ]
    returns = ["reward", "attributes", "safety"]
    rest = httpx.post(f"{server.rest_url}/v1/score", json={"items": rest_items, "return": returns}, timeout=10)
    assert rest.status_code == 200, rest.text
    with server.channel() as channel:
        request = pb.ScoreRequest(items=grpc_items, **{"return": [pb.OUTPUT_REWARD, pb.OUTPUT_ATTRIBUTES,
                                                                   pb.OUTPUT_SAFETY]})
        response, call = server.stub(channel).Score.with_call(request, timeout=10)
    assert [r.id for r in response.items] == ["a", "b"]
    for want, got in zip(rest.json()["items"], response.items, strict=True):
        assert got.reward == pytest.approx(want["reward"], abs=1e-9)
        assert dict(got.attributes) == pytest.approx(want["attributes"])
        assert dict(got.safety) == pytest.approx(want["safety"])
        assert got.safety_action == want.get("safety_action", "")
    assert response.model == "fake-rm" and response.usage.items == 2
    assert "x-queue-time-ms" in {m.key for m in call.trailing_metadata()}


def test_score_stream_answers_as_items_finish_and_survives_bad_items(server):
    requests: queue.Queue = queue.Queue()

    def feed():
        while (item := requests.get()) is not None:
            yield item

    with server.channel() as channel:
        results = server.stub(channel).ScoreStream(feed(), timeout=20)
        requests.put(_item("First.", id="1"))
        first = next(results)  # answered before the next item is even sent
        assert first.id == "1" and not first.HasField("error")
        requests.put(_item("x" * 100000, id="2"))
        bad = next(results)
        assert bad.id == "2" and bad.error.type == "invalid_request_error"
        assert bad.error.param == "response" and "max_length" in bad.error.message
        requests.put(_item(id="3", images=[pb.Image(data=b"not an image")]))
        bad = next(results)
        assert (bad.id, bad.error.param, bad.error.code) == ("3", "images.0", "invalid_image")
        for i in range(4, 8):
            requests.put(_item(f"Answer {i}.", id=str(i), **{"return": [pb.OUTPUT_ATTRIBUTES]}))
        requests.put(None)
        rest = list(results)
    assert sorted(r.id for r in rest) == [str(i) for i in range(4, 8)]
    assert all(not r.HasField("error") and r.attributes for r in rest)
    unary = httpx.post(
        f"{server.rest_url}/v1/score",
        json={"items": [{"prompt": "Describe the image.", "response": f"Answer {i}."} for i in range(4, 8)]},
        timeout=10,
    ).json()["items"]
    by_id = {r.id: r.reward for r in rest}
    assert [by_id[str(i)] for i in range(4, 8)] == pytest.approx([u["reward"] for u in unary], abs=1e-9)


# ── deadlines, overload, auth ──────────────────────────────────────────────────────────────────


def test_a_1ms_deadline_is_deadline_exceeded_and_leaves_nothing_queued():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    with served(model) as s, s.channel() as channel:
        stub, engine = s.stub(channel), s.state.engine
        blocker = stub.Score.future(pb.ScoreRequest(items=[_item("Blocker.")]), timeout=20)
        end = time.monotonic() + 5
        while not model.batches or model.batches[-1] != [len(b"Describe the image.") + 1 + 8]:
            assert time.monotonic() < end, model.batches  # the worker is now stuck in the blocker's forward
            time.sleep(0.01)
        for timeout in (0.001, 0.2):  # expired on arrival / expired while queued behind the blocker
            with pytest.raises(grpc.RpcError) as info:
                stub.Score(pb.ScoreRequest(items=[_item("Too late.")]), timeout=timeout)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        end = time.monotonic() + 5
        while (engine.snapshot().queue_depth, engine.snapshot().in_flight) != (0, 1):
            assert time.monotonic() < end, engine.snapshot()
            time.sleep(0.01)
        gate.set()
        assert blocker.result().items[0].reward
        end = time.monotonic() + 5
        while engine.snapshot().in_flight:
            assert time.monotonic() < end
            time.sleep(0.01)
        assert len(model.batches) == 1 and len(model.batches[0]) == 1  # the blocker's; the late calls never ran
        assert stub.Score(pb.ScoreRequest(items=[_item()]), timeout=5).items[0].reward


def test_overload_is_resource_exhausted_with_retry_after():
    gate = threading.Event()
    with served(FakeRewardModel(forward_gate=gate), max_queue_items=2, max_items_per_request=2) as s:
        with s.channel() as channel:
            stub = s.stub(channel)
            blocker = stub.Score.future(pb.ScoreRequest(items=[_item(), _item("Two.")]), timeout=20)
            end = time.monotonic() + 5
            while s.state.engine.snapshot().in_flight < 2:
                assert time.monotonic() < end
                time.sleep(0.01)
            with pytest.raises(grpc.RpcError) as info:
                stub.Score(pb.ScoreRequest(items=[_item()]), timeout=5)
            gate.set()
            blocker.result()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    meta = _meta(info.value)
    assert meta["rmserve-error-type"] == "overloaded_error" and int(meta["retry-after"]) >= 1


def test_api_key_is_required_over_grpc_and_rest():
    with served(api_key="s3cret") as s, s.channel() as channel:
        stub = s.stub(channel)
        request = pb.ScoreRequest(items=[_item()])
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as info:
                stub.Score(request, timeout=5, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.Score(request, timeout=5, metadata=(("authorization", "Bearer s3cret"),)).items[0].reward
        assert _health(channel) == SERVING  # health needs no key
        body = {"items": [{"prompt": "x", "response": "y"}]}
        assert httpx.post(f"{s.rest_url}/v1/score", json=body).status_code == 401
        ok = httpx.post(f"{s.rest_url}/v1/score", json=body, headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(f"{s.rest_url}/readyz").status_code == 200


# ── bad input ──────────────────────────────────────────────────────────────────────────────────

BAD = [
    # (id, request, param, code)
    ("malformed image bytes", [_item(images=[pb.Image(data=b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)])],
     "items.0.images.0", "invalid_image"),
    ("not an image", [_item(), _item(images=[pb.Image(data=b"GIF89a but not really" * 4)])],
     "items.1.images.0", "invalid_image"),
    ("empty image", [_item(images=[pb.Image(data=b"")])], "items.0.images.0", "invalid_base64"),
    ("no image source", [_item(images=[pb.Image()])], "items.0.images.0", "invalid_image"),
    ("pixel bomb", [_item(images=[pb.Image(data=png_bomb(30000, 30000))])], "items.0.images.0", "image_too_large"),
    ("over the pixel limit", [_item(images=[pb.Image(data=png_bytes((300, 300)))])], "items.0.images.0",
     "image_too_large"),
    ("unknown image ref", [_item(images=[pb.Image(sha256="ab" * 32)])], "items.0.images.0", "image_not_found"),
    ("response too long", [_item("x" * 100000)], "items.0.response", "too_long"),
    ("too many items", [_item()] * 5, "items", "too_many_items"),
    ("too many images", [_item(images=[pb.Image(data=png_bytes())] * 3)], "items.0.images", "too_many_images"),
    ("response too long", [_item("word " * 100)], "items.0.response", "too_long"),
    ("prompt too long", [_item(prompt="long " * 100)], "items.0.prompt", "too_long"),
    ("prompt and messages", [_item(messages=[pb.Message(role="user", content="x")])], "items.0", "value_error"),
    ("neither prompt nor messages", [pb.ScoreItem(response="x")], "items.0", "value_error"),
    ("bad role", [pb.ScoreItem(messages=[pb.Message(role="robot", content="x")], response="y")],
     "items.0.messages.0.role", "literal_error"),
    ("stream-only return", [_item(**{"return": [pb.OUTPUT_REWARD]})], "items.0.return", "invalid_output"),
    ("no items", [], "items", "too_short"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_invalid_argument_naming_the_field(server, case):
    _, items, param, code = case
    with server.channel() as channel:
        stub = server.stub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(pb.ScoreRequest(items=items), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert info.value.details().startswith(param), info.value.details()
        meta = _meta(info.value)
        assert (meta.get("rmserve-error-param"), meta.get("rmserve-error-code")) == (param, code)
        assert meta["rmserve-error-type"] == "invalid_request_error"
        assert stub.Score(pb.ScoreRequest(items=[_item()]), timeout=5).items[0].reward  # still serving


@pytest.mark.parametrize(
    "request_, param, code",
    [
        (pb.ScoreRequest(items=[_item()], model="gpt-9"), "model", "model_not_found"),
        (pb.ScoreRequest(items=[_item()], **{"return": [7]}), "return.0", "invalid_output"),
        (pb.ScoreRequest(items=[_item(ground_truth="4")]), "items.0.ground_truth", "verifier_required"),
        (pb.ScoreRequest(items=[_item()], verifier=pb.Verifier(name="vibes")), "verifier.name", "literal_error"),
    ],
    ids=["wrong model", "unknown output", "ground truth without verifier", "unknown verifier"],
)
def test_bad_request_fields_name_the_field(server, request_, param, code):
    with server.channel() as channel, pytest.raises(grpc.RpcError) as info:
        server.stub(channel).Score(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (_meta(info.value).get("rmserve-error-param"), _meta(info.value).get("rmserve-error-code")) == (param, code)


# ── the other RPCs: the REST answers, over gRPC ────────────────────────────────────────────────


def _rest(server, path: str, body: dict) -> dict:
    r = httpx.post(f"{server.rest_url}{path}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_compare_rank_safety_and_upload_match_rest(server):
    image = png_bytes((8, 8), (0, 0, 255))
    with server.channel() as channel:
        stub = server.stub(channel)
        uploaded = stub.UploadImage(pb.UploadImageRequest(data=image), timeout=10)
        assert (uploaded.width, uploaded.height, uploaded.bytes) == (8, 8, len(image))
        ref = pb.Image(sha256=uploaded.sha256)
        conv = {"prompt": "What colour?", "images": [{"sha256": uploaded.sha256}]}

        got = stub.Compare(pb.CompareRequest(prompt="What colour?", images=[ref], response_a="Blue.",
                                             response_b="Red.", beta0=0.2), timeout=10)
        want = _rest(server, "/v1/compare", {**conv, "response_a": "Blue.", "response_b": "Red.", "beta0": 0.2})
        for key in ("reward_a", "reward_b", "prob_a_better", "margin", "beta"):
            assert getattr(got, key) == pytest.approx(want[key], abs=1e-9), key
        assert got.usage.items == want["usage"]["items"]

        responses = ["Blue.", "Red.", "It is blue.", "Green?"]
        got = stub.Rank(pb.RankRequest(prompt="What colour?", images=[ref], responses=responses, min_margin=0.5),
                        timeout=10)
        want = _rest(server, "/v1/rank", {**conv, "responses": responses, "min_margin": 0.5})
        assert [(r.index, pytest.approx(r.reward)) for r in got.ranking] == [
            (r["index"], r["reward"]) for r in want["ranking"]
        ]
        assert (got.chosen_index, got.rejected_index) == (want["chosen_index"], want["rejected_index"])

        items = [pb.SafetyItem(prompt="Hi", response="Hello."), pb.SafetyItem(prompt="Hi", response="Go away.")]
        got = stub.Safety(pb.SafetyRequest(items=items), timeout=10)
        want = _rest(server, "/v1/safety", {"items": [{"prompt": "Hi", "response": "Hello."},
                                                      {"prompt": "Hi", "response": "Go away."}]})
        assert dict(got.taxonomy) == want["taxonomy"]
        for g, w in zip(got.items, want["items"], strict=True):
            assert dict(g.categories) == pytest.approx(w["categories"])
            assert (g.flagged, list(g.flagged_categories), g.action) == (w["flagged"], w["flagged_categories"],
                                                                          w["action"])
            assert g.reward == pytest.approx(w["reward"]) and g.raw_reward == pytest.approx(w["raw_reward"])

        with pytest.raises(grpc.RpcError) as info:
            stub.Compare(pb.CompareRequest(prompt="x", response_a="a", response_b="x" * 100000), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _meta(info.value)["rmserve-error-param"] == "response_b"
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadImage(pb.UploadImageRequest(data=png_bomb(30000, 30000)), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _meta(info.value)["rmserve-error-code"] == "image_too_large"


@pytest.fixture(scope="module")
def critique_server(tiny_models):
    from rmserve.models.tiny import build_tiny_reward_model

    model = build_tiny_reward_model("qwen2")
    model.extra_config = {**getattr(model, "extra_config", {}), "critique": {"max_new_tokens": 6}}
    with served(model, max_wait_ms=1.0) as s:
        yield s


def test_critique_streams_text_then_the_reward(critique_server):
    with critique_server.channel() as channel:
        stub = critique_server.stub(channel)
        chunks = list(stub.Critique(pb.CritiqueRequest(prompt="What is 2+2?", response="4"), timeout=60))
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Critique(pb.CritiqueRequest(prompt="What is 2+2?", response=" "), timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _meta(info.value)["rmserve-error-param"] == "response"
    *text, last = chunks
    assert last.done and not any(c.done for c in text)
    assert "".join(c.delta for c in text).strip() == last.critique.strip()  # the final one is stripped
    want = _rest(critique_server, "/v1/critique", {"prompt": "What is 2+2?", "response": "4"})
    assert last.critique == want["critique"]
    assert last.reward == pytest.approx(want["reward"], abs=1e-5)
    assert last.usage.completion_tokens == want["usage"]["completion_tokens"]


# ── the CLI: one process, two ports ────────────────────────────────────────────────────────────


def test_rmserve_serve_runs_rest_and_grpc_in_one_process(default_model_dir):
    import os
    import signal
    import subprocess
    import sys

    from rmserve_client import RewardClient

    from rmserve import cli
    from tests.serving import free_port

    args = cli.build_parser().parse_args(["serve", "--port", "8000", "--grpc-port", "50051"])
    assert (args.port, args.grpc_port) == (8000, 50051)
    assert cli.main(["serve", "--port", "8000", "--grpc-port", "8000"]) == 2  # same port twice: refused

    port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "rmserve", "serve", "--model", default_model_dir, "--port", str(port),
            "--grpc-port", str(grpc_port), "--log-level", "warning", "--drain-timeout-s", "5"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RMSERVE_API_KEY": ""})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            end = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stdout.read()
                try:
                    if _health(channel) == SERVING:
                        break
                except grpc.RpcError:
                    pass  # not listening yet
                assert time.monotonic() < end, "rmserve serve never became SERVING"
                time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        item = {"prompt": "What is shown?", "response": "A red square."}
        with RewardClient(f"http://127.0.0.1:{port}") as rest, RewardClient(f"grpc://127.0.0.1:{grpc_port}") as rpc:
            assert rpc.score(item).reward == pytest.approx(rest.score(item).reward, abs=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = proc.stdout.read()
    # a drained shutdown exits 0 (server/shutdown.py; uvicorn alone would re-raise the signal)
    assert proc.returncode == 0 and "Traceback" not in output, output
