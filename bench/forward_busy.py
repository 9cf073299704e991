"""``make bench-busy``: where `rmserve serve`'s time goes on the benchmark model, thread by thread.

    python -m bench.forward_busy [--workloads text,grpo] [--responses 128] [--rounds 2] [--preset full]

Starts one ``rmserve serve`` on the ``make bench`` model (``--preset full``: the 34.5M Qwen2.5-VL,
built once under bench/.cache; ``--model-dir`` for another), torch threads = all cores as in
``make bench``, warms it, then drives each workload (bench/workloads.py, one response per request,
64 in flight) for ``--rounds`` rounds and reports, per round:

- responses/s and the worker's share of wall time spent inside batches (the server's own
  ``rmserve_batch_duration_seconds``, from ``/metrics``): near 1.0 means the forward is the whole story
  and the only way up is a faster forward;
- the forward's cost per response (batch seconds / responses), to set beside the in-process ceiling's
  (``make bench``'s "one batch" column divided by its batch size);
- minor page faults per response, all threads (``/proc/PID/task/*/stat``): memory the kernel had to map
  and zero again, e.g. a forward's freed activations with ``--no-retain-host-memory`` (rmserve/host_memory.py);
- forward sleeps per response: voluntary context switches of the ``--threads`` busiest threads (the
  forward's OpenMP team). Near 0 when the team spins between parallel regions as it does in process; ~100
  when libgomp, seeing more OpenMP threads alive than cores, makes them sleep and wake around every op
  (a second team left by a thread that loaded or warmed the model: bench/README.md, "One OpenMP team");
- CPU cores used by each thread of the server (``/proc/PID/task/*/stat``), busiest first: the worker and
  the intra-op (OpenMP) threads it drives are the forward; everything else (event loop, preprocessing
  pool, batcher) is the serving overhead, measured where it runs.

Why beside ``make bench``: that run says how far rmserve is from the ceiling; this one says whether the
gap is serving work (threads other than the forward's) or the forward itself running slower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from .client import drive
from .cpu_profile import thread_cpu, thread_minor_faults, thread_sleeps
from .floor import rmserve_argv
from .model import MODELS, ensure_model
from .run import PRESETS, metric_delta, scrape_metrics
from .servers import ServerProcess, thread_env
from .workloads import WORKLOADS, WorkloadFactory


def measure_round(server: ServerProcess, bodies: list[list[bytes]], concurrency: int, team: int) -> dict:
    """One load: rate, the worker's busy share (batch seconds / wall), each thread's cores, and the sleeps of
    the ``team`` busiest threads (the forward's)."""
    faults0, sleeps0 = sum(thread_minor_faults(server.pid).values()), thread_sleeps(server.pid)
    m0, cpu0, t0 = scrape_metrics(server.url), thread_cpu(server.pid), time.perf_counter()
    result = asyncio.run(drive(server.url, bodies, concurrency=concurrency))
    wall = time.perf_counter() - t0
    m1, cpu1 = scrape_metrics(server.url), thread_cpu(server.pid)
    faults1, sleeps1 = sum(thread_minor_faults(server.pid).values()), thread_sleeps(server.pid)
    n = sum(len(g) for g in bodies)
    batches = metric_delta(m0, m1, "rmserve_batch_size_count")
    batch_s = metric_delta(m0, m1, "rmserve_batch_duration_seconds_sum")
    cores = sorted(((tid, (cpu1[tid] - cpu0.get(tid, 0.0)) / wall) for tid in cpu1), key=lambda x: -x[1])
    forward = [tid for tid, _ in cores[:team]]
    return {"responses": n, "errors": len(result.errors), "responses_per_s": n / wall, "batches": batches,
            "mean_batch": metric_delta(m0, m1, "rmserve_batch_size_sum") / max(batches, 1),
            "forward_busy": batch_s / wall, "forward_ms_per_response": batch_s / n * 1000,
            "page_faults_per_response": (faults1 - faults0) / n,
            "forward_sleeps_per_response": sum(sleeps1.get(t, 0) - sleeps0.get(t, 0) for t in forward) / n,
            "thread_cores": [round(c, 3) for _, c in cores if c >= 0.005]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forward_busy", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--model-dir", help="an rmserve checkpoint instead of the preset's model")
    parser.add_argument("--workloads", default="text,grpo", help=f"comma list of {','.join(WORKLOADS)}")
    parser.add_argument("--responses", type=int, default=128, help="responses per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    args = parser.parse_args(argv)
    model_dir = args.model_dir or ensure_model(MODELS[PRESETS[args.preset].model])
    from rmserve.models import load_reward_model

    factory = WorkloadFactory(load_reward_model(model_dir).tokenizer)
    server = ServerProcess("rmserve", rmserve_argv(model_dir, *args.server_arg), "/tmp/rmserve-forward-busy.log",
                           env=thread_env(args.threads)).start()
    print(f"model {model_dir}, {args.threads} torch threads, {args.concurrency} in flight, server pid {server.pid}")
    print("| workload | round | responses/s | mean batch | forward busy | forward ms/response | "
          "page faults/response | forward sleeps/response | cores per thread, busiest first |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    try:
        for name in [w.strip() for w in args.workloads.split(",") if w.strip()]:
            asyncio.run(drive(server.url, factory.build(name, 64, seed=99).bodies(), concurrency=args.concurrency))
            for k in range(args.rounds):
                row = measure_round(server, factory.build(name, args.responses, seed=k + 1).bodies(),
                                    args.concurrency, args.threads)
                if row["errors"]:
                    raise SystemExit(f"{name}: {row['errors']} requests failed")
                print(f"| {name} | {k + 1} | {row['responses_per_s']:.2f} | {row['mean_batch']:.1f} | "
                      f"{row['forward_busy']:.3f} | {row['forward_ms_per_response']:.1f} | "
                      f"{row['page_faults_per_response']:.0f} | {row['forward_sleeps_per_response']:.1f} | "
                      f"{', '.join(f'{c:.2f}' for c in row['thread_cores'])} |", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
