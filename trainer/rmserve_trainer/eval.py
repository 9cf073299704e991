"""`rmserve-train eval`: pairwise accuracy of a reward model on preference benchmarks.

Metrics (docs/architecture.md, "Training"), overall and per category:
- accuracy: the share of pairs with reward(chosen) > reward(rejected), strictly (a tie is wrong);
- Acc+ (MM-RLHF-RewardBench): the share of ids whose pairs are all correct;
- macro accuracy (VL-RewardBench): the mean of the per-category accuracies; VL-RewardBench's
  categories are its three groups (general / hallucination / reasoning, from the id prefix).
Pairs that cannot be scored (too long, refused by the server) are left out and counted.

    rmserve-train eval /work/shared/data/mm_reward_bench.jsonl --model models/demo \\
        --placeholder-images --out runs/eval-mm
    rmserve-train eval synthetic --synthetic-n 500 --url http://127.0.0.1:8000 --out runs/eval-demo

Writes ``report.json``, ``scores.jsonl`` (one line per pair), ``margin_hist.png`` and
``category_accuracy.png`` into ``--out``. ``--placeholder-images`` writes deterministic stand-ins
for missing image files (the shared benches ship without images) so the pipeline runs end to end;
accuracies on placeholders say nothing about the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

from rmserve.models import ScoreItem

from .data.base import DataError, Fields, ReadReport, read_jsonl, record_images
from .data.mmrewardbench import parse_mmrewardbench
from .data.mmrlhf import parse_mmrlhf
from .data.pairwise import parse_pairwise
from .data.placeholders import generate_placeholder_images
from .data.synthetic import generate_demo_pairs
from .data.vlrewardbench import parse_vlrewardbench
from .records import PairRecord
from .scoring import Scorer, add_scorer_arguments, close_scorer, scorer_from_args

BENCHMARKS = ("pairwise", "mm_rlhf", "vl_reward_bench", "mm_rewardbench", "synthetic")
CHUNK_RECORDS = 128  # records scored per call: bounds decoded images in memory

# VL-RewardBench's three groups by id prefix. General = WildVision + VLFeedback (whose ids carry their
# source tasks: LRVInstruction, svit, jailbreak, politics, ...). Checked on the shared copy: this gives
# the paper's 183 / 749 / 318; counting LRVInstruction as hallucination would give 182 / 750.
VL_REWARD_BENCH_GROUPS = (("reasoning", ("mathverse", "mmmu")),
                          ("hallucination", ("hallucination_pair", "rlaif-v", "rlhf-v")))


# ---- reading -------------------------------------------------------------------------------
def vl_reward_bench_group(record_id: str) -> str:
    """general | hallucination | reasoning, from a VL-RewardBench id."""
    rid = record_id.lower()
    for group, prefixes in VL_REWARD_BENCH_GROUPS:
        if rid.startswith(prefixes):
            return group
    return "general"


def detect_benchmark(path: str) -> str:
    """Guess the format from the file name, then from the first row's keys."""
    if path == "synthetic":
        return "synthetic"
    name = os.path.basename(path).lower()
    if "vl_reward" in name or "vlreward" in name:
        return "vl_reward_bench"
    if "mm_reward_bench" in name or "mm-rlhf" in name or "mmrlhf" in name:
        return "mm_rlhf"
    with open(path) as f:
        first = next((line for line in f if line.strip()), "{}")
    keys = set(json.loads(first))
    if {"Output1", "Output2", "Better"} <= keys:
        return "mm_rewardbench"
    if {"query", "human_ranking"} <= keys:
        return "vl_reward_bench"
    return "pairwise"


def mmrlhf_bench_parser(max_frames: int = 4):
    """MM-RLHF-RewardBench rows: category = the first folder of the media path (mcq, long, short, safety,
    video); a video (an MP4 file or a directory of frames) is scored as a video, ``max_frames`` of it."""

    def parse(f: Fields) -> PairRecord:
        media = f.obj.get("image") or f.obj.get("video")
        record = parse_mmrlhf(dataclasses.replace(f, max_frames=max_frames))
        if isinstance(media, str) and "/" in media:
            record.category = media.split("/")[0]
        return record

    return parse


