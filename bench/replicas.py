"""Three replicas behind nginx: GRPO load with the routing key vs round robin, against three independent servers.

    python -m bench.replicas --seconds 90          # make bench-replicas (BENCH_REPLICAS_ARGS="--seconds 60")

Each setup gets the same load for ``--seconds`` (bench/steady.py: G=8, a fresh PNG per group sent inline, 64 in
flight; the default model, so the proxy path and the caches, not compute, are what differs):
- ``key``: 3 replicas behind nginx hashing on x-rmserve-group (deploy/nginx.conf as shipped);
- ``round_robin``: the same replicas behind nginx without the hash (each group's 8 requests spread out);
- ``independent``: 3 servers without a proxy, each fed whole groups (the load driver picks one per group):
  the ceiling the proxy should approach.
Reported: responses/s, p50/p99, and each cache's hit rate summed over the replicas' /metrics (decoded
images, vision features, preprocessed prompts). Writes bench/results/replicas/replicas.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.steady import grpo_load
from rmserve.models import default_model_path
from scripts.replicas import Cluster, total

CACHES = {"image": "rmserve_image_cache", "vision": "rmserve_vision_cache", "prompt": "rmserve_prompt_cache"}
SETUPS = ("key", "round_robin", "independent")


def cache_counts(cluster: Cluster) -> dict[str, tuple[float, float]]:
    """Cache -> (hits, misses), summed over the replicas."""
    metrics = cluster.metrics()
    return {name: (sum(total(m, f"{prefix}_hits_total") for m in metrics),
                   sum(total(m, f"{prefix}_misses_total") for m in metrics))
            for name, prefix in CACHES.items()}


def run_setup(setup: str, args, serve: list[str]) -> dict:
    proxy = "none" if setup == "independent" else "nginx"
    balance = "round_robin" if setup == "round_robin" else "hash"
    with Cluster(3, proxy, serve_args=serve, balance=balance) as cluster:
        targets = [r.url for r in cluster.members] if setup == "independent" else [cluster.url]
        asyncio.run(grpo_load(targets, seconds=min(10.0, args.seconds / 4), concurrency=args.concurrency,
                              image_size=args.image_size, seed=1))  # warm-up (not counted)
        before = cache_counts(cluster)
        result = asyncio.run(grpo_load(targets, seconds=args.seconds, concurrency=args.concurrency,
                                       image_size=args.image_size, seed=2, routing_key=setup != "round_robin"))
        after = cache_counts(cluster)
    rates = {}
    for name in CACHES:
        hits, misses = (after[name][k] - before[name][k] for k in (0, 1))
        rates[name] = hits / (hits + misses) if hits + misses else None
    row = {"setup": setup, "responses": result.ok, "seconds": result.seconds, "throughput": result.throughput,
           "p50_s": result.p(50), "p99_s": result.p(99), "transport_errors": len(result.transport_errors),
           "statuses": dict(result.statuses), "hit_rates": rates}
    print(json.dumps(row), flush=True)
    return row


def report(rows: list[dict], args, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "replicas.json").write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    by = {r["setup"]: r for r in rows}
    ceiling = by.get("independent", {}).get("throughput")

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [
        "# Three replicas: routing key vs round robin", "",
        f"GRPO G=8, a fresh {args.image_size}x{args.image_size} PNG inline per group, {args.concurrency} in flight, "
        f"{args.seconds:.0f} s per setup after a warm-up, the default model, one 2-core machine shared by the "
        "replicas, nginx and the load generator (so absolute numbers are small; the ratios are the point).", "",
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
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--model", default=None, help="default: the bundled default model")
    parser.add_argument("--out", default="bench/results/replicas")
    args = parser.parse_args(argv)
    serve = ["--model", args.model or default_model_path(), "--log-level", "warning"]
    rows = [run_setup(setup, args, serve) for setup in args.setups.split(",")]
    report(rows, args, Path(args.out))
    print((Path(args.out) / "replicas.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
