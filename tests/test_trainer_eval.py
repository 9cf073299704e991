"""`rmserve-train eval`: metrics on hand-made cases, VL-RewardBench groups, scorers, and an end-to-end run."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os

import httpx
import pytest
from PIL import Image
from rmserve_trainer import eval as ev
from rmserve_trainer.data.synthetic import generate_demo_pairs
from rmserve_trainer.eval import ScoredPair, pairwise_metrics, score_pairs
from rmserve_trainer.scoring import HttpScorer, LocalScorer

from rmserve.models import ScoreItem, save_reward_model
from tests.conftest import SHARED

MM_BENCH = os.path.join(SHARED, "data", "mm_reward_bench.jsonl")
VL_BENCH = os.path.join(SHARED, "data", "vl_reward_bench.jsonl")


def test_metrics_on_a_hand_made_case():
    pairs = [
        ScoredPair("a", "x", 1.0, 0.0),   # correct
        ScoredPair("a", "x", 0.5, 0.7),   # wrong -> id a fails Acc+
        ScoredPair("b", "x", 2.0, 1.0),   # correct
        ScoredPair("c", "y", 0.3, 0.3),   # tie: wrong (strict)
        ScoredPair("d", "y", 1.0, -1.0),  # correct
        ScoredPair("e", "y", None, 0.0, error="too long"),  # unscored -> id e leaves Acc+
        ScoredPair("e", "y", 1.0, 0.0),   # correct
        ScoredPair("f", "y", 0.0, 1.0),   # wrong
    ]
    m = pairwise_metrics(pairs)
    assert (m["n_pairs"], m["n_scored"], m["n_skipped"], m["ties"]) == (8, 7, 1, 1)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["acc_plus"] == pytest.approx(2 / 5)  # ids a b c d f complete; b and d all correct
    x, y = m["categories"]["x"], m["categories"]["y"]
    assert (x["accuracy"], x["acc_plus"], x["n_ids"]) == (pytest.approx(2 / 3), 0.5, 2)
    assert (y["accuracy"], y["acc_plus"], y["n_ids"]) == (0.5, pytest.approx(1 / 3), 3)
    assert m["macro_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    vl = ev.headline(m, "vl_reward_bench")
    assert vl == {"overall_accuracy": m["accuracy"], "macro_accuracy": m["macro_accuracy"]}
    assert ev.headline(m, "mm_rlhf") == {"acc": m["accuracy"], "acc_plus": m["acc_plus"]}
    assert pairwise_metrics([])["accuracy"] is None


@pytest.mark.skipif(not os.path.exists(VL_BENCH), reason="shared VL-RewardBench copy not present")
def test_vl_reward_bench_groups_match_the_paper():
    assert ev.detect_benchmark(VL_BENCH) == "vl_reward_bench" and ev.detect_benchmark(MM_BENCH) == "mm_rlhf"
    with open(VL_BENCH) as f:
        ids = [json.loads(line)["id"] for line in f]
    counts = {g: sum(ev.vl_reward_bench_group(i) == g for i in ids) for g in ("general", "hallucination", "reasoning")}
    assert counts == {"general": 183, "hallucination": 749, "reasoning": 318}
    assert ev.vl_reward_bench_group("LRVInstruction-000000007746") == "general"  # a VLFeedback source task


class LengthScorer:
    """reward = len(response); responses containing 'bad' cannot be scored."""

    name = "length"

    def __init__(self):
        self.errors: dict[int, str] = {}
        self.calls: list[int] = []

    def score(self, items):
        self.calls.append(len(items))
        self.errors = {i: "refused" for i, it in enumerate(items) if "bad" in it.response}
        return [None if i in self.errors else float(len(it.response)) for i, it in enumerate(items)]


def test_score_pairs_dedupes_shared_responses_and_isolates_errors():
    records = generate_demo_pairs(3, seed=0)
    records[1].chosen, records[1].rejected = "long enough answer", "bad"
    records[2].prompt, records[2].images = records[0].prompt, records[0].images  # same prompt + image objects
    records[2].chosen, records[2].rejected = records[0].chosen, "x"
    scorer = LengthScorer()
    pairs = score_pairs(records, scorer)
    assert scorer.calls == [5]  # records[2].chosen is records[0].chosen on the same prompt and image
    assert pairs[0].chosen == len(records[0].chosen) and pairs[2].chosen == pairs[0].chosen
    assert pairs[1].rejected is None and pairs[1].error == "refused" and not pairs[1].scored
    assert pairwise_metrics(pairs)["n_skipped"] == 1


def test_http_scorer_batches_encodes_images_and_isolates_refused_items():
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        assert request.url.path == "/v1/score" and request.headers["authorization"] == "Bearer k"
        if any(it["response"] == "bad" for it in body["items"]):
            return httpx.Response(422, json={"error": {"message": "response is bad", "type": "invalid_request_error",
                                                       "param": "items.0.response", "code": None}})
        out = []
        for it in body["items"]:
            for url in it.get("images", []):
                assert url.startswith("data:image/png;base64,")
                Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
            out.append({"reward": float(len(it["response"]))})
        return httpx.Response(200, json={"items": out, "model": "m", "usage": {}})

    image = Image.new("RGB", (8, 8), (255, 0, 0))
    items = [ScoreItem(prompt="q", images=[image], response="abc"),
             ScoreItem(messages=[{"role": "user", "content": "q"}], response="bad"),
             ScoreItem(prompt="q", response="hello")]
    scorer = HttpScorer("http://rm.test/", batch_size=2, api_key="k", transport=httpx.MockTransport(handler))
    assert scorer.score(items) == [3.0, None, 5.0]
    assert "response is bad" in scorer.errors[1]
    assert requests[0]["items"][1] == {"messages": [{"role": "user", "content": "q"}], "response": "bad"}
    # batch [abc, bad] refused -> retried one by one (2 requests) -> then batch [hello]
    assert [len(r["items"]) for r in requests] == [2, 1, 1, 1]


@pytest.mark.skipif(not os.path.exists(MM_BENCH), reason="shared MM-RLHF-RewardBench copy not present")
def test_eval_end_to_end_on_mm_rlhf_bench_with_placeholder_images(tiny_models, tmp_path):
    """The first id of every category of the real bench (all its pairs), images replaced by placeholders."""
    with open(MM_BENCH) as f:
        rows = [json.loads(line) for line in f]
    first: dict[str, str] = {}  # category -> its first id
    for r in rows:
        first.setdefault((r.get("image") or r["video"]).split("/")[0], r["id"])
    subset = [r for r in rows if r["id"] in first.values()]
    data = tmp_path / "mm_reward_bench_subset.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in subset))
    model_dir = tmp_path / "model"
    save_reward_model(tiny_models("qwen2_5_vl"), str(model_dir))
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args([str(data), "--model", str(model_dir), "--placeholder-images", "--out", str(out),
                              "--batch-size", "32"])
    assert ev.run(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["benchmark"] == "mm_rlhf" and report["n_pairs"] == len(subset) and report["read"]["skipped"] == 0
    assert set(report["categories"]) == {"mcq", "long", "short", "safety", "video"}
    for block in report["categories"].values():
        assert block["n_ids"] <= 1 and (block["accuracy"] is None) == (block["n_scored"] == 0)
    assert 0.0 <= report["headline"]["acc_plus"] <= report["headline"]["acc"] <= 1.0
    for name in ("margin_hist.png", "category_accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(1 for _ in open(out / "scores.jsonl")) == len(subset)
    assert (out / "placeholder-images" / "video").is_dir()  # videos become frame directories


def test_url_scoring_matches_local_scoring(tiny_models):
    """The same tiny model behind a real rmserve (uvicorn, /v1/score) gives the local rewards."""
    from tests.serving import make_app, uvicorn_server

    model = tiny_models("qwen2_5_vl")
    records = generate_demo_pairs(6, seed=4)
    local = score_pairs(records, LocalScorer(model, batch_size=4))
    with uvicorn_server(make_app(model)) as url, HttpScorer(url, batch_size=4) as scorer:
        remote = score_pairs(records, scorer)
    assert all(p.scored for p in remote)
    for a, b in zip(local, remote, strict=True):
        assert a.chosen == pytest.approx(b.chosen, abs=1e-4) and a.rejected == pytest.approx(b.rejected, abs=1e-4)
