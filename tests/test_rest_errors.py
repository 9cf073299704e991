"""Bad input gets a 4xx in the one error shape, naming the field, and the next good request succeeds.

Also: overload (429 + Retry-After), a poisoned item isolated to its own request (500 for it,
200 for its batch neighbours), body limits (413), routing errors. Never a 500 for bad input.
"""

from __future__ import annotations

import asyncio
import base64
import threading

import httpx
import pytest
from PIL import Image

from tests.conftest import data_url, item, png_bytes
from tests.fakes import NAN_MARKER, FakeRewardModel
from tests.images_util import png_bomb
from tests.serving import asgi_client, make_app

pytestmark = pytest.mark.asyncio

GOOD = {"items": [{"prompt": "What is 2+2?", "response": "4"}]}


def _item(**fields):
    return {"prompt": "Describe the image.", "response": "A red square.", **fields}


BAD_JSON_CASES = [
    # (id, payload, status, param, code)
    (
        "malformed base64",
        {"items": [_item(images=["data:image/png;base64,%%%%"])]},
        422,
        "items.0.images.0",
        "invalid_base64",
    ),
    (
        "not an image",
        {"items": [_item(), _item(images=[data_url(b"GIF89a but not really" * 4)])]},
        422,
        "items.1.images.0",
        "invalid_image",
    ),
    (
        "decompression bomb",
        {"items": [_item(images=[data_url(png_bomb(30000, 30000))])]},
        422,
        "items.0.images.0",
        "image_too_large",
    ),
    (
        "over our pixel limit",
        {"items": [_item(images=[data_url(png_bytes((300, 300)))])]},
        422,
        "items.0.images.0",
        "image_too_large",
    ),
    ("too many items", {"items": [_item()] * 5}, 422, "items", "too_many_items"),
    (
        "too many images",
        {"items": [_item(images=[data_url(png_bytes())] * 3)]},
        422,
        "items.0.images",
        "too_many_images",
    ),
    (
        "response over max length",
        {"items": [_item(response="word " * 100)]},
        422,
        "items.0.response",
        "too_long",
    ),
    ("prompt over max length", {"items": [_item(prompt="long " * 100)]}, 422, "items.0.prompt", "too_long"),
    ("unknown field", {"items": [_item(respones="typo")]}, 422, "items.0.respones", "unknown_field"),
    ("unknown top-level field", {**GOOD, "temperature": 0}, 422, "temperature", "unknown_field"),
    ("wrong type", {"items": [_item(response=42)]}, 422, "items.0.response", "string_type"),
    ("items not a list", {"items": "abc"}, 422, "items", "list_type"),
    (
        "prompt and messages",
        {"items": [_item(messages=[{"role": "user", "content": "x"}])]},
        422,
        "items.0",
        "value_error",
    ),
    ("unknown output", {**GOOD, "return": ["vibes"]}, 422, "return.0", "literal_error"),
    ("unsupported head", {**GOOD, "return": ["safety"]}, 422, "return", "unsupported_output"),
    ("wrong model", {**GOOD, "model": "gpt-9"}, 422, "model", "model_not_found"),
    (
        "unknown image ref",
        {"items": [_item(images=[{"sha256": "ab" * 32}])]},
        422,
        "items.0.images.0",
        "image_not_found",
    ),
    ("missing body fields", {}, 422, "items", "missing"),
]


def _app(**config):
    config = {"max_items_per_request": 4, "max_images_per_item": 2, "max_image_pixels": 10_000, **config}
    return make_app(FakeRewardModel(max_length=256), **config)