def load_records(path: str, benchmark: str = "auto", *, image_root: str | None = None, limit: int | None = None,
                 max_frames: int = 4, synthetic_n: int = 500, seed: int = 0, split: str = "heldout",
                 ) -> tuple[list[PairRecord], ReadReport, str]:
    """Read an eval set (bad lines skipped and counted). Images are decoded lazily, at scoring time."""
    if benchmark == "auto":
        benchmark = detect_benchmark(path)
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {BENCHMARKS} or auto")
    if benchmark == "synthetic":
        records = generate_demo_pairs(synthetic_n, seed, split=split)
        return records, ReadReport(f"synthetic:{split}:{seed}", kept=len(records)), benchmark
    parse, id_key = {
        "pairwise": (parse_pairwise, "id"),
        "mm_rlhf": (mmrlhf_bench_parser(max_frames), "id"),
        "vl_reward_bench": (parse_vlrewardbench, "id"),
        "mm_rewardbench": (parse_mmrewardbench, "ID"),
    }[benchmark]
    records, report = read_jsonl(path, parse, image_root=image_root, skip_bad=True, lazy_images=True,
                                 id_key=id_key, limit=limit)
    if benchmark == "vl_reward_bench":
        for r in records:
            r.category = vl_reward_bench_group(r.id)
    return records, report, benchmark


# ---- scoring -------------------------------------------------------------------------------
@dataclass
class ScoredPair:
    id: str
    category: str
    chosen: float | None
    rejected: float | None
    error: str | None = None

    @property
    def scored(self) -> bool:
        return self.chosen is not None and self.rejected is not None

    @property
    def margin(self) -> float:
        return self.chosen - self.rejected

    @property
    def correct(self) -> bool:
        return self.scored and self.chosen > self.rejected  # strict: a tie is wrong


def _score_item(record: PairRecord, images: list, response: str) -> ScoreItem:
    if isinstance(record.prompt, list):
        return ScoreItem(response=response, messages=record.prompt, images=images, videos=record.videos,
                         truncate=True)
    return ScoreItem(response=response, prompt=record.prompt, images=images, truncate=True)


def score_pairs(records: list[PairRecord], scorer: Scorer, *, chunk: int = CHUNK_RECORDS,
                progress: bool = False) -> list[ScoredPair]:
    """Score both sides of every pair; a response shared by pairs of one prompt is scored once.

    A pairwise judge (``scorer.pairwise``) compares the two sides instead: chosen = P(chosen better) as
    ``/v1/compare`` gives it (both orders averaged), rejected = 1 - that, so accuracy and the metrics read
    the same way (margin = 2 P - 1)."""
    if getattr(scorer, "pairwise", False):
        return _compare_pairs(records, scorer, chunk=chunk, progress=progress)
    out: list[ScoredPair] = []
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        items: list[ScoreItem] = []
        index: dict[tuple, int] = {}
        sides: list[tuple[int | None, int | None, str | None]] = []
        images_of: dict[tuple, list] = {}
        for r in part:
            image_key = tuple(r.image_paths) or tuple(id(im) for im in r.images)
            try:
                if image_key not in images_of:
                    images_of[image_key] = record_images(r)
            except DataError as e:
                sides.append((None, None, str(e)))
                continue
            ids = []
            for response in (r.chosen, r.rejected):
                video_key = tuple(v.key or id(v) for v in r.videos)  # records differing only in a video differ
                key = (json.dumps(r.prompt), image_key, video_key, response)
                if key not in index:
                    index[key] = len(items)
                    items.append(_score_item(r, images_of[image_key], response))
                ids.append(index[key])
            sides.append((ids[0], ids[1], None))
        rewards = scorer.score(items)
        for r, (c, j, error) in zip(part, sides, strict=True):
            if error is None:
                error = scorer.errors.get(c) or scorer.errors.get(j)
            out.append(ScoredPair(r.id, r.category or "all", rewards[c] if c is not None else None,
                                  rewards[j] if j is not None else None, error))
        if progress:
            print(f"  scored {min(start + chunk, len(records))}/{len(records)} pairs", flush=True)
    return out


def _compare_pairs(records: list[PairRecord], scorer, *, chunk: int, progress: bool) -> list[ScoredPair]:
    out: list[ScoredPair] = []
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        pairs: list[tuple[ScoreItem, ScoreItem]] = []
        slots: list[tuple[int | None, str | None]] = []
        for r in part:
            try:
                images = record_images(r)
            except DataError as e:
                slots.append((None, str(e)))
                continue
            slots.append((len(pairs), None))
            pairs.append((_score_item(r, images, r.chosen), _score_item(r, images, r.rejected)))
        probs = scorer.compare(pairs)
        for r, (k, error) in zip(part, slots, strict=True):
            p = probs[k] if k is not None else None
            error = error or (scorer.errors.get(k) if k is not None else None)
            out.append(ScoredPair(r.id, r.category or "all", p, None if p is None else 1.0 - p, error))
        if progress:
            print(f"  compared {min(start + chunk, len(records))}/{len(records)} pairs", flush=True)
    return out


