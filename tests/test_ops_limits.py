"""Every request limit in one table: its setting, the refusal (4xx naming the field), and that the server goes on.

(The admission queue's 429 + Retry-After is in test_rest_errors.py and, under real overload, in
test_ops_overload.py.)
"""

from __future__ import annotations

import pytest

from tests.conftest import data_url, png_bytes
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app


def _item(**fields):
    return {"prompt": "Describe it.", "response": "A square.", **fields}


LIMITS = [
    # (limit, settings, body, status, param, code)
    ("body size", {"max_body_bytes": 2000}, {"items": [_item(response="x" * 3000)]}, 413, None, "body_too_large"),
    ("items per request", {"max_items_per_request": 2}, {"items": [_item()] * 3}, 422, "items", "too_many_items"),
    ("images per item", {"max_images_per_item": 1},
     {"items": [_item(images=[data_url(png_bytes())] * 2)]}, 422, "items.0.images", "too_many_images"),
    ("pixels per image", {"max_image_pixels": 300},
     {"items": [_item(), _item(images=[data_url(png_bytes((20, 20)))])]}, 422, "items.1.images.0", "image_too_large"),
    ("bytes per image", {"max_image_bytes": 60},
     {"items": [_item(images=[data_url(png_bytes((64, 64), (1, 2, 3)) + b"\x00" * 100)])]}, 422,
     "items.0.images.0", "image_too_large"),
    ("tokens per item: the model's max_length", {}, {"items": [_item(response="word " * 40)]}, 422,
     "items.0.response", "too_long"),
    ("tokens per item: the batch token budget", {"max_batch_tokens": 40},
     {"items": [_item(), _item(response="a much longer response than the budget allows")]}, 422, "items.1",
     "too_long"),
]


@pytest.mark.parametrize("case", LIMITS, ids=[c[0] for c in LIMITS])
async def test_each_limit_is_a_4xx_naming_the_field(case):
    _, settings, body, status, param, code = case
    app = make_app(FakeRewardModel(max_length=128), **settings)
    async with asgi_client(app) as client:
        r = await client.post("/v1/score", json=body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == (param, code), error
        assert (await client.post("/v1/score", json={"items": [_item()]})).status_code == 200
