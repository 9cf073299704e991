"""Content parts over REST on a tiny real Qwen2.5-VL: images and videos where their parts sit, tool turns,
the final assistant turn as the response, limits before decoding, and 422s naming the part."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from rmserve.config import ServerConfig
from rmserve.models import ScoreItem
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.video import decode_planned, encode_mp4, plan_sampling, probe_video
from rmserve.server import create_app
from tests.conftest import data_url
from tests.serving import asgi_client
from tests.test_models_conversations import smooth_frame

pytestmark = pytest.mark.asyncio


def png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return data_url(buf.getvalue())


def mp4_url(raw: bytes) -> str:
    return f"data:video/mp4;base64,{base64.b64encode(raw).decode()}"


@pytest.fixture(scope="module")
def model():
    return build_tiny_reward_model("qwen2_5_vl", seed=4)


@pytest.fixture(scope="module")
def video() -> bytes:
    return encode_mp4([smooth_frame(s, 64, 48) for s in range(8)], fps=4)


def app_for(model, **config):
    settings = {"max_wait_ms": 2.0, "preprocess_workers": 2, "warmup": False, **config}
    return create_app(ServerConfig(**settings), model=model)


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def image_part(image: Image.Image) -> dict:
    return {"type": "image_url", "image_url": {"url": png(image)}}


async def test_parts_score_exactly_as_the_library_on_the_same_conversation(model, video):
    first, later = smooth_frame(1), smooth_frame(2)
    wire = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [text("What is this?"), image_part(first)]},
        {"role": "assistant", "content": "A gradient."},
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": mp4_url(video), "fps": 2}},
                                     text("and this"), image_part(later)]},
        {"role": "assistant", "content": "lookup()"},
        {"role": "tool", "content": "3 objects", "name": "lookup"},
        {"role": "assistant", "content": "Three objects."},  # the final reply: the scored response
    ]
    frames = [smooth_frame(s, 28, 28) for s in (5, 6, 7)]
    rank_body = {"messages": wire[:2] + [{"role": "user", "content": [
        {"type": "video", "frames": [png(f) for f in frames], "fps": 1.0}, text("order?")]}],
        "responses": ["one", "two"]}
    async with asgi_client(app_for(model)) as client:
        r = await client.post("/v1/score", json={"items": [{"messages": wire}]})
        assert r.status_code == 200, r.text
        served = r.json()["items"][0]["reward"]
        ranked = await client.post("/v1/rank", json=rank_body)
        assert ranked.status_code == 200, ranked.text
    clip = decode_planned(video, plan_sampling(probe_video(video), 2.0, 32))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [text("What is this?"), {"type": "image"}]},
        {"role": "assistant", "content": "A gradient."},
        {"role": "user", "content": [{"type": "video"}, text("and this"), {"type": "image"}]},
        {"role": "assistant", "content": "lookup()"},
        {"role": "tool", "content": "3 objects", "name": "lookup"},
    ]
    decoded = [Image.open(io.BytesIO(base64.b64decode(png(i).split(",", 1)[1]))).convert("RGB")
               for i in (first, later)]
    expected = model.score([ScoreItem(response="Three objects.", messages=messages, images=decoded,
                                      videos=[clip])])[0].reward
    assert served == pytest.approx(expected, abs=1e-6)
    rank_item = ScoreItem(response="one", messages=[messages[0], messages[1], {"role": "user", "content": [
        {"type": "video"}, text("order?")]}], images=decoded[:1], videos=[])
    rank_item.videos = [type(clip)(frames=frames, fps=1.0)]
    by_index = {r["index"]: r["reward"] for r in ranked.json()["ranking"]}
    assert by_index[0] == pytest.approx(model.score([rank_item])[0].reward, abs=1e-6)


async def test_top_level_images_with_string_content_score_as_before(model):
    image = smooth_frame(3)
    item = {"messages": [{"role": "user", "content": "How many?"}], "images": [png(image)], "response": "Two."}
    async with asgi_client(app_for(model)) as client:
        r = await client.post("/v1/score", json={"items": [item]})
    decoded = Image.open(io.BytesIO(base64.b64decode(png(image).split(",", 1)[1]))).convert("RGB")
    expected = model.score([ScoreItem(response="Two.", messages=[{"role": "user", "content": "How many?"}],
                                      images=[decoded])])[0].reward
    assert r.json()["items"][0]["reward"] == pytest.approx(expected, abs=1e-6)


def item_with(*parts, role="user") -> dict:
    return {"messages": [{"role": "system", "content": "s"}, {"role": role, "content": list(parts)}],
            "response": "r"}


@pytest.mark.parametrize("make_item, param, code", [
    (lambda v: item_with(text("a"), {"type": "audio"}), "items.0.messages.1.content.1", "invalid_part"),
    (lambda v: item_with({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
     "items.0.messages.1.content.0", "invalid_image"),
    (lambda v: item_with(text("a"), {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}),
     "items.0.messages.1.content.1", "invalid_video"),
    (lambda v: item_with({"type": "video_url", "video_url": {"url": mp4_url(v).replace("video/mp4", "video/x-flv")}}),
     "items.0.messages.1.content.0", "invalid_video"),
    (lambda v: item_with({"type": "video", "frames": [png(smooth_frame(1)), png(smooth_frame(1, 28, 28))]}),
     "items.0.messages.1.content.0.frames", "invalid_video"),
    (lambda v: item_with({"type": "image", "image": {"sha256": "0" * 64}}), "items.0.messages.1.content.0",
     "image_not_found"),
    (lambda v: {**item_with(image_part(smooth_frame(1))), "images": [png(smooth_frame(2))]}, "items.0.images",
     "mixed_image_forms"),
    # 8 sampled frames (fps 2 over 2 s = 4, but max 8 per item: the image pushes it over with the cap at 4)
    (lambda v: item_with(image_part(smooth_frame(1)), {"type": "video_url", "video_url": {"url": mp4_url(v)}}),
     "items.0.messages.1.content.1", "too_many_images"),
])
async def test_malformed_or_over_limit_parts_are_422_naming_the_part(model, video, make_item, param, code):
    async with asgi_client(app_for(model, max_images_per_item=4)) as client:
        r = await client.post("/v1/score", json={"items": [make_item(video)]})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error


async def test_video_limits_are_checked_from_the_headers_before_decoding(model):
    big = encode_mp4([Image.new("RGB", (1024, 1024), (10, 20, 30))] * 2, fps=1)  # a few KB on the wire
    long = encode_mp4([smooth_frame(s, 64, 48) for s in range(60)], fps=30)
    part = lambda raw, **kw: item_with({"type": "video_url", "video_url": {"url": mp4_url(raw), **kw}})  # noqa: E731
    async with asgi_client(app_for(model, max_image_pixels=512 * 512, max_video_decode_pixels=64 * 48 * 40,
                                   max_video_frames=4)) as client:
        too_big = await client.post("/v1/score", json={"items": [part(big)]})
        too_long = await client.post("/v1/score", json={"items": [part(long, fps=1)]})
        capped = await client.post("/v1/score", json={"items": [part(long, fps=30, max_frames=2)]})
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "video_too_large"
    assert "1024x1024" in too_big.json()["error"]["message"]
    # 2 s at 1 fps keeps frames 0 and 30: decoding reads 31 frames of 64x48, within 40 -> fine; at 30 fps capped
    # to 2 frames likewise. The decode budget bites when the kept frames span the whole clip:
    assert too_long.status_code == 200, too_long.text
    assert capped.status_code == 200, capped.text
    async with asgi_client(app_for(model, max_video_decode_pixels=64 * 48 * 20)) as client:
        r = await client.post("/v1/score", json={"items": [part(long, fps=1)]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "video_too_large", r.text
    assert r.json()["error"]["param"] == "items.0.messages.1.content.0"


async def test_text_only_models_refuse_video_parts_naming_them():
    model = build_tiny_reward_model("qwen2")
    body = {"items": [item_with(text("a"), {"type": "video", "frames": [png(smooth_frame(1))]})]}
    async with asgi_client(app_for(model)) as client:
        r = await client.post("/v1/score", json=body)
    assert r.status_code == 422
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("items.0.messages.1.content.1",
                                                                      "videos_not_supported")


async def test_unrenderable_role_is_422_naming_the_message():
    model = build_tiny_reward_model("qwen2")
    model.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    body = {"items": [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "call"},
                                    {"role": "tool", "content": "4"}], "response": "4"}]}
    async with asgi_client(app_for(model)) as client:
        r = await client.post("/v1/score", json=body)
    assert r.status_code == 422
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("items.0.messages.2.role", "unsupported_role")


async def test_a_video_sent_with_every_response_is_decoded_once(model, video, monkeypatch):
    from rmserve.api import videos as videos_module

    model_decodes = {"n": 0}
    real = videos_module.decode_planned

    def counting(*args, **kwargs):
        model_decodes["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(videos_module, "decode_planned", counting)
    body = {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": mp4_url(video)}}, text("What moves?")]}],
        "responses": ["left", "right", "nothing"]}
    async with asgi_client(app_for(model)) as client:
        r = await client.post("/v1/rank", json=body)
        assert r.status_code == 200, r.text
        metrics = (await client.get("/metrics")).text
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("rmserve_video_cache_"))
    # one decode (one miss); the other two jobs wait for it or hit the cache (neither counts as a decode)
    assert float(values["rmserve_video_cache_misses_total"]) <= 2 and float(values["rmserve_video_cache_entries"]) == 1
    assert model_decodes["n"] == 1
