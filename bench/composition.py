"""What batch composition costs the forward, in process: the ceiling's batches vs those a server can form.

    python -m bench.composition [--workload text] [--window 30] [--batch-size 16] [--responses 256] [--rounds 2]

The in-process ceiling (bench/ceiling.py) sorts every item of the run by length before it cuts batches, so
its forward calls carry almost no padding. A server only sees what has arrived: with 64 requests in flight
it takes ~30 at a time in arrival order, and the chunk planner (rmserve/models/chunking.py) sorts within
that window. A third plan closes each batch at one forward call's tokens (the chunk policy's cap, 1024 on
CPU) and picks its rows from all the requests waiting, as a batcher could (``call_sized_batches``). It pads
less and runs fewer calls, but rmserve does not batch this way: it starves unusual lengths (p99 latency
+60% through the server; bench/README.md, "Call-sized batches"). This replays the plans on the same model
and items, in one process, with nothing else running, so the differences are what composition alone costs
the forward, before any serving overhead. The report gives padded / real tokens and forward calls beside
the rates.
"""

from __future__ import annotations

import argparse
import os
import statistics

from rmserve.engine import EngineConfig
from rmserve.engine.batching import select_batch
from rmserve.models.chunking import plan_chunks

from .ceiling import _batches, encode_workload, run_ceiling
from .model import MODELS, ensure_model, load_in_process
from .run import PRESETS
from .workloads import WorkloadFactory


def arrival_windows(n_items: int, window: int) -> list[list[int]]:
    """Items in arrival (workload) order, ``window`` at a time: the batches a busy server forms."""
    return [list(range(i, min(i + window, n_items))) for i in range(0, n_items, window)]


def call_sized_batches(lengths: list[int], in_flight: int, call_tokens: int, max_batch_size: int) -> list[list[int]]:
    """The batches a batcher would form by closing each at one forward call's tokens: ``select_batch`` under
    ``call_tokens`` over the ``in_flight`` requests waiting (a closed loop: each finished batch lets as many
    new requests arrive), in arrival order."""
    waiting: list[int] = []
    batches: list[list[int]] = []
    arrived = last = 0
    while arrived < len(lengths) or waiting:
        while len(waiting) < in_flight - last and arrived < len(lengths):
            waiting.append(arrived)
            arrived += 1
        idx, _ = select_batch([lengths[i] for i in waiting], max_batch_size=max_batch_size,
                              max_batch_tokens=call_tokens)
        chosen = set(idx)
        batches.append([waiting[i] for i in idx])
        waiting = [w for i, w in enumerate(waiting) if i not in chosen]
        last = len(batches[-1])
    return batches


def padding_and_calls(model, flat, batches: list[list[int]]) -> tuple[float, int]:
    """(padded tokens / real tokens, forward calls) when ``model`` scores these batches."""
    padded = real = calls = 0
    for idx in batches:
        lengths = [flat[i].num_tokens for i in idx]
        chunks = plan_chunks(lengths, model.chunk_policy) if model.chunk_policy else [list(range(len(idx)))]
        for chunk in chunks:
            padded += max(lengths[c] for c in chunk) * len(chunk)
            real += sum(lengths[c] for c in chunk)
        calls += len(chunks)
    return padded / real, calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.composition", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--workload", default="text", choices=("text", "image"))
    parser.add_argument("--responses", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="the ceiling's batch (make bench picks 16 here)")
    parser.add_argument("--window", type=int, default=30, help="arrival-order batch, as a server under load forms")
    parser.add_argument("--in-flight", type=int, default=64, help="requests waiting, for the call-sized plan")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    model = load_in_process(ensure_model(MODELS[PRESETS[args.preset].model]), args.threads)
    groups = encode_workload(model, WorkloadFactory(model.tokenizer).build(args.workload, args.responses, seed=1))
    flat = [it for g in groups for it in g]
    plans = {f"ceiling: all sorted, batches of {args.batch_size}": _batches(groups, args.batch_size, False),
             f"server-like: arrival order, windows of {args.window}": arrival_windows(len(flat), args.window)}
    call_tokens = model.chunk_policy.max_tokens if model.chunk_policy else None
    if call_tokens:
        plans[f"call-sized: {call_tokens}-token batches from {args.in_flight} in flight"] = call_sized_batches(
            [it.num_tokens for it in flat], args.in_flight, call_tokens, max_batch_size=EngineConfig().max_batch_size)
    run_ceiling(model, groups, args.batch_size)  # warm-up at every shape the sorted plan uses
    rates: dict[str, list[float]] = {name: [] for name in plans}
    rewards: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, batches in plans.items():
            run = run_ceiling(model, groups, args.batch_size, warmup=False, batches=batches)
            rates[name].append(run.responses_per_s)
            rewards[name] = run.rewards
    first, *others = plans
    diff = max(abs(a - b) for other in others for a, b in zip(rewards[first], rewards[other], strict=True))
    print(f"{args.workload}, {len(flat)} responses, {args.threads} torch threads, max abs reward diff between "
          f"the plans {diff:.1e}\n")
    print("| batches | padded / real tokens | forward calls | responses/s (rounds) | median | vs ceiling |")
    print("|---|---:|---:|---|---:|---:|")
    base = statistics.median(rates[first])
    for name, batches in plans.items():
        pad, calls = padding_and_calls(model, flat, batches)
        med = statistics.median(rates[name])
        print(f"| {name} | {pad:.3f} | {calls} | {', '.join(f'{r:.2f}' for r in rates[name])} | {med:.2f} "
              f"| {med / base:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
