"""What a little CPU work beside the forward costs it: the in-process ceiling with and without a small burner.

    python -m bench.contention [--burst-ms 0.4] [--period-ms 8] [--rounds 3] [--responses 128]

A server's threads other than the forward's (event loop, preprocessing) use a few percent of a core, and on a
machine whose cores the forward's OpenMP threads fill, each wake-up preempts one of them; every parallel region
then waits for its slowest thread. This measures that amplification directly, without a server: the text
workload's ceiling batches (batch 8, length-sorted, ``model.score_batch``) alone, with a thread that wakes every
``--period-ms`` for ``--burst-ms`` of Python, and with the same burner in another process (no shared GIL). If
the burner costs the forward far more than its own CPU share, and as much from another process as from a
thread, the cost is CPU preemption, not the GIL (bench/README.md, "Where the text gap goes").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import threading
import time

from .ceiling import encode_workload, run_ceiling
from .model import MODELS, ensure_model, load_in_process
from .run import PRESETS
from .workloads import WorkloadFactory


def burn(stop, burst_s: float, period_s: float) -> None:
    """Python work for ``burst_s``, then sleep ``period_s``, until ``stop`` is set."""
    while not stop.is_set():
        start = time.perf_counter()
        while time.perf_counter() - start < burst_s:
            sum(i * i for i in range(200))
        time.sleep(period_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--responses", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst-ms", type=float, default=0.4)
    parser.add_argument("--period-ms", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    model = load_in_process(ensure_model(MODELS[PRESETS[args.preset].model]), args.threads)
    groups = encode_workload(model, WorkloadFactory(model.tokenizer).build("text", args.responses, seed=1))

    def rate() -> float:
        return run_ceiling(model, groups, 8, warmup=False).responses_per_s

    rate()  # warm-up: first calls at new shapes pay one-off costs
    burst, period = args.burst_ms / 1000, args.period_ms / 1000
    share = burst / (burst + period) / (os.cpu_count() or 1)
    modes = ("alone", "burner thread", "burner process")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            if mode == "alone":
                rates[mode].append(rate())
                continue
            stop = threading.Event() if mode == "burner thread" else mp.Event()
            kind = threading.Thread if mode == "burner thread" else mp.Process
            burner = kind(target=burn, args=(stop, burst, period), daemon=True)
            burner.start()
            try:
                rates[mode].append(rate())
            finally:
                stop.set()
                burner.join()
    alone = statistics.median(rates["alone"])
    print(f"text ceiling batches (batch 8), {args.responses} responses, {args.threads} torch threads; burner: "
          f"{args.burst_ms} ms every {args.period_ms} ms = {share:.1%} of the machine's CPU\n")
    print("| mode | responses/s (rounds) | median | cost vs alone |\n|---|---|---:|---:|")
    for mode in modes:
        med = statistics.median(rates[mode])
        print(f"| {mode} | {', '.join(f'{r:.2f}' for r in rates[mode])} | {med:.2f} | {1 - med / alone:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
