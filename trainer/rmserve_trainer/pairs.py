"""`rmserve-train pairs`: DPO pairs and best-of-N picks from scored multi-response data.

Input JSONL, one prompt per line (``messages`` may stand for ``prompt``; ``image`` for ``images``)::

    {"id"?: str, "prompt": str, "images"?: [path],
     "responses": [{"text": str, "helpfulness": 3, "correctness": 4, "coherence": 4, ...}, ...]}

DPO pairs follow Li et al. (2024)'s rule for attribute-scored responses: a response's score is
helpfulness + correctness + coherence; a prompt whose best and worst scores differ by less than
2 is skipped (no clear preference); the chosen response is the best one (the first in input
order when several tie), the rejected one is drawn at random, with a seed, among the responses
scoring at most best - 2. Best-of-N (rejection sampling) keeps the top ``k`` responses per prompt.
Scores may instead come from one field (``--score-key reward``) or from a reward model
(``--model DIR`` or ``--url URL``, which write ``reward`` into every response first).

    rmserve-train pairs scored.jsonl --out dpo.jsonl                      # attribute sums, gap 2
    rmserve-train pairs samples.jsonl --url http://127.0.0.1:8000 --mode best-of-n --k 1 --out best.jsonl

DPO output is the generic pairwise JSONL (docs/architecture.md, "Training") plus ``chosen_score``/``rejected_score``;
``margin`` is their difference. Image paths are copied as given (relative to the input's image root).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Sequence

from PIL import Image

from rmserve.models import ScoreItem

from .scoring import Scorer, add_scorer_arguments, close_scorer, scorer_from_args

DEFAULT_ATTRIBUTES = ("helpfulness", "correctness", "coherence")
MIN_GAP = 2.0


# ---- scores --------------------------------------------------------------------------------
def response_score(response: dict, attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
                   score_key: str | None = None) -> float:
    """``response[score_key]``, or the sum of the named attributes."""
    keys = [score_key] if score_key else list(attributes)
    missing = [k for k in keys if not isinstance(response.get(k), (int, float)) or isinstance(response.get(k), bool)]
    if missing:
        raise ValueError(f"response {response.get('text', '')[:40]!r} has no numeric {missing}")
    return float(sum(response[k] for k in keys))


def select_dpo_pair(scores: Sequence[float], rng: random.Random, min_gap: float = MIN_GAP) -> tuple[int, int] | None:
    """``(chosen, rejected)`` indices, or None when ``max - min < min_gap``.

    chosen: the first index with the maximum score; rejected: a random index with score <= max - min_gap.
    """
    if len(scores) < 2:
        return None
    best = max(scores)
    if best - min(scores) < min_gap:
        return None
    chosen = scores.index(best)
    rejected = rng.choice([i for i, s in enumerate(scores) if s <= best - min_gap])
    return chosen, rejected


def _prompt_fields(row: dict, k: int) -> dict:
    out = {"id": str(row.get("id", k))}
    if "messages" in row and "prompt" not in row:
        out["messages"] = row["messages"]
    else:
        out["prompt"] = row["prompt"]
    images = row.get("images", row.get("image"))
    if images:
        out["images"] = [images] if isinstance(images, str) else list(images)
    return out


def _responses(row: dict, k: int) -> list[dict]:
    responses = row.get("responses")
    if not isinstance(responses, list) or not all(isinstance(r, dict) and isinstance(r.get("text"), str)
                                                   for r in responses):
        raise ValueError(f"row {row.get('id', k)!r}: 'responses' must be a list of {{'text': str, ...}}")
    return responses


# ---- DPO pairs and best-of-N ---------------------------------------------------------------
def build_dpo_pairs(rows: list[dict], *, seed: int = 0, min_gap: float = MIN_GAP,
                    attributes: Sequence[str] = DEFAULT_ATTRIBUTES, score_key: str | None = None,
                    ) -> tuple[list[dict], dict]:
    """One pair per prompt that passes the gap rule; returns ``(pairs, stats)``.

    The random choice of the rejected response uses a generator seeded by ``(seed, id)``, so a
    prompt's pair does not depend on which other prompts are in the file.
    """
    pairs, stats = [], {"prompts": len(rows), "pairs": 0, "skipped_small_gap": 0, "skipped_few_responses": 0}
    for k, row in enumerate(rows):
        responses = _responses(row, k)
        if len(responses) < 2:
            stats["skipped_few_responses"] += 1
            continue
        head = _prompt_fields(row, k)
        scores = [response_score(r, attributes, score_key) for r in responses]
        picked = select_dpo_pair(scores, random.Random(f"{seed}:{head['id']}"), min_gap)
        if picked is None:
            stats["skipped_small_gap"] += 1
            continue
        c, j = picked
        pairs.append({**head, "chosen": responses[c]["text"], "rejected": responses[j]["text"],
                      "margin": scores[c] - scores[j], "chosen_score": scores[c], "rejected_score": scores[j]})
    stats["pairs"] = len(pairs)
    return pairs, stats


def best_of_n(rows: list[dict], *, k: int = 1, attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
              score_key: str | None = None) -> list[dict]:
    """The top ``k`` responses of every prompt by score (ties keep input order), ranked from 0."""
    if k < 1:
        raise ValueError("k must be >= 1")
    out = []
    for n, row in enumerate(rows):
        responses = _responses(row, n)
        head = _prompt_fields(row, n)
        scores = [response_score(r, attributes, score_key) for r in responses]
        order = sorted(range(len(responses)), key=lambda i: -scores[i])  # sorted() is stable
        for rank, i in enumerate(order[:k]):
            out.append({**head, "response": responses[i]["text"], "score": scores[i], "rank": rank})
    return out


def score_responses(rows: list[dict], scorer: Scorer, *, image_root: str = ".", key: str = "reward") -> int:
    """Write ``response[key]`` = the scorer's reward for every response; returns how many failed (left None)."""
    items, where = [], []
    for n, row in enumerate(rows):
        head = _prompt_fields(row, n)
        images = []
        for path in head.get("images", []):
            with Image.open(path if os.path.isabs(path) else os.path.join(image_root, path)) as im:
                images.append(im.convert("RGB"))
        for response in _responses(row, n):
            prompt = {"messages": head["messages"]} if "messages" in head else {"prompt": head["prompt"]}
            items.append(ScoreItem(response=response["text"], images=images, truncate=True, **prompt))
            where.append(response)
    rewards = scorer.score(items)
    for response, reward in zip(where, rewards, strict=True):
        response[key] = reward
    return sum(r is None for r in rewards)


