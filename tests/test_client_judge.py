"""The Python client with a generative judge: ``voting`` and ``return_judgment`` on score / compare / rank,
sync and async, REST and gRPC, give the server's own rewards, judgments and per-order probabilities."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from rmserve_client import AsyncRewardClient, Judgment, RewardClient, Voting

from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge
from tests.grpc_serving import served

PAIRWISE = {"mode": "pairwise", "template": "Q: {prompt}\n[A] {response_a}\n[B] {response_b}\nBetter?",
            "answer_prefix": "Better:", "choices": ["A", "B"]}
PROMPT = "What is shown?"
RESPONSES = ["A red circle.", "A blue square.", "Two green triangles."]
VOTING = {"k": 3, "seed": 7, "aggregate": "majority", "temperature": 3.0}


def every_client(urls: list[str], call) -> dict[str, object]:
    """``call(client)`` with the sync and the async client on every URL -> results by 'sync rest' etc."""
    out = {}
    for url in urls:
        kind = url.split(":")[0]
        with RewardClient(url) as client:
            out[f"sync {kind}"] = call(client)

        async def run(url=url):
            async with AsyncRewardClient(url) as client:
                return await call(client)

        out[f"async {kind}"] = asyncio.run(run())
    return out


def test_score_and_rank_with_voting_and_judgments_over_every_transport():
    items = [{"prompt": PROMPT, "response": r} for r in RESPONSES]
    with served(build_tiny_judge("qwen2", TINY_JUDGE, seed=3), max_wait_ms=1) as s:
        scored = httpx.post(f"{s.rest_url}/v1/score", json={"items": items, "voting": VOTING, "return_judgment": True},
                            timeout=60)
        server = scored.json()["items"]
        metrics = httpx.get(f"{s.rest_url}/metrics", timeout=10).text
        ranked = httpx.post(f"{s.rest_url}/v1/rank", json={"prompt": PROMPT, "responses": RESPONSES,
                                                            "return_judgment": True}, timeout=60).json()
        urls = [s.rest_url, s.grpc_url]
        scores = every_client(urls, lambda c: c.score(items, voting=Voting(**VOTING), return_judgment=True))
        dict_voting = every_client(urls, lambda c: c.score(items, voting=VOTING))
        ranks = every_client(urls, lambda c: c.rank(PROMPT, responses=RESPONSES, return_judgment=True))
    assert len(scores) == 4
    # /metrics and the timing headers see the judge's work: 9 judgments, generated in the engine's batches
    counters = dict(re.findall(r'^(rmserve_(?:batches|items_scored)_total)\{model="tiny-judge-qwen2"\} (\S+)$', metrics,
                               re.MULTILINE))
    assert float(counters["rmserve_batches_total"]) >= 1 and float(counters["rmserve_items_scored_total"]) >= 9
    assert float(scored.headers["x-inference-time-ms"]) > 0 and "x-queue-time-ms" in scored.headers
    for results in scores.values():
        assert [r.reward for r in results] == pytest.approx([it["reward"] for it in server], abs=1e-6)
        for result, expected in zip(results, server, strict=True):
            assert len(result.judgments) == 3 and all(isinstance(j, Judgment) for j in result.judgments)
            assert [(j.answer, j.source) for j in result.judgments] == [
                (j["answer"], j["source"]) for j in expected["judgments"]]
            assert [j.reward for j in result.judgments] == pytest.approx(
                [j["reward"] for j in expected["judgments"]], abs=1e-6)
    for results in dict_voting.values():  # a plain dict works as the voting spec; no judgments unless asked
        assert [r.reward for r in results] == pytest.approx([it["reward"] for it in server], abs=1e-6)
        assert all(r.judgments == () for r in results)
    for result in ranks.values():
        assert result.rewards == pytest.approx({r["index"]: r["reward"] for r in ranked["ranking"]}, abs=1e-6)
        assert len(result.judgments) == len(RESPONSES)
        assert sorted(j.about for j in result.judgments) == [(0,), (1,), (2,)]


def test_compare_with_a_pairwise_judge_gives_both_orders_over_every_transport():
    body = {"prompt": PROMPT, "response_a": RESPONSES[0], "response_b": RESPONSES[2]}
    with served(build_tiny_judge("qwen2", PAIRWISE, seed=4), max_wait_ms=1) as s:
        server = httpx.post(f"{s.rest_url}/v1/compare", json={**body, "voting": VOTING, "return_judgment": True},
                            timeout=60).json()
        results = every_client([s.rest_url, s.grpc_url], lambda c: c.compare(
            PROMPT, response_a=RESPONSES[0], response_b=RESPONSES[2], voting=VOTING, return_judgment=True))
    assert len(results) == 4
    for result in results.values():
        assert (result.prob_a_better, result.prob_a_better_ab, result.prob_a_better_ba) == pytest.approx(
            (server["prob_a_better"], server["prob_a_better_ab"], server["prob_a_better_ba"]), abs=1e-6)
        assert result.reward_a is None and result.margin is None
        assert [j.about for j in result.judgments] == [(0, 1)] * 3 + [(1, 0)] * 3  # k votes per order
        assert [j.answer for j in result.judgments] == [j["answer"] for j in server["judgments"]]


def test_a_scalar_model_refuses_judge_options_through_the_client():
    with served() as s, RewardClient(s.rest_url) as client:
        with pytest.raises(Exception) as info:
            client.score(prompt="q", response="r", voting={"k": 2})
    assert getattr(info.value, "code", None) == "not_a_judge" and getattr(info.value, "param", None) == "voting"