async def _assert_error(r: httpx.Response, status: int, param: str | None, code: str | None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert (error["param"], error["code"]) == (param, code), error
    return error


@pytest.mark.parametrize("case", BAD_JSON_CASES, ids=[c[0] for c in BAD_JSON_CASES])
async def test_bad_json_input_is_a_4xx_naming_the_field(case):
    _, payload, status, param, code = case
    async with asgi_client(_app()) as client:
        error = await _assert_error(await client.post("/v1/score", json=payload), status, param, code)
        assert error["type"] == "invalid_request_error"
        assert (await client.post("/v1/score", json=GOOD)).status_code == 200


@pytest.mark.parametrize(
    "body, headers, param, code",
    [
        (
            b'{"items": [{"prompt": "x", "response": "y"}',
            {"content-type": "application/json"},
            None,
            "json_invalid",
        ),
        (b"", {"content-type": "application/json"}, "body", "missing"),
        (b"not json at all", {"content-type": "application/json"}, None, "json_invalid"),
        (b'{"items": []}', {"content-type": "text/plain"}, None, "model_attributes_type"),
    ],
)
async def test_malformed_bodies(body, headers, param, code):
    async with asgi_client(_app()) as client:
        await _assert_error(await client.post("/v1/score", content=body, headers=headers), 422, param, code)
        assert (await client.post("/v1/score", json=GOOD)).status_code == 200


async def test_bad_timeout_header_names_the_header():
    async with asgi_client(_app()) as client:
        r = await client.post("/v1/score", json=GOOD, headers={"x-request-timeout-ms": "soon"})
        await _assert_error(r, 422, "x-request-timeout-ms", "float_parsing")


async def test_oversized_body_is_413_by_content_length_and_by_stream():
    async with asgi_client(_app(max_body_bytes=2_000)) as client:
        big = {"items": [_item(response="x" * 5_000)]}
        await _assert_error(await client.post("/v1/score", json=big), 413, None, "body_too_large")

        async def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(10):
                yield b" " * 500

        r = await client.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
        error = await _assert_error(r, 413, None, "body_too_large")
        assert "2000" in error["message"]
        assert (await client.post("/v1/score", json=GOOD)).status_code == 200


async def test_full_queue_is_429_with_retry_after():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    async with asgi_client(
        make_app(model, max_queue_items=2, max_items_per_request=2, max_wait_ms=0)
    ) as client:
        first = asyncio.create_task(client.post("/v1/score", json={"items": [_item(), _item(response="b")]}))
        await asyncio.sleep(0.05)
        r = await client.post("/v1/score", json=GOOD)
        error = await _assert_error(r, 429, None, "queue_full")
        assert error["type"] == "overloaded_error"
        assert int(r.headers["retry-after"]) >= 1
        gate.set()
        assert (await first).status_code == 200
        assert (await client.post("/v1/score", json=GOOD)).status_code == 200


async def test_poisoned_item_fails_alone_while_its_batch_neighbours_succeed():
    model = FakeRewardModel(forward_sleep_s=0.002)
    async with asgi_client(make_app(model, max_batch_size=8, max_wait_ms=30)) as client:
        responses = [f"answer {i}" for i in range(6)]
        responses[2] = f"answer {NAN_MARKER}"
        replies = await asyncio.gather(
            *(client.post("/v1/score", json={"items": [_item(response=r)]}) for r in responses)
        )
    assert len(model.batches[0]) == 6  # all six rode in one batch before bisection
    for i, r in enumerate(replies):
        if i == 2:
            error = await _assert_error(r, 500, "items.0", "non_finite_score")
            assert error["type"] == "backend_error"
        else:
            assert r.status_code == 200, r.text
            want = model.expected(item(responses[i], prompt="Describe the image.")).reward
            assert r.json()["items"][0]["reward"] == want


async def test_routing_errors_use_the_error_shape():
    async with asgi_client(_app()) as client:
        await _assert_error(await client.get("/v2/nothing"), 404, None, None)
        error = await _assert_error(await client.get("/v1/score"), 405, None, None)
        assert error["type"] == "invalid_request_error"


async def test_raw_base64_images_work():
    async with asgi_client(_app()) as client:
        raw = base64.b64encode(png_bytes()).decode()
        r = await client.post("/v1/score", json={"items": [_item(images=[raw])]})
        as_url = await client.post("/v1/score", json={"items": [_item(images=[data_url(png_bytes())])]})
        plain = await client.post("/v1/score", json={"items": [_item()]})
    assert r.status_code == as_url.status_code == 200, r.text
    assert r.json()["items"] == as_url.json()["items"]  # the same image, whichever way it was sent
    assert r.json()["items"][0]["reward"] != plain.json()["items"][0]["reward"]  # and it was used


async def test_image_sent_once_can_be_referenced_by_hash():
    import hashlib

    raw = png_bytes(color=(1, 2, 3))
    async with asgi_client(_app()) as client:
        inline = await client.post("/v1/score", json={"items": [_item(images=[data_url(raw)])]})
        ref = {"sha256": hashlib.sha256(raw).hexdigest()}
        by_ref = await client.post("/v1/score", json={"items": [_item(images=[ref])]})
    assert inline.status_code == by_ref.status_code == 200
    assert inline.json()["items"] == by_ref.json()["items"]
    want = FakeRewardModel(max_length=256).expected(item("A red square.", prompt="Describe the image.",
                                                         images=[Image.new("RGB", (8, 8), (1, 2, 3))]))
    assert by_ref.json()["items"][0]["reward"] == pytest.approx(want.reward, abs=1e-9)
