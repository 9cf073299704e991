"""The real server on the vLLM backend: every endpoint answers as on the transformers backend, and 64
concurrent single-item requests over loopback HTTP are batched and score like the transformers backend.
Runs in .venv-vllm (``make test-vllm``); skipped elsewhere."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from rmserve.config import ServerConfig
from rmserve.models.types import ScoreItem
from rmserve.server import create_app
from tests.serving import asgi_client, uvicorn_server, wait_ready
from tests.vllm.conftest import TOLERANCE, record, skip_without_vllm

skip_without_vllm()
pytestmark = pytest.mark.asyncio
IGNORED = {"id", "created", "device"}  # per-response ids and timestamps; where the model runs


def sample(k: int) -> ScoreItem:
    question = f"How many objects are there in picture {k}?"
    response = f"There are {k % 5 + 1} objects: a red circle and a blue square." + " Let me think." * (k % 7)
    if k % 3 == 0:
        return ScoreItem(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
                         response=response)
    return ScoreItem(prompt=question, response=response)


def wire(item: ScoreItem) -> dict:
    body = {"response": item.response}
    if item.prompt is not None:
        body["prompt"] = item.prompt
    else:
        body["messages"] = item.messages
    return body


def same(got, want, name: str, path: str = "") -> float:
    """Assert two JSON values are equal, numbers within TOLERANCE; returns the largest numeric difference."""
    if isinstance(want, dict):
        keys = set(want) - IGNORED
        assert set(got) - IGNORED == keys, (path, set(got) ^ set(want))
        return max([same(got[k], want[k], name, f"{path}.{k}") for k in keys] or [0.0])
    if isinstance(want, list):
        assert len(got) == len(want), path
        return max([same(g, w, name, f"{path}[{i}]") for i, (g, w) in enumerate(zip(got, want, strict=True))] or [0.0])
    if isinstance(want, float) and not isinstance(want, bool):
        diff = abs(got - want)
        assert diff <= TOLERANCE or (math.isinf(want) and got == want), (path, got, want)
        return diff
    assert got == want, (path, got, want)
    return 0.0


@pytest.mark.parametrize("dispatch", ["auto", "batch"])
async def test_64_concurrent_requests_over_http(dispatch, hf_models, vllm_models):
    hf, vm = hf_models["rm"], vllm_models["rm"]
    items = [sample(k) for k in range(64)]
    want = [o.reward for o in hf.score(items, batch_size=1)]
    app = create_app(ServerConfig(max_batch_size=32, max_wait_ms=20, dispatch=dispatch), model=vm)
    with uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=64), timeout=120) as client:
            await wait_ready(client, timeout=120)
            replies = await asyncio.gather(*(client.post("/v1/score", json={"items": [wire(it)]}) for it in items))
        engine = app.state.rmserve.engine
        snapshot = engine.snapshot()
    got = []
    for reply in replies:
        assert reply.status_code == 200, reply.text
        got.append(reply.json()["items"][0]["reward"])
    worst = max(abs(g - w) for g, w in zip(got, want, strict=True))
    record(f"rm: 64 concurrent /v1/score requests, dispatch {dispatch}", worst)
    assert worst <= TOLERANCE
    assert snapshot.items_scored >= 64
    if dispatch == "auto":  # per item: every item went to vLLM's scheduler on its own, no rmserve batches
        assert engine.per_item and snapshot.batches_run == 0
    else:
        assert not engine.per_item and snapshot.max_batch_size_seen > 1  # batched across requests by rmserve


def openrlhf_query(tokenizer, item: ScoreItem) -> dict:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": item.prompt}], add_generation_prompt=True,
                                           tokenize=False)
    return {"query": [prompt + item.response + tokenizer.eos_token], "prompts": [prompt]}


def verl_input(tokenizer, item: ScoreItem) -> str:
    chat = [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.response}]
    return tokenizer.apply_chat_template(chat, add_generation_prompt=False, tokenize=False)


REQUESTS = [  # (method, path, body): body may be a function of the tokenizer
    ("POST", "/v1/score", {"items": [wire(sample(k)) for k in range(5)], "return": ["reward", "attributes"]}),
    ("POST", "/v1/score", {"items": [wire(sample(1))], "return": ["reward", "attributes", "safety"]}),
    ("POST", "/v1/compare", {"prompt": "Which is right?", "response_a": "Paris", "response_b": "Lyon"}),
    ("POST", "/v1/rank", {"prompt": "Q?", "responses": ["a", "bb", "the answer is 42", "no"], "top_k": 3}),
    ("POST", "/v1/safety", {"items": [{"prompt": "Q?", "response": "I cannot help with that."}]}),
    ("POST", "/get_reward", lambda tok: openrlhf_query(tok, sample(4))),
    ("POST", "/classify", lambda tok: {"input": verl_input(tok, sample(5)), "activation": False}),
    ("POST", "/classify", lambda tok: {"input": [verl_input(tok, sample(k)) for k in (2, 7)]}),
    ("POST", "/pooling", lambda tok: {"input": verl_input(tok, sample(8)), "task": "embed", "use_activation": False}),
    ("POST", "/v1/critique", {"prompt": "What colour is the shape?", "response": "Red.", "max_new_tokens": 16}),
    ("GET", "/v1/models", None),
]


@pytest.mark.parametrize("key", ["rm", "seq_cls"])
async def test_every_endpoint_answers_as_on_the_transformers_backend(key, hf_models, vllm_models):
    hf, vm = hf_models[key], vllm_models[key]
    worst = 0.0
    config = ServerConfig(max_wait_ms=2)
    async with asgi_client(create_app(config, model=hf)) as want_client:
        async with asgi_client(create_app(config, model=vm)) as got_client:
            await wait_ready(got_client, timeout=120)
            for method, path, body in REQUESTS:
                body = body(hf.tokenizer) if callable(body) else body
                want = await want_client.request(method, path, json=body)
                got = await got_client.request(method, path, json=body)
                if key == "seq_cls" and path == "/pooling":  # vLLM's classify pooling returns logits, no states
                    assert got.status_code == 422 and got.json()["error"]["code"] == "unsupported_task", got.text
                    continue
                # The plain classifier has no attribute/safety heads and cannot critique: the same 422 on both.
                assert got.status_code == want.status_code == (200 if key == "rm" else want.status_code), path
                assert want.status_code in (200, 422), (path, want.text)
                worst = max(worst, same(got.json(), want.json(), key, path))
    record(f"{key}: REST endpoints vs transformers backend", worst)


async def test_critique_streams_over_http(hf_models, vllm_models):
    body = {"prompt": "What colour is the shape?", "response": "Red.", "stream": True}
    async with asgi_client(create_app(ServerConfig(), model=hf_models["rm"])) as client:
        want = (await client.post("/v1/critique", json={**body, "stream": False})).json()
    async with asgi_client(create_app(ServerConfig(), model=vllm_models["rm"])) as client:
        await wait_ready(client, timeout=120)
        async with client.stream("POST", "/v1/critique", json=body) as reply:
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in reply.aiter_lines()]
    chunks = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    deltas, final = chunks[:-1], chunks[-1]
    assert final["done"] and final["critique"] == want["critique"] and len(deltas) > 1
    assert "".join(c["delta"] for c in deltas).strip() == want["critique"]
    assert abs(final["reward"] - want["reward"]) <= TOLERANCE and final["usage"] == want["usage"]
