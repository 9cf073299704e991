"""Three replicas behind nginx: GRPO load with the routing key vs without, against the replicas fed directly.

    python -m bench.replicas --seconds 90          # make bench-replicas (BENCH_REPLICAS_ARGS="--seconds 60")

One cluster (3 replicas, nginx in front with deploy/nginx.conf as shipped) serves three setups, each for
``--seconds`` in all (bench/steady.py: G=8, a fresh PNG per group sent inline, 64 in flight; the default
model, so the proxy path and the caches, not compute, are what differs):
- ``key``: through nginx, every request with its x-rmserve-group (nginx hashes it: a group on one replica);
- ``no_key``: through nginx without the header (nginx spreads such requests at random, like round robin:
  each group's 8 requests over the replicas);
- ``independent``: the replicas without the proxy, each fed whole groups (the load driver picks one per group):
  the ceiling the proxy should approach.
The setups run interleaved, in ``--rounds`` short turns each (in a rotating order), on the same replicas: on a
shared machine whose load drifts over minutes, running them one after the other compared different machines.
Reported: responses/s, p50/p99, and each cache's hit rate summed over the replicas' /metrics (decoded
images, vision features, preprocessed prompts; a miss is a computation, so 87.5% = once per group of 8).
Writes bench/results/replicas/replicas.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from bench.steady import LoadResult, grpo_load
from rmserve.models import default_model_path
from scripts.replicas import Cluster, total

CACHES = {"image": "rmserve_image_cache", "vision": "rmserve_vision_cache", "prompt": "rmserve_prompt_cache"}
SETUPS = ("key", "no_key", "independent")


def cache_counts(cluster: Cluster) -> dict[str, tuple[float, float]]:
    """Cache -> (hits, misses), summed over the replicas."""
    metrics = cluster.metrics()
    return {name: (sum(total(m, f"{prefix}_hits_total") for m in metrics),
                   sum(total(m, f"{prefix}_misses_total") for m in metrics))
            for name, prefix in CACHES.items()}


def run(args, serve: list[str]) -> list[dict]:
    setups = args.setups.split(",")
    unknown = set(setups) - set(SETUPS)
    if unknown:
        raise SystemExit(f"unknown setup(s) {sorted(unknown)}; choose from {SETUPS}")
    results = {s: LoadResult() for s in setups}
    counts = {s: {name: [0.0, 0.0] for name in CACHES} for s in setups}
    with Cluster(3, "nginx", serve_args=serve) as cluster:
        targets = {"key": [cluster.url], "no_key": [cluster.url], "independent": [r.url for r in cluster.members]}
        load = {"concurrency": args.concurrency, "image_size": args.image_size}
        asyncio.run(grpo_load(targets["independent"], seconds=min(10.0, args.seconds / 4), seed=1, **load))  # warm-up
        turn = args.seconds / args.rounds
        for k in range(args.rounds):
            for j in range(len(setups)):
                setup = setups[(k + j) % len(setups)]  # rotate, so no setup always follows the same one
                before = cache_counts(cluster)
                # A new seed every turn: fresh images, never a hit left over from an earlier turn.
                got = asyncio.run(grpo_load(targets[setup], seconds=turn, seed=2 + k * len(setups) + j,
                                            routing_key=setup != "no_key", **load))
                after = cache_counts(cluster)
                _merge(results[setup], got)
                for name in CACHES:
                    for i in (0, 1):
                        counts[setup][name][i] += after[name][i] - before[name][i]
    rows = []
    for setup in setups:
        result = results[setup]
        rates = {name: hits / (hits + misses) if hits + misses else None
                 for name, (hits, misses) in counts[setup].items()}
        row = {"setup": setup, "responses": result.ok, "seconds": result.seconds, "throughput": result.throughput,
               "p50_s": result.p(50), "p99_s": result.p(99), "transport_errors": len(result.transport_errors),
               "statuses": dict(result.statuses), "hit_rates": rates}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _merge(into: LoadResult, got: LoadResult) -> None:
    into.ok += got.ok
    into.statuses = Counter(into.statuses) + Counter(got.statuses)
    into.transport_errors += got.transport_errors
    into.latencies_s += got.latencies_s
    into.seconds += got.seconds


def report(rows: list[dict], args, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "replicas.json").write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    by = {r["setup"]: r for r in rows}
    ceiling = by.get("independent", {}).get("throughput")

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [
        "# Three replicas: routing key vs no key", "",
        f"GRPO G=8, a fresh {args.image_size}x{args.image_size} PNG inline per group, {args.concurrency} in flight, "
        f"{args.seconds:.0f} s per setup after a warm-up, in {args.rounds} interleaved turns each on the same 3 "
        "replicas (nginx in front for key and no_key; no_key: nginx spreads requests at random), the default "
        "model, one 2-core machine shared by the replicas, nginx, the load generator and other jobs (so absolute "
        "numbers are small; the ratios are the point).", "",
        "Hit rates are summed over the replicas' /metrics: 1 - computations / uses (a decode, a preprocess, a "
        "vision encode per miss; every request is one use of its image and prompt), so one computation per "
        f"group of G=8 is {100 * 7 / 8:.1f}%, however the group's requests were batched.", "",
        "| setup | responses/s | vs independent | p50 s | p99 s | image cache hits | vision cache hits | "
        "prompt cache hits | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['throughput'] / ceiling:.2f}" if ceiling else "-"
        hr = r["hit_rates"]
        lines.append(f"| {r['setup']} | {r['throughput']:.1f} | {ratio} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | "
                     f"{pct(hr['image'])} | {pct(hr['vision'])} | {pct(hr['prompt'])} | "
                     f"{r['transport_errors'] + sum(r['statuses'].values())} |")
    (out / "replicas.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="per setup, in all")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved turns per setup")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--model", default=None, help="default: the bundled default model")
    parser.add_argument("--out", default="bench/results/replicas")
    args = parser.parse_args(argv)
    serve = ["--model", args.model or default_model_path(), "--log-level", "warning"]
    rows = run(args, serve)
    report(rows, args, Path(args.out))
    print((Path(args.out) / "replicas.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
