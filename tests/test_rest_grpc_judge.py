"""A generative judge over REST and gRPC: one pipeline, the same rewards, judgments and errors."""

from __future__ import annotations

import grpc
import httpx
import pytest
from rmserve_client import RewardClient
from rmserve_client.proto import reward_pb2 as pb

from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge
from tests.grpc_serving import served

PAIRWISE = {"mode": "pairwise", "template": "Q: {prompt}\n[A] {response_a}\n[B] {response_b}\nBetter?",
            "answer_prefix": "Better:", "choices": ["A", "B"]}


def test_rest_and_grpc_give_the_same_judge_rewards():
    items = [{"prompt": "What is shown?", "response": r} for r in ("A red circle.", "A blue square.")]
    voting = {"k": 3, "seed": 11, "aggregate": "majority", "temperature": 3.0}
    with served(build_tiny_judge("qwen2", TINY_JUDGE, seed=3), max_wait_ms=1) as s, s.channel() as channel:
        stub = s.stub(channel)
        rest = httpx.post(f"{s.rest_url}/v1/score", json={"items": items, "voting": voting,
                                                          "return_judgment": True}, timeout=60).json()
        rpc = stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(**it) for it in items], voting=pb.Voting(**voting),
                                          return_judgment=True))
        card = httpx.get(f"{s.rest_url}/v1/models", timeout=10).json()["data"][0]
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(**items[0])], voting=pb.Voting(k=99)))
    assert [r.reward for r in rpc.items] == pytest.approx([it["reward"] for it in rest["items"]], abs=1e-6)
    assert [[j.answer for j in r.judgments] for r in rpc.items] == [
        [j["answer"] for j in it["judgments"]] for it in rest["items"]]
    assert card["judge"] == "pointwise"
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "voting.k" in info.value.details()


def test_rest_and_grpc_compare_with_a_pairwise_judge():
    body = {"prompt": "Shape?", "response_a": "A circle.", "response_b": "A square and a triangle."}
    with served(build_tiny_judge("qwen2", PAIRWISE, seed=4), max_wait_ms=1) as s, s.channel() as channel:
        rest = httpx.post(f"{s.rest_url}/v1/compare", json=body, timeout=60).json()
        rpc = s.stub(channel).Compare(pb.CompareRequest(**body))
        refused = httpx.post(f"{s.rest_url}/v1/score", json={"items": [{"prompt": "q", "response": "r"}]}, timeout=60)
        clients = []
        for url in (s.rest_url, s.grpc_url):
            with RewardClient(url) as client:
                clients.append(client.compare(body["prompt"], response_a=body["response_a"],
                                              response_b=body["response_b"]))
    for result in clients:  # the Python client over either transport: no per-response rewards, both orders
        assert result.reward_a is None and result.margin is None
        assert result.prob_a_better == pytest.approx(rest["prob_a_better"], abs=1e-6)
        assert result.prob_a_better_ab == pytest.approx(rest["prob_a_better_ab"], abs=1e-6)
    assert rpc.prob_a_better == pytest.approx(rest["prob_a_better"], abs=1e-6)
    assert rpc.prob_a_better_ab == pytest.approx(rest["prob_a_better_ab"], abs=1e-6)
    assert rpc.prob_a_better_ba == pytest.approx(rest["prob_a_better_ba"], abs=1e-6)
    assert rest["reward_a"] is None and not rpc.HasField("reward_a")  # unset, never a silent 0
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "pairwise_judge"


def test_score_stream_reports_an_unreadable_judgment_on_its_item():
    section = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 3, "answer_pattern": None}
    with served(build_tiny_judge("qwen2", section, seed=6), max_wait_ms=1) as s, s.channel() as channel:
        items = [pb.ScoreItem(id=str(i), prompt="q", response=f"answer {i}") for i in range(2)]
        results = list(s.stub(channel).ScoreStream(iter(items)))
        rest = httpx.post(f"{s.rest_url}/v1/score", json={"items": [{"prompt": "q", "response": "answer 1"}]},
                          timeout=60)
    assert sorted(r.id for r in results) == ["0", "1"]  # the stream stayed open for both
    assert all(r.error.code == "judge_unparseable" and not r.HasField("raw_reward") for r in results)
    assert rest.status_code == 422 and rest.json()["error"]["code"] == "judge_unparseable"
    assert rest.json()["error"]["param"] == "items.0"