# ---- metrics -------------------------------------------------------------------------------
def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _block(pairs: list[ScoredPair]) -> dict:
    scored = [p for p in pairs if p.scored]
    by_id: dict[str, list[ScoredPair]] = defaultdict(list)
    for p in pairs:
        by_id[p.id].append(p)
    complete = [g for g in by_id.values() if all(p.scored for p in g)]  # Acc+ needs every pair of an id
    return {
        "n": len(pairs),
        "n_scored": len(scored),
        "accuracy": _mean(p.correct for p in scored),
        "acc_plus": _mean(all(p.correct for p in g) for g in complete),
        "n_ids": len(complete),
        "ties": sum(p.chosen == p.rejected for p in scored),
        "mean_margin": _mean(p.margin for p in scored),
    }


def pairwise_metrics(pairs: list[ScoredPair]) -> dict:
    """Overall accuracy, Acc+, macro accuracy over categories, and one block per category."""
    overall = _block(pairs)
    by_category: dict[str, list[ScoredPair]] = defaultdict(list)
    for p in pairs:
        by_category[p.category].append(p)
    categories = {name: _block(ps) for name, ps in sorted(by_category.items())}
    accs = [c["accuracy"] for c in categories.values() if c["accuracy"] is not None]
    margins = [p.margin for p in pairs if p.scored]
    return {
        "n_pairs": overall["n"],
        "n_scored": overall["n_scored"],
        "n_skipped": overall["n"] - overall["n_scored"],
        "accuracy": overall["accuracy"],
        "acc_plus": overall["acc_plus"],
        "macro_accuracy": _mean(accs),
        "ties": overall["ties"],
        "margin": {
            "mean": _mean(margins),
            "median": statistics.median(margins) if margins else None,
            "std": statistics.pstdev(margins) if margins else None,
        },
        "categories": categories,
    }


def headline(metrics: dict, benchmark: str) -> dict:
    """The numbers each benchmark's paper reports."""
    if benchmark == "vl_reward_bench":
        return {"overall_accuracy": metrics["accuracy"], "macro_accuracy": metrics["macro_accuracy"]}
    if benchmark == "mm_rlhf":
        return {"acc": metrics["accuracy"], "acc_plus": metrics["acc_plus"]}
    return {"accuracy": metrics["accuracy"], "macro_accuracy": metrics["macro_accuracy"]}


