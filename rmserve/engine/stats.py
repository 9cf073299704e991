"""Engine statistics: plain counters and fixed-bucket histograms, no Prometheus here.

The engine updates these from its worker thread; the server's metrics module reads a
consistent snapshot and exposes it (so the engine stays free of any metrics library and
tests can assert on batching directly).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# Bucket upper bounds. Batch sizes are small integers; token budgets span a few orders of magnitude.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_TOKENS_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class HistogramSnapshot:
    buckets: tuple[float, ...]  # upper bounds, +Inf implied
    counts: list[int]  # non-cumulative, len(buckets) + 1 (last is the +Inf overflow)
    total: float
    count: int

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative_count), ...]`` ending with ``("+Inf", count)``, Prometheus style."""
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", self.count))
        return out


class Histogram:
    """Not locked on its own: EngineStats holds the lock for every update and snapshot."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.buckets, list(self.counts), self.total, self.count)


@dataclass
class StatsSnapshot:
    batches_run: int
    items_scored: int
    items_failed: int
    items_expired: int
    items_cancelled: int
    queue_depth: int  # items waiting for a batch (not yet computing)
    in_flight: int  # items admitted and not finished (queued, preprocessing or computing)
    max_batch_size_seen: int
    items_per_s: float  # smoothed throughput, drives Retry-After estimates
    batch_size: HistogramSnapshot
    batch_tokens: HistogramSnapshot  # padded tokens: max_len * n
    batch_seconds: HistogramSnapshot
    queue_seconds: HistogramSnapshot  # per item: enqueue -> its batch starts
    extra: dict[str, float] = field(default_factory=dict)


class EngineStats:
    # Smoothing of the throughput estimate: ~the last 10 batches dominate.
    _EWMA_ALPHA = 0.1
    # Per completed item (per-item dispatch): ~the last 100 items dominate, as ~10 batches of 10 would.
    _ITEM_ALPHA = 0.01

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches_run = 0
        self.items_scored = 0
        self.items_failed = 0
        self.items_expired = 0
        self.items_cancelled = 0
        self.max_batch_size_seen = 0
        self._items_per_s = 0.0
        self._last_completion: float | None = None
        self._batch_size = Histogram(BATCH_SIZE_BUCKETS)
        self._batch_tokens = Histogram(BATCH_TOKENS_BUCKETS)
        self._batch_seconds = Histogram(SECONDS_BUCKETS)
        self._queue_seconds = Histogram(SECONDS_BUCKETS)

    def record_batch(
        self, *, size: int, padded_tokens: int, seconds: float, queue_waits: list[float]
    ) -> None:
        with self._lock:
            self.batches_run += 1
            self.max_batch_size_seen = max(self.max_batch_size_seen, size)
            self._batch_size.observe(size)
            self._batch_tokens.observe(padded_tokens)
            self._batch_seconds.observe(seconds)
            for wait in queue_waits:
                self._queue_seconds.observe(wait)
            if seconds > 0:
                rate = size / seconds
                a = self._EWMA_ALPHA if self._items_per_s else 1.0
                self._items_per_s = (1 - a) * self._items_per_s + a * rate

    def record_item(self) -> None:
        """An item scored on its own by per-item dispatch (its model batched it with others, unseen here):
        it counts as scored, and throughput follows the completions' rate, not 1 / its latency."""
        with self._lock:
            self.items_scored += 1
            now = time.monotonic()
            if self._last_completion is not None and now > self._last_completion:
                rate = 1.0 / (now - self._last_completion)
                a = self._ITEM_ALPHA if self._items_per_s else 1.0
                self._items_per_s = (1 - a) * self._items_per_s + a * rate
            self._last_completion = now

    def record_items(self, *, scored: int = 0, failed: int = 0, expired: int = 0, cancelled: int = 0) -> None:
        with self._lock:
            self.items_scored += scored
            self.items_failed += failed
            self.items_expired += expired
            self.items_cancelled += cancelled

    @property
    def items_per_s(self) -> float:
        with self._lock:
            return self._items_per_s

    def snapshot(self, *, queue_depth: int, in_flight: int) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                batches_run=self.batches_run,
                items_scored=self.items_scored,
                items_failed=self.items_failed,
                items_expired=self.items_expired,
                items_cancelled=self.items_cancelled,
                queue_depth=queue_depth,
                in_flight=in_flight,
                max_batch_size_seen=self.max_batch_size_seen,
                items_per_s=self._items_per_s,
                batch_size=self._batch_size.snapshot(),
                batch_tokens=self._batch_tokens.snapshot(),
                batch_seconds=self._batch_seconds.snapshot(),
                queue_seconds=self._queue_seconds.snapshot(),
            )
