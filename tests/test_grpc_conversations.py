"""Content parts over gRPC: the same conversation scores the same as over REST, errors name the same part."""

from __future__ import annotations

import base64
import io

import grpc
import httpx
import pytest
from rmserve_client.proto import reward_pb2 as pb

from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.video import encode_mp4
from tests.grpc_serving import served
from tests.test_models_conversations import smooth_frame


def png(seed: int, w: int = 56, h: int = 42) -> bytes:
    buf = io.BytesIO()
    smooth_frame(seed, w, h).save(buf, format="PNG")
    return buf.getvalue()


def b64(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


@pytest.fixture(scope="module")
def server():
    with served(build_tiny_reward_model("qwen2_5_vl", seed=5), warmup=False) as s:
        yield s


def test_parts_over_grpc_equal_rest(server):
    video = encode_mp4([smooth_frame(s, 64, 48) for s in range(6)], fps=3)
    frames = [png(s, 28, 28) for s in (7, 8)]
    proto_messages = [
        pb.Message(role="system", content="Be brief."),
        pb.Message(role="user", parts=[pb.ContentPart(text="Look:"), pb.ContentPart(image=pb.Image(data=png(1)))]),
        pb.Message(role="assistant", content="Seen."),
        pb.Message(role="user", parts=[
            pb.ContentPart(video=pb.Video(data=video, fps=1.5, max_frames=4)),
            pb.ContentPart(text="and"),
            pb.ContentPart(video=pb.Video(frames=pb.Frames(frames=[pb.Image(data=f) for f in frames]), fps=1.0)),
        ]),
        pb.Message(role="assistant", content="lookup()"),
        pb.Message(role="tool", content="2", name="lookup"),
        pb.Message(role="assistant", content="Two things."),  # empty `response`: this reply is scored
    ]
    rest_messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                     {"type": "image_url", "image_url": {"url": b64(png(1), "image/png")}}]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": b64(video, "video/mp4"), "fps": 1.5, "max_frames": 4}},
            {"type": "text", "text": "and"},
            {"type": "video", "frames": [b64(f, "image/png") for f in frames], "fps": 1.0}]},
        {"role": "assistant", "content": "lookup()"},
        {"role": "tool", "content": "2", "name": "lookup"},
        {"role": "assistant", "content": "Two things."},
    ]
    with server.channel() as channel:
        stub = server.stub(channel)
        reply = stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(messages=proto_messages)]))
        ranked = stub.Rank(pb.RankRequest(messages=proto_messages[:4], responses=["a", "b"]))
        with pytest.raises(grpc.RpcError) as err:
            stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(response="r", messages=[
                pb.Message(role="user", parts=[pb.ContentPart(text="x"), pb.ContentPart(video=pb.Video(data=b"nope"))])
            ])]))
    rest = httpx.post(f"{server.rest_url}/v1/score", json={"items": [{"messages": rest_messages}]}, timeout=60)
    assert rest.status_code == 200, rest.text
    assert reply.items[0].reward == pytest.approx(rest.json()["items"][0]["reward"], abs=1e-6)
    rest_rank = httpx.post(f"{server.rest_url}/v1/rank", json={"messages": rest_messages[:4],
                                                                "responses": ["a", "b"]}, timeout=60).json()
    assert [r.reward for r in ranked.ranking] == pytest.approx([r["reward"] for r in rest_rank["ranking"]], abs=1e-6)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    metadata = dict(err.value.trailing_metadata())
    assert metadata["rmserve-error-param"] == "items.0.messages.0.content.1"
    assert metadata["rmserve-error-code"] == "invalid_video"


def test_python_client_sends_parts_over_both_transports(server, tmp_path):
    from rmserve_client import RewardClient

    video = encode_mp4([smooth_frame(s, 64, 48) for s in range(4)], fps=2)
    video_path = tmp_path / "clip.mp4"
    video_path.write_bytes(video)
    image = smooth_frame(9)  # a PIL image: the client encodes it as PNG
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image", "image": image}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(video_path), "max_frames": 3}},
                                     {"type": "video", "frames": [smooth_frame(1, 28, 28), smooth_frame(2, 28, 28)]}]},
    ]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    frame_urls = []
    for seed in (1, 2):
        b = io.BytesIO()
        smooth_frame(seed, 28, 28).save(b, format="PNG")
        frame_urls.append(b64(b.getvalue(), "image/png"))
    rest_messages = [
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image_url", "image_url": {"url": b64(buf.getvalue(), "image/png")}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": b64(video, "video/mp4"), "max_frames": 3}},
            {"type": "video", "frames": frame_urls}]},
    ]
    want = httpx.post(f"{server.rest_url}/v1/score", json={"items": [{"messages": rest_messages, "response": "r"}]},
                      timeout=60).json()["items"][0]["reward"]
    for url in (server.rest_url, server.grpc_url):
        with RewardClient(url) as client:
            assert client.score(messages=messages, response="r").reward == pytest.approx(want, abs=1e-6), url
            ranked = client.rank(messages=messages, responses=["r", "s"])
            assert {r.index: r.reward for r in ranked.ranking}[0] == pytest.approx(want, abs=1e-6), url
