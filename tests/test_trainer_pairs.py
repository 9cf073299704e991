"""`rmserve-train pairs`: Li et al. (2024)'s DPO pair rule and best-of-N on hand-made cases."""

from __future__ import annotations

import argparse
import json
import random

import pytest
from rmserve_trainer import pairs as P


def resp(text: str, h: float, c: float, o: float, **extra) -> dict:
    return {"text": text, "helpfulness": h, "correctness": c, "coherence": o, **extra}


def test_response_score_sums_the_three_attributes():
    assert P.response_score(resp("a", 1, 2, 3.5, verbosity=9)) == 6.5
    assert P.response_score({"text": "a", "reward": -0.5}, score_key="reward") == -0.5
    with pytest.raises(ValueError, match="correctness"):
        P.response_score({"text": "a", "helpfulness": 1, "coherence": 1})


def test_gap_rule_skip_boundary_and_ties():
    rng = random.Random(0)
    assert P.select_dpo_pair([5, 4, 3.5], rng) is None  # max - min = 1.5 < 2: skipped
    assert P.select_dpo_pair([7], rng) is None
    assert P.select_dpo_pair([5, 3], rng) == (0, 1)  # a gap of exactly 2 qualifies
    # Two responses tie for best: the first is chosen; 4.5 is within 2 of the best, so only 3 or 2 are rejected.
    picks = {P.select_dpo_pair([3, 6, 4.5, 6, 2], random.Random(s)) for s in range(40)}
    assert picks == {(1, 0), (1, 4)}
    picks = {P.select_dpo_pair([3, 6, 4, 6], random.Random(s)) for s in range(40)}
    assert picks == {(1, 0), (1, 2)}  # best - 2 itself is eligible
    # Ties among the candidates for rejection are all eligible.
    assert {P.select_dpo_pair([1, 1, 9], random.Random(s))[1] for s in range(40)} == {0, 1}


def test_build_dpo_pairs_is_seeded_per_prompt():
    rows = [
        {"id": "p1", "prompt": "q1", "images": ["a.png"],
         "responses": [resp("ok", 2, 2, 2), resp("best", 4, 4, 4), resp("bad", 1, 1, 1), resp("worse", 0, 1, 0)]},
        {"id": "p2", "prompt": "q2", "responses": [resp("x", 3, 3, 3), resp("y", 3, 3, 2)]},  # gap 1: skipped
        {"id": "p3", "messages": [{"role": "user", "content": "q3"}], "responses": [resp("only", 4, 4, 4)]},
    ]
    out, stats = P.build_dpo_pairs(rows, seed=3)
    assert stats == {"prompts": 3, "pairs": 1, "skipped_small_gap": 1, "skipped_few_responses": 1}
    (pair,) = out
    assert pair["id"] == "p1" and pair["chosen"] == "best" and pair["images"] == ["a.png"]
    assert pair["rejected"] in ("ok", "bad", "worse")  # scores 6, 3, 1 are all <= 12 - 2
    assert pair["margin"] == pair["chosen_score"] - pair["rejected_score"] and pair["chosen_score"] == 12
    again, _ = P.build_dpo_pairs(rows[:1], seed=3)  # the other prompts do not change p1's draw
    assert again == out
    rejected = {P.build_dpo_pairs(rows[:1], seed=s)[0][0]["rejected"] for s in range(30)}
    assert rejected == {"ok", "bad", "worse"}
    wide, _ = P.build_dpo_pairs(rows, seed=3, min_gap=0.5)
    assert [p["id"] for p in wide] == ["p1", "p2"] and wide[1]["rejected"] == "y"


def test_best_of_n_top_k_keeps_input_order_on_ties():
    rows = [{"id": "p", "prompt": "q", "responses": [{"text": t, "reward": r} for t, r in
                                                     [("a", 0.1), ("b", 0.9), ("c", 0.9), ("d", -1.0)]]}]
    top1 = P.best_of_n(rows, score_key="reward")
    assert [(r["response"], r["rank"]) for r in top1] == [("b", 0)]
    top3 = P.best_of_n(rows, k=3, score_key="reward")
    assert [r["response"] for r in top3] == ["b", "c", "a"]
    assert len(P.best_of_n(rows, k=10, score_key="reward")) == 4
    with pytest.raises(ValueError):
        P.best_of_n(rows, k=0, score_key="reward")


class LengthScorer:
    name = "length"
    errors: dict[int, str] = {}

    def score(self, items):
        return [float(len(it.response)) for it in items]


def test_score_responses_then_best_of_n():
    rows = [{"prompt": "q", "responses": [{"text": "short"}, {"text": "much longer"}]}]
    assert P.score_responses(rows, LengthScorer()) == 0
    assert [r["reward"] for r in rows[0]["responses"]] == [5.0, 11.0]
    assert P.best_of_n(rows, score_key="reward")[0]["response"] == "much longer"


def test_command(tmp_path):
    data = tmp_path / "scored.jsonl"
    rows = [{"id": str(i), "prompt": f"q{i}", "responses": [resp("good", 4, 4, 4), resp("bad", 1, 2, 1)]}
            for i in range(3)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parser = argparse.ArgumentParser()
    P.add_arguments(parser)
    assert P.run(parser.parse_args([str(data), "--out", str(tmp_path / "dpo.jsonl")])) == 0
    out = [json.loads(line) for line in open(tmp_path / "dpo.jsonl")]
    assert [(o["chosen"], o["rejected"], o["margin"]) for o in out] == [("good", "bad", 8.0)] * 3
    assert P.run(parser.parse_args([str(data), "--out", str(tmp_path / "best.jsonl"), "--mode", "best-of-n",
                                    "--attributes", "helpfulness"])) == 0
    best = [json.loads(line) for line in open(tmp_path / "best.jsonl")]
    assert [(b["response"], b["score"]) for b in best] == [("good", 4.0)] * 3
