"""One set of items, every surface: REST /v1/score, gRPC Score and ScoreStream, the sync and async
clients over both transports, OpenRLHF's /get_reward and vLLM-style /classify all return the same
rewards (within 1e-6) for a text reward model, each item sent on its own so batching is alike."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from rmserve_client import AsyncRewardClient, RewardClient

from rmserve.models.tiny import build_tiny_reward_model
from tests.grpc_serving import served

TOL = 1e-6


def cases(model) -> list[tuple[list[dict], str]]:
    out = []
    for k in range(6):
        chat = [{"role": "user", "content": f"How many objects are in picture {k}?"}]
        out.append((chat, f"There are {k + 1} objects" + " and a square" * (k % 3) + "."))
    return out


def test_every_surface_returns_the_same_rewards():
    model = build_tiny_reward_model("qwen2", seed=11)
    items = cases(model)
    with served(model, max_wait_ms=0) as srv:
        results: dict[str, list[float]] = {}
        with httpx.Client(base_url=srv.rest_url, timeout=30) as http:
            results["rest"] = [
                http.post("/v1/score", json={"items": [{"messages": chat, "response": r}]}).json()["items"][0]["reward"]
                for chat, r in items]
            texts = [model.tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": r}], tokenize=False)
                     for chat, r in items]
            prompts = [model.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
                       for chat, _ in items]
            results["get_reward"] = [
                http.post("/get_reward", json={"query": [t], "prompts": [p], "labels": [""]}).json()["rewards"][0]
                for t, p in zip(texts, prompts, strict=True)]
            results["classify"] = [
                http.post("/classify", json={"model": model.name, "input": t, "activation": False}).json()[
                    "data"][0]["probs"][0] for t in texts]
        for name, url in (("rest", srv.rest_url), ("grpc", srv.grpc_url)):
            with RewardClient(url) as client:
                results[f"client_{name}"] = [client.score(messages=chat, response=r).reward for chat, r in items]
                streamed = {res.id: res.reward for res in client.score_stream(
                    [{"id": str(i), "messages": chat, "response": r} for i, (chat, r) in enumerate(items)],
                    concurrency=1)}
                results[f"stream_{name}"] = [streamed[str(i)] for i in range(len(items))]

            async def async_scores(url=url):
                async with AsyncRewardClient(url) as client:
                    return [(await client.score(messages=chat, response=r)).reward for chat, r in items]

            results[f"async_{name}"] = asyncio.run(async_scores())
    reference = results["rest"]
    assert max(reference) - min(reference) > 1e-3, "rewards must differ or the comparison proves nothing"
    for name, values in results.items():
        assert values == pytest.approx(reference, abs=TOL), name
