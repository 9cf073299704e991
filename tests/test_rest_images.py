"""POST /v1/images: upload once (raw bytes, multipart or JSON), then refer by sha256 in every endpoint."""

from __future__ import annotations

import base64
import hashlib

from tests.conftest import data_url, png_bytes
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app


async def test_three_ways_to_upload_give_the_same_reference():
    raw = png_bytes((20, 10), color=(9, 8, 7))
    digest = hashlib.sha256(raw).hexdigest()
    async with asgi_client(make_app()) as client:
        by_body = await client.post("/v1/images", content=raw, headers={"content-type": "image/png"})
        by_form = await client.post("/v1/images", files={"file": ("x.png", raw, "image/png")})
        by_json = await client.post("/v1/images", json={"image": data_url(raw)})
        by_b64 = await client.post("/v1/images", json={"image": base64.b64encode(raw).decode()})
    for r in (by_body, by_form, by_json, by_b64):
        assert r.status_code == 200, r.text
        assert r.json() == {"object": "image", "sha256": digest, "width": 20, "height": 10, "bytes": len(raw)}


async def test_references_work_in_every_endpoint_and_equal_inline_images():
    model = FakeRewardModel(heads=("reward", "safety"))
    raw = png_bytes(color=(40, 80, 160))
    ref = {"sha256": hashlib.sha256(raw).hexdigest()}
    inline = data_url(raw)
    conversation = {"prompt": "Colour?"}
    calls = [
        ("/v1/score", lambda img: {"items": [{**conversation, "images": [img], "response": "Blue."}]}),
        ("/v1/compare", lambda img: {**conversation, "images": [img], "response_a": "Blue.", "response_b": "Red."}),
        ("/v1/rank", lambda img: {**conversation, "images": [img], "responses": ["Blue.", "Red."]}),
        ("/v1/safety", lambda img: {"items": [{**conversation, "images": [img], "response": "Blue."}]}),
    ]
    async with asgi_client(make_app(model, image_cache_mb=1)) as client:
        for path, build in calls:
            r = await client.post(path, json=build(ref))
            assert r.status_code == 422 and r.json()["error"]["code"] == "image_not_found", r.text
        assert (await client.post("/v1/images", content=raw)).json()["sha256"] == ref["sha256"]
        for path, build in calls:
            by_ref, by_value = await client.post(path, json=build(ref)), await client.post(path, json=build(inline))
            assert by_ref.status_code == by_value.status_code == 200, by_ref.text
            assert by_ref.json() == by_value.json()
        # the store is the bounded LRU cache: enough other images push the upload out
        for i in range(12):
            big = png_bytes((200, 200), color=(i, 1, 2))  # 120 KB decoded each, 1 MiB cache
            assert (await client.post("/v1/images", content=big)).status_code == 200
        r = await client.post("/v1/score", json=calls[0][1](ref))
        assert r.status_code == 422 and "POST /v1/images" in r.json()["error"]["message"]


async def test_an_image_larger_than_the_cache_is_refused_not_silently_dropped():
    async with asgi_client(make_app(image_cache_mb=1, max_image_pixels=10_000_000)) as client:
        r = await client.post("/v1/images", content=png_bytes((1000, 1000)))  # 3 MB decoded
    assert r.status_code == 422 and r.json()["error"]["code"] == "image_too_large"
