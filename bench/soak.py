"""Days of uptime, compressed: fresh-image GRPO requests with the caches full, RSS and throughput over time.

    python -m bench.soak --requests 100000            # make soak (SOAK_ARGS="--seconds 600" for a bounded run)

One `rmserve serve` (the default model; 16 MiB image, vision-feature and prompt caches, so they fill in the
first minute and then evict), driven by bench/steady.py (G=8, a fresh 224x224 PNG inline per group, 64 in
flight). Every ``--sample-s`` seconds: responses, throughput in the window, the server's RSS and the bytes its
byte-bounded caches hold (/metrics). Verdict, measured from the first sample with the caches full: RSS
outside the caches grows < 5% of the starting RSS, and the last third's throughput is within 15% of the
first third's. Writes bench/results/soak/soak.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from bench.steady import grpo_load
from rmserve.models import default_model_path
from scripts.replicas import Cluster, total

CACHES = ("rmserve_image_cache_bytes", "rmserve_vision_cache_bytes", "rmserve_prompt_cache_bytes")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def verdict(samples: list[dict]) -> dict:
    """Growth outside the caches and throughput drift, from the first sample whose caches hold 95% of what
    they hold at the end (full: from then on they evict as much as they take in)."""
    final = samples[-1]["cache_mib"] if samples else 0.0
    full = next((i for i, s in enumerate(samples) if s["cache_mib"] >= 0.95 * final), None) if final else None
    if full is None or len(samples) - full < 3:
        return {"verdict": "too short: the caches never filled, or too few samples after they did", "flat": None}
    run = samples[full:]
    start, end = run[0], run[-1]
    growth = (end["rss_mib"] - end["cache_mib"]) - (start["rss_mib"] - start["cache_mib"])
    third = max(1, len(run) // 3)
    first = sum(s["window_rps"] for s in run[:third]) / third
    last = sum(s["window_rps"] for s in run[-third:]) / third
    flat_rss = growth < 0.05 * start["rss_mib"]
    flat_rate = last >= 0.85 * first
    # The server's CPU per response does not depend on what else runs on the machine: on a shared machine a
    # throughput dip from other load shows as a rate drop with a flat cost, a server slowing down as a rising one.
    cpu_first = _mean_cost(run[:third])
    cpu_last = _mean_cost(run[-third:])
    flat_cost = cpu_first is not None and cpu_last is not None and cpu_last <= 1.15 * cpu_first
    return {"cpu_ms_per_response_first_third": cpu_first, "cpu_ms_per_response_last_third": cpu_last,
            "cost_flat": flat_cost, "flat": flat_rss and (flat_rate or flat_cost),
            **{"from_s": start["t"], "start_rss_mib": start["rss_mib"], "end_rss_mib": end["rss_mib"],
            "growth_outside_caches_mib": growth, "tolerance_mib": 0.05 * start["rss_mib"],
            "throughput_first_third": first, "throughput_last_third": last,
            "rss_flat": flat_rss, "throughput_flat": flat_rate}}


def _mean_cost(window: list[dict]) -> float | None:
    """Server CPU milliseconds per response over a run of samples (None when the samples carry no CPU time)."""
    if any("cpu_s" not in s for s in window) or len(window) < 2:
        return None
    responses = window[-1]["responses"] - window[0]["responses"]
    return 1000 * (window[-1]["cpu_s"] - window[0]["cpu_s"]) / responses if responses else None


def report(out: Path, result, samples: list[dict], summary: dict, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"requests": result.requests, "ok": result.ok, "seconds": result.seconds,
            "transport_errors": len(result.transport_errors), "statuses": dict(result.statuses),
            "throughput": result.throughput, "p50_s": result.p(50), "p99_s": result.p(99),
            "samples": samples, "summary": summary, "args": vars(args)}
    (out / "soak.json").write_text(json.dumps(data, indent=1))
    lines = [
        "# Soak: fresh-image GRPO load, caches full", "",
        f"{result.requests} requests in {result.seconds:.0f} s ({result.throughput:.1f} responses/s), "
        f"{len(result.transport_errors)} transport errors, non-200: {dict(result.statuses) or 'none'}; "
        f"p50 {result.p(50):.2f} s, p99 {result.p(99):.2f} s.", "",
    ]
    if summary.get("flat") is None:
        lines.append(f"Verdict: {summary['verdict']}.")
    else:
        lines += [
            f"From {summary['from_s']:.0f} s (caches full): RSS {summary['start_rss_mib']:.0f} -> "
            f"{summary['end_rss_mib']:.0f} MiB; outside the caches {summary['growth_outside_caches_mib']:+.1f} MiB "
            f"(tolerance {summary['tolerance_mib']:.1f} MiB = 5% of the start); throughput "
            f"{summary['throughput_first_third']:.1f} -> {summary['throughput_last_third']:.1f} responses/s "
            f"(first vs last third); server CPU per response {_ms(summary['cpu_ms_per_response_first_third'])} -> "
            f"{_ms(summary['cpu_ms_per_response_last_third'])} ms. **{'flat' if summary['flat'] else 'NOT flat'}** "
            f"(RSS {'flat' if summary['rss_flat'] else 'GROWS'}; throughput "
            f"{'flat' if summary['throughput_flat'] else 'drops'}; CPU per response "
            f"{'flat' if summary['cost_flat'] else 'rises or unmeasured'}: flat = RSS flat and throughput or CPU "
            "per response flat, the latter for machines shared with other work).",
        ]
    lines += ["", "| t (s) | responses | responses/s (window) | server CPU ms/response | RSS MiB | caches MiB |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['t']:.0f} | {s['responses']} | {s['window_rps']:.1f} | {_ms(s.get('cpu_ms_per_response'))} | "
              f"{s['rss_mib']:.0f} | {s['cache_mib']:.1f} |" for s in samples]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        t = [s["t"] for s in samples]
        a.plot(t, [s["rss_mib"] for s in samples], label="RSS")
        a.plot(t, [s["rss_mib"] - s["cache_mib"] for s in samples], label="RSS outside the caches")
        a.set_ylabel("MiB")
        a.legend()
        b.plot(t, [s["window_rps"] for s in samples], label="responses/s")
        b.set_ylabel("responses/s")
        if all("cpu_ms_per_response" in s for s in samples):
            c = b.twinx()
            c.plot(t, [s["cpu_ms_per_response"] for s in samples], color="tab:red", label="server CPU ms/response")
            c.set_ylabel("server CPU ms/response")
            c.legend(loc="lower right")
        b.set_xlabel("seconds")
        fig.suptitle(f"soak: {result.requests} fresh-image GRPO requests")
        fig.savefig(out / "soak.png", dpi=100)
    except ImportError:
        pass


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long, whatever was sent")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cache-mb", type=int, default=16, help="each of the three caches")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--model", default=None, help="default: the bundled default model")
    parser.add_argument("--out", default="bench/results/soak")
    args = parser.parse_args(argv)
    mb = str(args.cache_mb)
    serve = ["--model", args.model or default_model_path(), "--log-level", "warning", "--image-cache-mb", mb,
             "--vision-cache-mb", mb, "--prompt-cache-mb", mb, "--max-queue-items", "1024"]
    samples: list[dict] = []
    with Cluster(1, "none", serve_args=serve) as cluster:
        replica = cluster.members[0]
        last = {"t": 0.0, "responses": 0, "cpu": cpu_seconds(replica.proc.pid)}

        def sample(t: float, result) -> None:
            metrics = cluster.metrics()[0]
            cache_mib = sum(total(metrics, name) for name in CACHES) / 2**20
            window = (result.ok - last["responses"]) / max(1e-9, t - last["t"])
            cpu = cpu_seconds(replica.proc.pid)
            cost = 1000 * (cpu - last["cpu"]) / max(1, result.ok - last["responses"])
            samples.append({"t": t, "responses": result.ok, "window_rps": window, "rss_mib": rss_mib(replica.proc.pid),
                            "cache_mib": cache_mib, "cpu_s": cpu, "cpu_ms_per_response": cost,
                            "transport_errors": len(result.transport_errors)})
            last.update(t=t, responses=result.ok, cpu=cpu)
            print(f"{t:7.0f} s  {result.ok:7d} ok  {window:6.1f}/s  {cost:5.1f} CPU ms/resp  "
                  f"RSS {samples[-1]['rss_mib']:6.0f} MiB  "
                  f"caches {cache_mib:5.1f} MiB  errors {len(result.transport_errors)}", flush=True)

        started = time.time()
        result = asyncio.run(grpo_load([replica.url], requests=args.requests, seconds=args.seconds,
                                       concurrency=args.concurrency, image_size=args.image_size,
                                       sample_every_s=args.sample_s, on_sample=lambda t, r: sample(t, r)))
        print(f"done in {time.time() - started:.0f} s", flush=True)
    summary = verdict(samples)
    report(Path(args.out), result, samples, summary, args)
    print(json.dumps(summary, indent=1))
    return 0 if summary.get("flat") and not result.transport_errors else 1


if __name__ == "__main__":
    sys.exit(main())