# ---- command -------------------------------------------------------------------------------
def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="JSONL of {prompt, images?, responses: [{text, <scores>...}]}")
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument("--mode", choices=("dpo", "best-of-n"), default="dpo")
    parser.add_argument("--k", type=int, default=1, help="best-of-n: responses kept per prompt")
    parser.add_argument("--min-gap", type=float, default=MIN_GAP,
                        help="dpo: skip prompts whose best - worst score is below this; rejected <= best - gap")
    parser.add_argument("--attributes", default=",".join(DEFAULT_ATTRIBUTES),
                        help="comma-separated attributes summed into a response's score")
    parser.add_argument("--score-key", default=None, help="use this numeric field as the score instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-root", default=None, help="image paths are relative to this (default: data's dir)")
    add_scorer_arguments(parser)  # optional here: with --model/--url the reward model's score is used


def run(args: argparse.Namespace) -> int:
    rows = read_rows(args.data)
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    score_key = args.score_key
    if args.model or args.url:
        scorer = scorer_from_args(args)
        try:
            failed = score_responses(rows, scorer,
                                     image_root=args.image_root or os.path.dirname(os.path.abspath(args.data)))
        finally:
            close_scorer(scorer)
        if failed:
            print(f"warning: {failed} responses could not be scored; dropped")
            for row in rows:
                row["responses"] = [r for r in row["responses"] if r["reward"] is not None]
        score_key = "reward"
    if args.mode == "dpo":
        out, stats = build_dpo_pairs(rows, seed=args.seed, min_gap=args.min_gap, attributes=attributes,
                                     score_key=score_key)
    else:
        out = best_of_n(rows, k=args.k, attributes=attributes, score_key=score_key)
        stats = {"prompts": len(rows), "selected": len(out)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        for row in out:
            f.write(json.dumps(row) + "\n")
    print(f"{args.mode}: {json.dumps(stats)} -> {args.out}")
    return 0


__all__ = ["response_score", "select_dpo_pair", "build_dpo_pairs", "best_of_n", "score_responses", "read_rows",
           "add_arguments", "run", "DEFAULT_ATTRIBUTES", "MIN_GAP"]
