"""Judge generation batched across requests vs one generation per request, in one run (a ratio).

    .venv/bin/python -m bench.judge_batching [--requests 32] [--max-new-tokens 16] [--rounds 3]

N concurrent single-item /v1/score requests (the API's ScoreService, in process) to a tiny judge (models/tiny.py;
once writing a judgment first, once answering at once), on two engines over the same model:
``max_batch_size=N`` (the engine's judge queue shares generate batches across requests) and
``max_batch_size=1`` (every judgment generates alone: what a single-item request got before judge
batching, when batches only formed within a request). Rounds alternate
between the two so machine load hits both alike; the outcomes of both are checked equal (rewards within 1e-4;
the tiny random judge's judgments rarely contain a readable answer, and their explicit errors must match too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import torch

from rmserve.api import ScoreRequest, ScoreService
from rmserve.engine import Engine, EngineConfig
from rmserve.errors import RMServeError
from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge


async def _round(service: ScoreService, n: int, round_: int) -> tuple[float, list[float | str]]:
    """Wall time of ``n`` concurrent requests, and each one's reward (or its error: the tiny random judge's
    text often has no readable answer, an explicit error that cost the same generation)."""
    requests = [ScoreRequest(items=[{"prompt": f"What is shown? ({round_})", "response": f"Answer {i}: a circle."}])
                for i in range(n)]
    start = time.perf_counter()
    results = await asyncio.gather(*(service.score(r) for r in requests), return_exceptions=True)
    seconds = time.perf_counter() - start
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, RMServeError):
            raise r
    return seconds, [f"{r.code}: {r}" if isinstance(r, RMServeError) else r.response.items[0].reward for r in results]


async def compare(args: argparse.Namespace, reasoning: bool) -> None:
    section = {**TINY_JUDGE, "reasoning": reasoning, "max_new_tokens": args.max_new_tokens}
    judge = build_tiny_judge("qwen2", section, seed=3)
    engines = {"shared": Engine(judge, EngineConfig(max_batch_size=args.requests, max_wait_ms=5)),
               "alone": Engine(judge, EngineConfig(max_batch_size=1, max_wait_ms=5))}
    for engine in engines.values():
        engine.start()
    times: dict[str, list[float]] = {name: [] for name in engines}
    readable = 0
    try:
        for engine in engines.values():  # warm-up round, not timed
            await _round(ScoreService(engine), args.requests, -1)
        for r in range(args.rounds):
            rewards = {}
            for name, engine in engines.items():
                seconds, rewards[name] = await _round(ScoreService(engine), args.requests, r)
                times[name].append(seconds)
            for a, b in zip(rewards["shared"], rewards["alone"], strict=True):
                same = a == b if isinstance(a, str) or isinstance(b, str) else abs(a - b) <= 1e-4
                assert same, f"shared {a!r} != alone {b!r}"
            readable += sum(not isinstance(a, str) for a in rewards["shared"])
    finally:
        for engine in engines.values():
            engine.stop(drain=False, timeout=5)
    shared, alone = sum(times["shared"]), sum(times["alone"])
    n = args.requests * args.rounds
    how = f"reasoning judge, max_new_tokens={args.max_new_tokens}" if reasoning else "judge answering at once"
    print(f"{args.requests} concurrent single-item requests x {args.rounds} rounds, {how}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  shared batches: {n / shared:7.1f} requests/s ({shared:.2f} s)")
    print(f"  alone:          {n / alone:7.1f} requests/s ({alone:.2f} s)")
    print(f"  speed-up: {alone / shared:.2f}x (outcomes equal: rewards within 1e-4, errors identical; "
          f"{readable}/{n} judgments readable)")


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    for reasoning in (True, False):
        await compare(args, reasoning)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
