"""The REST server over the real model library (the bundled default model), end to end.

The other server tests use a fake model; this one checks the seams the fake cannot: loading a
checkpoint directory through the app's own factory, warm-up, image preprocessing and batched
padded forwards that score the same as one item alone.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image

from rmserve.config import ServerConfig
from rmserve.models import default_model_path, load_reward_model
from rmserve.server import create_app
from tests.conftest import data_url
from tests.serving import asgi_client, make_app, wait_ready

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RMSERVE_CACHE", str(tmp_path_factory.mktemp("rmserve-cache")))
        yield default_model_path()


def _image(seed: int, size: int = 56) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return data_url(buf.getvalue())


def _app(model_dir: str, **config):
    settings = {
        "model": model_dir,
        "max_wait_ms": 20.0,
        "max_batch_size": 8,
        "preprocess_workers": 2,
        **config,
    }
    return create_app(ServerConfig(**settings))  # the default factory: load_reward_model(config.model)


async def test_real_model_serves_scores_models_and_errors(model_dir):
    info = load_reward_model(model_dir).info
    items = [
        {"prompt": "What colour is the square?", "images": [_image(0)], "response": "It is red."},
        {"prompt": "What colour is the square?", "images": [_image(1)], "response": "Blue, I think."},
        {"prompt": "Say hi.", "response": "Hi!"},
        {
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            "response": "4",
        },
        {
            "prompt": "Describe the picture in detail.",
            "images": [_image(2, 84)],
            "response": "A noisy picture with many colours and no clear shapes at all.",
        },
    ]
    if not info.multimodal:
        items = [{k: v for k, v in it.items() if k != "images"} for it in items]
    async with asgi_client(_app(model_dir)) as client:
        models = (await client.get("/v1/models")).json()["data"][0]
        assert models["id"] == info.name and models["untrained"] == info.untrained

        # Each item alone, one request at a time ...
        alone = []
        for it in items:
            r = await client.post("/v1/score", json={"items": [it]})
            assert r.status_code == 200, r.text
            alone.append(r.json()["items"][0]["reward"])
        # ... equals the same items sent concurrently (batched together with padding).
        replies = await asyncio.gather(*(client.post("/v1/score", json={"items": [it]}) for it in items))
        together = [r.json()["items"][0]["reward"] for r in replies]
        # ... and equals one multi-item request.
        multi = (await client.post("/v1/score", json={"items": items})).json()["items"]

        assert all(math.isfinite(x) for x in alone)
        np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose([m["reward"] for m in multi], alone, rtol=1e-4, atol=1e-4)
        metrics = (await client.get("/metrics")).text
        assert "rmserve_batch_size_bucket" in metrics

        too_long = {"items": [{"prompt": "p", "response": "word " * (info.max_length + 10)}]}
        r = await client.post("/v1/score", json=too_long)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"].startswith("items.0")

        # Bad input leaves the server healthy.
        bad = {"items": [{"prompt": "p", "images": ["data:image/png;base64,AAAA"], "response": "x"}]}
        assert (await client.post("/v1/score", json=bad)).status_code == 422
        assert (await client.post("/v1/score", json={"items": [items[2]]})).status_code == 200


async def test_64_concurrent_image_requests_on_a_real_model_match_alone():
    """The foundation's acceptance with a real multimodal model: 64 single-item HTTP requests at once,
    each within 1e-4 of scoring its item alone, run in batches of more than one."""
    from rmserve.models import ScoreItem
    from rmserve.models.tiny import build_tiny_reward_model
    from tests.conftest import random_image
    from tests.serving import uvicorn_server

    model = build_tiny_reward_model("qwen2_5_vl")
    images = [random_image(28 + 14 * (i % 4), 56, seed=i) for i in range(8)]
    wire_images = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        wire_images.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    cases = [(f"Question {i % 8}?" * (1 + i % 3), i % 8, "An answer" + " with more words" * (i % 5)) for i in range(64)]
    alone = [model.score([ScoreItem(prompt=p, images=[images[k]], response=r)])[0].reward for p, k, r in cases]
    batch_sizes = []
    original = model.score_batch

    def recording(batch):
        batch_sizes.append(len(batch))
        return original(batch)

    model.score_batch = recording
    app = make_app(model, max_batch_size=32, max_wait_ms=20)
    with uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=64), timeout=60) as client:
            await wait_ready(client)
            replies = await asyncio.gather(*(
                client.post("/v1/score", json={"items": [{"prompt": p, "images": [wire_images[k]], "response": r}]})
                for p, k, r in cases))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200][:1]
    np.testing.assert_allclose([r.json()["items"][0]["reward"] for r in replies], alone, rtol=0, atol=1e-4)
    assert max(batch_sizes) > 1 and len(batch_sizes) < 64
