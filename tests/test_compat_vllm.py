"""vLLM-shaped /classify and /pooling as veRL's reward loop calls them: the input is the whole
conversation rendered by the reward model's chat template (assistant turn included), the reward
must equal direct scoring of (prompt, response), and the response schema is vLLM's."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from rmserve.config import ServerConfig
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.types import ScoreItem
from rmserve.rewards import sigmoid
from rmserve.server import create_app
from tests.serving import asgi_client, uvicorn_server, wait_ready

pytestmark = pytest.mark.asyncio
TOLERANCE = 1e-5  # batched vs alone, see tests/test_compat_openrlhf.py


@pytest.fixture(scope="module")
def model():
    return build_tiny_reward_model("qwen2", seed=5)


def verl_input(model, k: int) -> tuple[str, ScoreItem]:
    """What veRL's RewardLoopWorker sends: apply_chat_template(chat + assistant, add_generation_prompt=False)."""
    chat = [{"role": "user", "content": f"How many objects are there in picture {k}?"}]
    if k % 3 == 0:
        chat = [{"role": "system", "content": "You are a helpful assistant."}, *chat]
    response = f"There are {k % 5 + 1} objects: a red circle and a blue square."
    text = model.tokenizer.apply_chat_template(
        chat + [{"role": "assistant", "content": response}], add_generation_prompt=False, tokenize=False
    )
    return text, ScoreItem(messages=chat, response=response)


async def test_classify_in_verl_shape_over_real_http(model):
    samples = [verl_input(model, k) for k in range(24)]
    direct = [o.reward for o in model.score([item for _, item in samples], batch_size=1)]
    app = create_app(ServerConfig(max_wait_ms=5), model=model)
    with uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await wait_ready(client)
            payloads = [{"model": model.name, "input": text, "activation": False} for text, _ in samples]
            replies = await asyncio.gather(*(client.post("/classify", json=p) for p in payloads))
            on = await client.post("/classify", json={"model": model.name, "input": [t for t, _ in samples[:3]]})
    for reply, want in zip(replies, direct, strict=True):
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {"id", "object", "created", "model", "data", "usage"}
        assert body["object"] == "list" and body["id"].startswith("classify-") and body["model"] == model.name
        assert isinstance(body["created"], int)
        assert body["usage"]["completion_tokens"] == 0 and body["usage"]["prompt_tokens"] > 0
        (data,) = body["data"]
        assert set(data) == {"index", "label", "probs", "num_classes"}
        assert data["index"] == 0 and data["num_classes"] == 1 and data["label"] == "LABEL_0"
        assert abs(data["probs"][-1] - want) <= TOLERANCE  # veRL reads output["data"][-1]["probs"][-1]
    # activation on (vLLM's default): sigmoid of the reward, one entry per input, in order
    probs = [d["probs"][0] for d in on.json()["data"]]
    assert [d["index"] for d in on.json()["data"]] == [0, 1, 2]
    assert probs == pytest.approx([sigmoid(r) for r in direct[:3]], abs=TOLERANCE)


async def test_use_activation_and_model_by_path(model):
    text, item = verl_input(model, 1)
    (want,) = [o.reward for o in model.score([item])]
    model.path = "/models/tiny-rm"
    try:
        async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
            r = await client.post(
                "/classify",
                json={"model": "/models/tiny-rm", "input": text, "use_activation": False, "add_special_tokens": False},
            )
            assert r.status_code == 200, r.text
            assert r.json()["data"][0]["probs"][0] == pytest.approx(want, abs=TOLERANCE)
            assert (await client.post("/v1/classify", json={"input": text})).status_code == 200
            r = await client.post("/classify", json={"model": "other-model", "input": text})
            assert r.status_code == 422 and r.json()["error"]["code"] == "model_not_found"
    finally:
        model.path = ""


async def test_pooling_returns_the_reward_or_the_hidden_state(model):
    texts, items = zip(*(verl_input(model, k) for k in range(3)), strict=True)
    direct = [o.reward for o in model.score(list(items))]
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        body = (await client.post("/pooling", json={"model": model.name, "input": list(texts)})).json()
        assert set(body) == {"id", "object", "created", "model", "data", "usage"} and body["id"].startswith("pool-")
        assert [d["object"] for d in body["data"]] == ["pooling"] * 3
        assert [d["data"][0] for d in body["data"]] == pytest.approx(direct, abs=TOLERANCE)
        on = (await client.post("/pooling", json={"input": texts[0], "use_activation": True})).json()
        assert on["data"][0]["data"] == pytest.approx([sigmoid(direct[0])], abs=TOLERANCE)

        embed = (await client.post("/pooling", json={"input": list(texts[:2]), "task": "embed"})).json()
        vectors = [d["data"] for d in embed["data"]]
        assert len(vectors) == 2 and len(vectors[0]) == model.hidden_size
        assert math.sqrt(sum(x * x for x in vectors[0])) == pytest.approx(1.0)
        raw = (await client.post("/pooling", json={"input": texts[0], "task": "embed", "use_activation": False})).json()
    # the raw pooled state is what the heads read: reward head(state) == reward
    import torch

    state = torch.tensor([raw["data"][0]["data"]])
    with torch.inference_mode():
        assert model.apply_heads(state)["reward"].item() == pytest.approx(direct[0], abs=TOLERANCE)


@pytest.mark.parametrize(
    "path, payload, param, code",
    [
        ("/classify", {"input": []}, "input", "too_short"),
        ("/classify", {"input": 42}, "input", None),
        ("/classify", {}, "input", "missing"),
        ("/classify", {"input": "plain text with no chat turns"}, "input.0", "unsplittable_query"),
        ("/classify", {"input": ["ok?", "<|im_start|>assistant\n"]}, "input.0", "unsplittable_query"),
        ("/pooling", {"input": "x", "task": "nonsense"}, "task", "literal_error"),
        ("/pooling", {"input": "x", "encoding_format": "base64"}, "encoding_format", "literal_error"),
        ("/pooling", {"input": "no turns", "task": "embed"}, "input.0", "unsplittable_query"),
        ("/classify", {"input": "x", "truncate_prompt_tokens": -5}, "truncate_prompt_tokens", "greater_than_equal"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(model, path, payload, param, code):
    good_text, _ = verl_input(model, 2)
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        r = await client.post(path, json=payload)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["param"] == param and (code is None or error["code"] == code), error
        assert (await client.post(path, json={"input": good_text})).status_code == 200
