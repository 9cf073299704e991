"""The foundation's bad-input cases (tests/test_rest_errors.py), for every endpoint added since:
compare, rank, critique, safety, images, and the compat routes' JSON handling. Each is a 4xx in the
one error shape naming the field (never a 500), and the next good request to the same endpoint works.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from rmserve.config import ServerConfig
from rmserve.models.critique import CritiqueConfig
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.server import create_app
from tests.conftest import data_url, png_bytes
from tests.fakes import FakeRewardModel
from tests.images_util import png_bomb
from tests.serving import asgi_client

LIMITS = {"max_items_per_request": 4, "max_images_per_item": 2, "max_image_pixels": 10_000, "max_wait_ms": 1}
ITEM = {"prompt": "Describe the image.", "response": "A red square."}
GOOD = {
    "/v1/compare": {"prompt": "Describe the image.", "response_a": "A red square.", "response_b": "A blue one."},
    "/v1/rank": {"prompt": "Describe the image.", "responses": ["A red square.", "A blue one."]},
    "/v1/critique": dict(ITEM),
    "/v1/safety": {"items": [dict(ITEM)]},
}


def _image_cases(path: str, base: dict, put, where: str) -> list:
    """Bad images placed by ``put(payload, images)``; errors expected at ``where``."""

    def with_images(images):
        payload = {k: (list(v) if isinstance(v, list) else v) for k, v in base.items()}
        if "items" in payload:
            payload["items"] = [dict(i) for i in payload["items"]]
        put(payload, images)
        return payload

    return [
        (path, "malformed base64", with_images(["data:image/png;base64,%%%%"]), f"{where}.0", "invalid_base64"),
        (path, "not an image", with_images([data_url(b"GIF89a but not really" * 4)]), f"{where}.0", "invalid_image"),
        (path, "decompression bomb", with_images([data_url(png_bomb(30000, 30000))]), f"{where}.0", "image_too_large"),
        (path, "over our pixel limit", with_images([data_url(png_bytes((300, 300)))]), f"{where}.0", "image_too_large"),
        (path, "too many images", with_images([data_url(png_bytes())] * 3), where, "too_many_images"),
        (path, "unknown image ref", with_images([{"sha256": "ab" * 32}]), f"{where}.0", "image_not_found"),
    ]


def _top(images_at):
    def put(payload, images):
        payload[images_at] = images

    return put


def _in_item(payload, images):
    payload["items"][0]["images"] = images


def _common(path: str, base: dict, first_required: str) -> list:
    return [
        (path, "unknown top-level field", {**base, "temperature": 0}, "temperature", "unknown_field"),
        (path, "wrong model", {**base, "model": "gpt-9"}, "model", "model_not_found"),
        (path, "missing body fields", {}, first_required, "missing"),
    ]


C, R, K, S = GOOD["/v1/compare"], GOOD["/v1/rank"], GOOD["/v1/critique"], GOOD["/v1/safety"]
CASES = [
    *_image_cases("/v1/compare", C, _top("images"), "images"),
    *_common("/v1/compare", C, "response_a"),
    ("/v1/compare", "response over max length", {**C, "response_a": "word " * 100}, "response_a", "too_long"),
    ("/v1/compare", "prompt over max length", {**C, "prompt": "long " * 100}, "prompt", "too_long"),
    ("/v1/compare", "unknown field", {**C, "respones_a": "x"}, "respones_a", "unknown_field"),
    ("/v1/compare", "wrong type", {**C, "response_a": 42}, "response_a", "string_type"),
    ("/v1/compare", "bad beta", {**C, "beta0": 0}, "beta0", "greater_than"),
    ("/v1/compare", "prompt and messages", {**C, "messages": [{"role": "user", "content": "x"}]}, None, "value_error"),
    ("/v1/compare", "messages end with assistant", {"response_a": "a", "response_b": "b",
                                                     "messages": [{"role": "assistant", "content": "x"}]},
     None, "value_error"),
    *_image_cases("/v1/rank", R, _top("images"), "images"),
    *_common("/v1/rank", R, "responses"),
    ("/v1/rank", "no responses", {**R, "responses": []}, "responses", "too_short"),
    ("/v1/rank", "too many items", {**R, "responses": ["a"] * 5}, "responses", "too_many_items"),
    ("/v1/rank", "response over max length", {**R, "responses": ["a", "word " * 100]}, "responses.1", "too_long"),
    ("/v1/rank", "responses not a list", {**R, "responses": "abc"}, "responses", "list_type"),
    ("/v1/rank", "bad top_k", {**R, "top_k": 0}, "top_k", "greater_than_equal"),
    ("/v1/rank", "negative margin", {**R, "min_margin": -1}, "min_margin", "greater_than_equal"),
    *_image_cases("/v1/critique", K, _top("images"), "images"),
    *_common("/v1/critique", K, "response"),
    ("/v1/critique", "empty response", {**K, "response": ""}, "response", "value_error"),
    ("/v1/critique", "response over max length", {**K, "response": "word " * 300}, "response", "too_long"),
    ("/v1/critique", "prompt over max length", {**K, "prompt": "long " * 300}, "prompt", "too_long"),
    ("/v1/critique", "bad max_new_tokens", {**K, "max_new_tokens": 0}, "max_new_tokens", "greater_than_equal"),
    ("/v1/critique", "wrong type", {**K, "stream": "yes please"}, "stream", "bool_parsing"),
    *_image_cases("/v1/safety", S, _in_item, "items.0.images"),
    *_common("/v1/safety", S, "items"),
    ("/v1/safety", "too many items", {"items": [ITEM] * 5}, "items", "too_many_items"),
    ("/v1/safety", "response over max length", {"items": [{**ITEM, "response": "word " * 100}]}, "items.0.response",
     "too_long"),
    ("/v1/safety", "unknown field", {"items": [{**ITEM, "ground_truth": "4"}]}, "items.0.ground_truth",
     "unknown_field"),
    ("/v1/safety", "items not a list", {"items": "abc"}, "items", "list_type"),
]


@pytest.fixture(scope="module")
def critique_vl():
    """A tiny multimodal critique model (images go through the real Qwen2.5-VL processor)."""
    model = build_tiny_reward_model("qwen2_5_vl", seed=2)
    model.extra_config = {"critique": CritiqueConfig(max_new_tokens=3).to_dict()}
    model.max_length = 256
    return model


def _app(path: str, critique_vl, **config):
    if path == "/v1/critique":
        return create_app(ServerConfig(**{**LIMITS, **config}), model=critique_vl)
    model = FakeRewardModel(max_length=256, heads=("reward", "safety"))
    return create_app(ServerConfig(**{**LIMITS, **config}), model=model)


async def _assert_error(r: httpx.Response, status: int, param: str | None, code: str | None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["param"], error["code"]) == (param, code), error
    return error


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
async def test_bad_json_input_is_a_4xx_naming_the_field(case, critique_vl):
    path, _, payload, param, code = case
    async with asgi_client(_app(path, critique_vl)) as client:
        error = await _assert_error(await client.post(path, json=payload), 422, param, code)
        assert error["type"] == "invalid_request_error"
        good = await client.post(path, json=GOOD[path])
        assert good.status_code == 200, good.text


JSON_PATHS = [*GOOD, "/get_reward", "/classify", "/pooling"]


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize(
    "body, headers, param, code",
    [
        (b'{"prompt": "x"', {"content-type": "application/json"}, None, "json_invalid"),
        (b"", {"content-type": "application/json"}, "body", "missing"),
        (b"not json at all", {"content-type": "application/json"}, None, "json_invalid"),
        (b"[1, 2]", {"content-type": "application/json"}, None, "model_attributes_type"),
        (b'{"items": []}', {"content-type": "text/plain"}, None, "model_attributes_type"),
    ],
    ids=["truncated", "empty", "not json", "a list", "text/plain"],
)
async def test_malformed_bodies(path, body, headers, param, code, critique_vl):
    async with asgi_client(_app(path, critique_vl)) as client:
        await _assert_error(await client.post(path, content=body, headers=headers), 422, param, code)
        if path in GOOD:
            assert (await client.post(path, json=GOOD[path])).status_code == 200


@pytest.mark.parametrize("path", [*GOOD, "/get_reward", "/classify", "/pooling", "/v1/images"])
async def test_timeout_header_oversized_body_and_wrong_method(path, critique_vl):
    async with asgi_client(_app(path, critique_vl, max_body_bytes=2_000)) as client:
        r = await client.post(path, json=GOOD.get(path, {}), headers={"x-request-timeout-ms": "soon"})
        if path != "/v1/images":  # the upload route reads its body itself and takes no timeout
            await _assert_error(r, 422, "x-request-timeout-ms", "float_parsing")
        await _assert_error(await client.post(path, content=b"x" * 5_000), 413, None, "body_too_large")
        error = await _assert_error(await client.get(path), 405, None, None)
        assert error["type"] == "invalid_request_error"


async def test_critique_stream_reports_input_errors_as_json_not_events(critique_vl):
    async with asgi_client(_app("/v1/critique", critique_vl)) as client:
        r = await client.post("/v1/critique", json={**K, "stream": True, "images": ["data:image/png;base64,@@"]})
        await _assert_error(r, 422, "images.0", "invalid_base64")


# ── /v1/images ────────────────────────────────────────────────────────────────────────────────

IMAGE_CASES = [
    ("not an image", {"content": b"GIF89a but not really" * 4}, "image", "invalid_image"),
    ("decompression bomb", {"content": png_bomb(30000, 30000)}, "image", "image_too_large"),
    ("over our pixel limit", {"content": png_bytes((300, 300))}, "image", "image_too_large"),
    ("empty body", {"content": b""}, "image", "invalid_image"),
    ("json malformed base64", {"json": {"image": "data:image/png;base64,%%%%"}}, "image", "invalid_base64"),
    ("json not an image url", {"json": {"image": "data:text/plain;base64,aGk="}}, "image", "invalid_image"),
    ("json url", {"json": {"image": "https://example.com/cat.png"}}, "image", "url_not_allowed"),
    ("json unknown field", {"json": {"image": "x", "name": "cat"}}, "name", "unknown_field"),
    ("json missing image", {"json": {}}, "image", "missing"),
    ("json wrong type", {"json": {"image": 42}}, "image", "string_type"),
    ("json invalid", {"content": b"{nope", "headers": {"content-type": "application/json"}}, None, "json_invalid"),
    ("multipart without parts", {"content": b"--x--", "headers": {"content-type": "multipart/form-data; boundary=x"}},
     "file", "invalid_multipart"),
    ("multipart not an image", {"files": {"file": ("a.png", b"not a png", "image/png")}}, "image", "invalid_image"),
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
async def test_bad_uploads_are_a_4xx_naming_the_field(case, critique_vl):
    _, kwargs, param, code = case
    async with asgi_client(_app("/v1/images", critique_vl)) as client:
        await _assert_error(await client.post("/v1/images", **kwargs), 422, param, code)
        assert (await client.post("/v1/images", content=png_bytes())).status_code == 200


async def test_uploads_need_the_image_cache(critique_vl):
    async with asgi_client(_app("/v1/images", critique_vl, image_cache_mb=0)) as client:
        r = await client.post("/v1/images", content=png_bytes())
        await _assert_error(r, 422, None, "uploads_disabled")
        raw = base64.b64encode(png_bytes()).decode()
        assert (await client.post("/v1/score", json={"items": [{**ITEM, "images": [raw]}]})).status_code == 200


async def test_openapi_documents_every_endpoint_and_field(critique_vl):
    async with asgi_client(_app("/v1/score", critique_vl)) as client:
        spec = (await client.get("/openapi.json")).json()
    for path in [*GOOD, "/v1/images", "/get_reward", "/classify", "/pooling", "/v1/embeddings", "/slime/reward"]:
        assert "422" in spec["paths"][path]["post"]["responses"], path
    # compat requests ignore unknown fields, as vLLM does
    compat = {"GetRewardRequest", "ClassifyRequest", "PoolingRequest", "EmbeddingsRequest", "SlimeRewardRequest"}
    for name, schema in spec["components"]["schemas"].items():
        assert all(p.get("description") for p in schema.get("properties", {}).values()), name
        if name.endswith("Request") or name.endswith("In") or name in ("Message", "VerifierSpec", "ImageRef"):
            assert schema.get("additionalProperties") is (None if name in compat else False), name
