"""The load driver: POST /v1/score, one item per request, a fixed number in flight.

Requests go out in groups: a group's requests are sent together once that many slots are free
(singles are groups of one, so that is a plain concurrency limit; a GRPO group's G responses go
out at the same moment, and groups follow one another as a trainer's rollouts finish). The
clock runs from the first send to the last answer; latency is per request, send to answer.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx

HEADERS = {"content-type": "application/json"}


@dataclass
class LoadResult:
    responses: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    rewards: list[float | None] = field(default_factory=list)  # in request order; None = failed
    errors: list[str] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)  # rmserve's x-queue-time-ms header, where sent
    inference_ms: list[float] = field(default_factory=list)  # rmserve's x-inference-time-ms header

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def responses_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict:
        return {
            "responses": self.responses, "ok": self.ok, "errors": len(self.errors), "seconds": self.seconds,
            "responses_per_s": self.responses_per_s, "p50_ms": self.percentile(50), "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99), "max_ms": max(self.latencies_ms, default=None),
            "mean_ms": statistics.fmean(self.latencies_ms) if self.latencies_ms else None,
            "server_queue_ms_mean": statistics.fmean(self.queue_ms) if self.queue_ms else None,
            "server_inference_ms_mean": statistics.fmean(self.inference_ms) if self.inference_ms else None,
            "first_errors": self.errors[:3],
        }


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Slots:
    """A counting semaphore whose ``acquire(k)`` takes k slots at once (a whole group, or nothing)."""

    def __init__(self, n: int):
        self.free = n
        self._cond = asyncio.Condition()

    async def acquire(self, k: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= k)
            self.free -= k

    async def release(self) -> None:
        async with self._cond:
            self.free += 1
            self._cond.notify_all()


async def drive(base_url: str, groups: list[list[bytes]], *, concurrency: int = 64, path: str = "/v1/score",
                timeout_s: float = 600.0) -> LoadResult:
    """Send every body; at most ``concurrency`` requests in flight, each group's requests together."""
    biggest = max((len(g) for g in groups), default=1)
    if biggest > concurrency:
        raise ValueError(f"a group of {biggest} cannot be sent together with concurrency {concurrency}")
    n = sum(len(g) for g in groups)
    latencies: list[float | None] = [None] * n
    rewards: list[float | None] = [None] * n
    errors: list[str] = []
    queue_ms: list[float] = []
    inference_ms: list[float] = []
    slots = Slots(concurrency)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s) as client:

        async def one(index: int, body: bytes) -> None:
            try:
                sent = time.perf_counter()
                response = await client.post(path, content=body, headers=HEADERS)
                done = time.perf_counter()
                if response.status_code == 200:
                    rewards[index] = response.json()["items"][0]["reward"]
                    latencies[index] = (done - sent) * 1000
                    if "x-queue-time-ms" in response.headers:
                        queue_ms.append(float(response.headers["x-queue-time-ms"]))
                        inference_ms.append(float(response.headers.get("x-inference-time-ms", "nan")))
                else:
                    errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                await slots.release()

        tasks = []
        index = 0
        start = time.perf_counter()
        for group in groups:
            await slots.acquire(len(group))
            for body in group:
                tasks.append(asyncio.create_task(one(index, body)))
                index += 1
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
    return LoadResult(responses=n, seconds=seconds, latencies_ms=[x for x in latencies if x is not None],
                      rewards=rewards, errors=errors, queue_ms=queue_ms, inference_ms=inference_ms)


__all__ = ["LoadResult", "drive", "percentile"]
