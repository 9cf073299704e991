"""gRPC ScoreStream with a generative judge: each stream item carries Score's judge options (``voting``,
``return_judgment``), goes through the same ScoreService path (the same rewards and judgments as Score), and a
bad option fails that item only, with Score's error code and field path (relative to the item)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from rmserve_client import AsyncRewardClient, RewardClient, Voting
from rmserve_client.proto import reward_pb2 as pb

from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge
from tests.grpc_serving import served

PROMPT = "What is shown?"
RESPONSES = ["A red circle.", "A blue square.", "Two green triangles."]
VOTING = {"k": 3, "seed": 11, "temperature": 3.0}


def error_of(call) -> tuple[grpc.StatusCode, str, str]:
    """A failed unary call's status code, rmserve-error-code and rmserve-error-param."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    meta = dict(info.value.trailing_metadata())
    return info.value.code(), meta["rmserve-error-code"], meta["rmserve-error-param"]


def test_stream_items_with_voting_and_judgments_give_scores_rewards():
    with served(build_tiny_judge("qwen2", TINY_JUDGE, seed=3), max_wait_ms=1) as s, s.channel() as channel:
        stub = s.stub(channel)
        stream = [pb.ScoreItem(id=str(i), prompt=PROMPT, response=r, voting=pb.Voting(**VOTING), return_judgment=True)
                  for i, r in enumerate(RESPONSES)]
        stream.append(pb.ScoreItem(id="greedy", prompt=PROMPT, response=RESPONSES[0]))  # no options: as before
        streamed = {r.id: r for r in stub.ScoreStream(iter(stream))}
        unary = [stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(prompt=PROMPT, response=r)], voting=pb.Voting(**VOTING),
                                            return_judgment=True)).items[0] for r in RESPONSES]
        greedy = stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(prompt=PROMPT, response=RESPONSES[0])])).items[0]
    for i, expected in enumerate(unary):
        got = streamed[str(i)]
        assert not got.HasField("error")
        assert got.reward == pytest.approx(expected.reward, abs=1e-6)
        assert len(got.judgments) == 3
        assert [(j.text, j.answer, j.source) for j in got.judgments] == [
            (j.text, j.answer, j.source) for j in expected.judgments]
        assert [j.reward for j in got.judgments] == pytest.approx([j.reward for j in expected.judgments], abs=1e-6)
    assert streamed["greedy"].reward == pytest.approx(greedy.reward, abs=1e-6)
    assert not streamed["greedy"].judgments  # no return_judgment on that item


def test_a_bad_voting_option_fails_its_stream_item_only_with_scores_error():
    with served(build_tiny_judge("qwen2", TINY_JUDGE, seed=3), max_wait_ms=1, max_judge_votes=4) as s, \
            s.channel() as channel:
        stub = s.stub(channel)
        bad = {"over_cap": pb.Voting(k=5, seed=1), "zero": pb.Voting(k=0), "hot": pb.Voting(k=2, temperature=-1.0)}
        stream = [pb.ScoreItem(id=name, prompt=PROMPT, response=RESPONSES[0], voting=v) for name, v in bad.items()]
        stream.append(pb.ScoreItem(id="ok", prompt=PROMPT, response=RESPONSES[1], voting=pb.Voting(k=4, seed=1)))
        streamed = {r.id: r for r in stub.ScoreStream(iter(stream))}
        unary = {name: error_of(lambda v=v: stub.Score(pb.ScoreRequest(
            items=[pb.ScoreItem(prompt=PROMPT, response=RESPONSES[0])], voting=v))) for name, v in bad.items()}
        ok = stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(prompt=PROMPT, response=RESPONSES[1])],
                                        voting=pb.Voting(k=4, seed=1))).items[0]
        # Score takes the options on the request: on an item they are refused, naming the item's field
        per_item = error_of(lambda: stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(
            prompt=PROMPT, response="r", voting=pb.Voting(k=2))])))
        per_item_judgment = error_of(lambda: stub.Score(pb.ScoreRequest(items=[pb.ScoreItem(
            prompt=PROMPT, response="r", return_judgment=True)])))
    assert unary["over_cap"][1] == "too_many_votes"
    for name, (code, error_code, param) in unary.items():
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        got = streamed[name].error
        assert (got.type, got.code, got.param) == ("invalid_request_error", error_code, param)
        assert param.startswith("voting.")  # the item's own field: `voting` sits on the stream item
    assert unary["hot"][2] == "voting.temperature" and unary["zero"][2] == unary["over_cap"][2] == "voting.k"
    assert not streamed["ok"].HasField("error") and streamed["ok"].reward == pytest.approx(ok.reward, abs=1e-6)
    assert per_item == (grpc.StatusCode.INVALID_ARGUMENT, "stream_only_option", "items.0.voting")
    assert per_item_judgment == (grpc.StatusCode.INVALID_ARGUMENT, "stream_only_option", "items.0.return_judgment")


def test_the_clients_score_stream_takes_the_judge_options():
    items = [{"prompt": PROMPT, "response": r, "id": f"r{i}"} for i, r in enumerate(RESPONSES)]

    async def stream_async(url: str) -> list:
        async with AsyncRewardClient(url) as client:
            return [r async for r in client.score_stream(items, voting=Voting(**VOTING), return_judgment=True)]

    with served(build_tiny_judge("qwen2", TINY_JUDGE, seed=3), max_wait_ms=1) as s:
        with RewardClient(s.grpc_url) as client:
            expected = client.score(items, voting=Voting(**VOTING), return_judgment=True)
            runs = {"sync grpc": list(client.score_stream(items, voting=VOTING, return_judgment=True))}
        with RewardClient(s.rest_url) as client:  # REST: one request per item, the same options
            runs["sync rest"] = list(client.score_stream(items, voting=Voting(**VOTING), return_judgment=True))
        for url in (s.grpc_url, s.rest_url):
            runs[f"async {url.split(':')[0]}"] = asyncio.run(stream_async(url))
    for results in runs.values():
        by_id = {r.id: r for r in results}
        assert sorted(by_id) == ["r0", "r1", "r2"]
        for item, want in zip(items, expected, strict=True):
            got = by_id[item["id"]]
            assert got.error is None and got.reward == pytest.approx(want.reward, abs=1e-6)
            assert [(j.answer, j.text) for j in got.judgments] == [(j.answer, j.text) for j in want.judgments]
            assert len(got.judgments) == 3
