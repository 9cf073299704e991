"""Compare, rank, safety and image upload over REST and gRPC on a tiny REAL Qwen2.5-VL (reward + safety
heads): every number equals the model's own ``score()`` of the same item, and an image the model's
processor refuses (aspect ratio over 200: a 300x1 PNG decodes fine) is a 4xx naming that image."""

from __future__ import annotations

import io
import math

import grpc
import httpx
import pytest
from PIL import Image
from rmserve_client.proto import reward_pb2 as pb

from rmserve.models import HeadSpec
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.types import ScoreItem
from tests.conftest import data_url, random_image
from tests.grpc_serving import served

PROMPT = "What colour is the shape?"
RESPONSES = ["It is red.", "Blue, I think.", "A green triangle on a white background.", "No idea."]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model():
    heads = {"reward": HeadSpec(kind="mlp", width=32, activation="silu"),
             "safety": HeadSpec(kind="linear", labels=["S1", "S10"])}
    return build_tiny_reward_model("qwen2_5_vl", seed=6, heads=heads)


@pytest.fixture(scope="module")
def image():
    return random_image(56, 42, seed=3)


@pytest.fixture(scope="module")
def server(model):
    with served(model, max_wait_ms=5.0) as s:
        yield s


@pytest.fixture(scope="module")
def own(model, image):
    """The model's own outputs for each response, scored alone (no server, no batching)."""
    return [model.score([ScoreItem(prompt=PROMPT, images=[image], response=r)])[0] for r in RESPONSES]


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.rest_url}{path}", json=body, timeout=60)


def meta(error: grpc.RpcError) -> dict[str, str]:
    return {m.key: m.value for m in error.trailing_metadata() or ()}


def test_own_rewards_are_apart(own):
    rewards = [o.reward for o in own]  # otherwise a swapped a/b or ranking could pass
    assert min(abs(a - b) for i, a in enumerate(rewards) for b in rewards[i + 1:]) > 1e-3, rewards


def test_rest_compare_is_the_models_own_rewards(server, image, own):
    body = {"prompt": PROMPT, "images": [data_url(png(image))], "response_a": RESPONSES[2], "response_b": RESPONSES[1],
            "beta0": 0.2, "w": 0.5, "k": 0.5}
    r = post(server, "/v1/compare", body)
    assert r.status_code == 200, r.text
    got, a, b = r.json(), own[2].reward, own[1].reward
    assert got["reward_a"] == pytest.approx(a, abs=1e-4) and got["reward_b"] == pytest.approx(b, abs=1e-4)
    assert got["margin"] == pytest.approx(a - b, abs=1e-4)
    assert got["prob_a_better"] == pytest.approx(1 / (1 + math.exp(-(a - b))), abs=1e-4)
    assert got["beta"] == pytest.approx(0.2 * (1 + 0.5 * (1 - math.exp(-0.5 * abs(a - b)))), abs=1e-5)
    assert got["usage"]["items"] == 2


def test_rest_rank_orders_by_the_models_own_rewards(server, image, own):
    body = {"prompt": PROMPT, "images": [data_url(png(image))], "responses": RESPONSES}
    r = post(server, "/v1/rank", body)
    assert r.status_code == 200, r.text
    order = sorted(range(len(RESPONSES)), key=lambda i: -own[i].reward)
    ranking = r.json()["ranking"]
    assert [x["index"] for x in ranking] == order
    assert [x["reward"] for x in ranking] == pytest.approx([own[i].reward for i in order], abs=1e-4)
    assert (r.json()["chosen_index"], r.json()["rejected_index"]) == (order[0], order[-1])


def test_grpc_upload_compare_rank_and_safety_on_the_real_model(server, model, image, own):
    raw = png(image)
    with server.channel() as channel:
        stub = server.stub(channel)
        uploaded = stub.UploadImage(pb.UploadImageRequest(data=raw), timeout=30)
        assert (uploaded.width, uploaded.height, uploaded.bytes) == (56, 42, len(raw))
        ref = pb.Image(sha256=uploaded.sha256)

        got = stub.Compare(pb.CompareRequest(prompt=PROMPT, images=[ref], response_a=RESPONSES[0],
                                             response_b=RESPONSES[3]), timeout=30)
        a, b = own[0].reward, own[3].reward
        assert (got.reward_a, got.reward_b) == (pytest.approx(a, abs=1e-4), pytest.approx(b, abs=1e-4))
        assert got.prob_a_better == pytest.approx(1 / (1 + math.exp(-(a - b))), abs=1e-4)

        got = stub.Rank(pb.RankRequest(prompt=PROMPT, images=[ref], responses=RESPONSES), timeout=30)
        order = sorted(range(len(RESPONSES)), key=lambda i: -own[i].reward)
        assert [x.index for x in got.ranking] == order
        assert [x.reward for x in got.ranking] == pytest.approx([own[i].reward for i in order], abs=1e-4)

        items = [pb.SafetyItem(prompt=PROMPT, images=[ref], response=r) for r in RESPONSES[:2]]
        got = stub.Safety(pb.SafetyRequest(items=items), timeout=30)
    assert dict(got.taxonomy) == {"S1": "Violent Crimes", "S10": "Hate"}
    for result, want in zip(got.items, own[:2], strict=True):
        assert dict(result.categories) == pytest.approx(want.safety, abs=1e-4)
        assert 0 < min(want.safety.values()) and max(want.safety.values()) < 1  # probabilities, not logits
        assert result.raw_reward == pytest.approx(want.reward, abs=1e-4)


def test_an_image_the_processor_refuses_is_named(server, image):
    """300x1 decodes, but Qwen2.5-VL's processor refuses an aspect ratio over 200: a 422 naming the image,
    on every surface, and the server keeps serving."""
    good, thin = data_url(png(image)), data_url(png(Image.new("RGB", (300, 1), (9, 9, 9))))
    item = {"prompt": PROMPT, "response": "It is red."}
    r = post(server, "/v1/score", {"items": [{**item, "images": [good]}, {**item, "images": [good, thin]}]})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("items.1.images.1", "invalid_image"), error
    assert "300x1" in error["message"] and "aspect ratio" in error["message"]

    r = post(server, "/v1/compare", {"prompt": PROMPT, "images": [thin], "response_a": "a", "response_b": "b"})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("images.0", "invalid_image")

    r = post(server, "/v1/rank", {"prompt": PROMPT, "images": [good, thin], "responses": ["a", "b"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "images.1", r.text

    with server.channel() as channel:
        stub = server.stub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Compare(pb.CompareRequest(prompt=PROMPT, images=[pb.Image(data=png(Image.new("RGB", (1, 300))))],
                                           response_a="a", response_b="b"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (meta(info.value)["rmserve-error-param"], meta(info.value)["rmserve-error-code"]) == (
        "images.0", "invalid_image")
    assert post(server, "/v1/score", {"items": [{**item, "images": [good]}]}).status_code == 200