# ---- output --------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_margins(pairs: list[ScoredPair], path: str, title: str = "") -> None:
    """Histogram of reward(chosen) - reward(rejected); mass right of 0 is what accuracy counts."""
    plt = _plt()
    margins = [p.margin for p in pairs if p.scored]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.hist(margins, bins=max(10, min(60, len(margins) // 5)), color="#4878a8", edgecolor="white")
    ax.axvline(0.0, color="#c03030", linestyle="--", linewidth=1)
    ax.set_xlabel("reward(chosen) - reward(rejected)")
    ax.set_ylabel("pairs")
    ax.set_title(title or "reward margins")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_categories(metrics: dict, path: str, title: str = "") -> None:
    """Accuracy and Acc+ per category (n under each bar group); the dashed line is chance."""
    plt = _plt()
    names = list(metrics["categories"])
    acc = [metrics["categories"][n]["accuracy"] or 0.0 for n in names]
    acc_plus = [metrics["categories"][n]["acc_plus"] or 0.0 for n in names]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(names) + 2), 4))
    ax.bar([x - 0.2 for x in xs], acc, width=0.4, label="accuracy", color="#4878a8")
    ax.bar([x + 0.2 for x in xs], acc_plus, width=0.4, label="Acc+", color="#e1a03c")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{n}\n(n={metrics['categories'][n]['n_scored']})" for n in names], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share correct")
    ax.set_title(title or "accuracy per category")
    ax.legend(loc="upper right", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(metrics: dict) -> str:
    def f(x):
        return "  -  " if x is None else f"{x:.3f}"

    lines = [f"{'category':<16}{'pairs':>7}{'acc':>8}{'acc+':>8}{'ids':>6}{'margin':>9}"]
    rows = list(metrics["categories"].items()) + [("overall", {
        "n_scored": metrics["n_scored"], "accuracy": metrics["accuracy"], "acc_plus": metrics["acc_plus"],
        "n_ids": sum(c["n_ids"] for c in metrics["categories"].values()), "mean_margin": metrics["margin"]["mean"]})]
    for name, c in rows:
        lines.append(f"{name[:15]:<16}{c['n_scored']:>7}{f(c['accuracy']):>8}{f(c['acc_plus']):>8}"
                     f"{c['n_ids']:>6}{f(c['mean_margin']):>9}")
    lines.append(f"macro accuracy {f(metrics['macro_accuracy'])}; skipped pairs {metrics['n_skipped']}; "
                 f"ties {metrics['ties']}")
    return "\n".join(lines)


def evaluate(records: list[PairRecord], scorer: Scorer, *, benchmark: str = "pairwise", out_dir: str | None = None,
             dataset: str = "", plots: bool = True, progress: bool = False, extra: dict | None = None) -> dict:
    """Score, compute metrics and (with ``out_dir``) write report.json, scores.jsonl and the plots.

    ``extra`` is merged into the report (e.g. what the reader skipped).
    """
    t0 = time.perf_counter()
    pairs = score_pairs(records, scorer, progress=progress)
    metrics = pairwise_metrics(pairs)
    errors = [f"{p.id}: {p.error}" for p in pairs if p.error][:20]
    report = {"dataset": dataset, "benchmark": benchmark, "model": scorer.name,
              "headline": headline(metrics, benchmark), **metrics, "score_errors": errors,
              "seconds": round(time.perf_counter() - t0, 2), **(extra or {})}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(out_dir, "scores.jsonl"), "w") as f:
            for p in pairs:
                f.write(json.dumps(asdict(p)) + "\n")
        if plots:
            name = os.path.basename(dataset) or benchmark
            plot_margins(pairs, os.path.join(out_dir, "margin_hist.png"), f"{name}: reward margins")
            plot_categories(metrics, os.path.join(out_dir, "category_accuracy.png"), f"{name}: accuracy per category")
    return report


# ---- command -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="eval JSONL, or 'synthetic' for generated demo pairs")
    parser.add_argument("--benchmark", default="auto", choices=("auto",) + BENCHMARKS,
                        help="input format and metric set (auto: from the file name / first row)")
    parser.add_argument("--image-root", default=None, help="image paths are relative to this (default: the "
                        "JSONL's folder; with --placeholder-images: OUT/placeholder-images)")
    parser.add_argument("--placeholder-images", action="store_true",
                        help="write deterministic stand-ins for missing images into the image root first")
    parser.add_argument("--out", default="eval-out", help="directory for report.json, scores.jsonl and plots")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many pairs")
    parser.add_argument("--max-frames", type=int, default=4, help="frames per video (a directory of frames)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--synthetic-n", type=int, default=500, help="with data=synthetic: number of pairs")
    parser.add_argument("--seed", type=int, default=0, help="with data=synthetic")
    parser.add_argument("--split", default="heldout", help="with data=synthetic: seed stream (train is trained on)")
    add_scorer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    image_root = args.image_root
    if args.placeholder_images and args.data != "synthetic":
        image_root = image_root or os.path.join(args.out, "placeholder-images")
        written = generate_placeholder_images(args.data, image_root)
        print(f"placeholder images: {written} written to {image_root}")
    records, read_report, benchmark = load_records(
        args.data, args.benchmark, image_root=image_root, limit=args.limit, max_frames=args.max_frames,
        synthetic_n=args.synthetic_n, seed=args.seed, split=args.split)
    print(read_report.summary())
    if not records:
        print("nothing to evaluate")
        return 1
    scorer = scorer_from_args(args)
    read = {"kept": read_report.kept, "skipped": read_report.skipped, "errors": read_report.errors}
    try:
        report = evaluate(records, scorer, benchmark=benchmark, out_dir=args.out, dataset=args.data,
                          plots=not args.no_plots, progress=True, extra={"read": read})
    finally:
        close_scorer(scorer)
    print(format_table(report))
    print(f"headline: {json.dumps(report['headline'])}; wrote {args.out}/report.json in {report['seconds']} s")
    return 0


__all__ = ["vl_reward_bench_group", "ScoredPair", "score_pairs", "pairwise_metrics", "headline", "evaluate",
           "load_records", "detect_benchmark", "plot_margins", "plot_categories", "format_table", "add_arguments",
           "run"]
