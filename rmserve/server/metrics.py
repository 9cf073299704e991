"""Prometheus metrics: request counts and latency per endpoint and status, plus the engine's stats.

Each app gets its own ``CollectorRegistry`` (several apps in one test process must not collide).
Engine stats are read at scrape time by a custom collector from one consistent snapshot, so the
engine itself depends on no metrics library.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from rmserve.engine import Engine, HistogramSnapshot

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.engine: Engine | None = None
        self.ready = False
        self.requests = Counter(
            "rmserve_requests",
            "HTTP requests by endpoint (route template), method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rmserve_request_duration_seconds",
            "HTTP request latency by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "rmserve_request_queue_seconds",
            "Per scored request: the longest any of its items waited for a batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_time = Histogram(
            "rmserve_request_inference_seconds",
            "Per scored request: forward-pass time of the batches its items rode in.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(self))

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        labels = (endpoint, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_timings(self, queue_ms: float, inference_ms: float) -> None:
        self.queue_time.observe(queue_ms / 1000)
        self.inference_time.observe(inference_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator:
        yield GaugeMetricFamily(
            "rmserve_ready", "1 when the model is loaded and warm.", value=self.metrics.ready
        )
        engine = self.metrics.engine
        if engine is None:
            return
        snap = engine.snapshot()
        yield GaugeMetricFamily(
            "rmserve_queue_depth", "Items waiting for a batch (not yet computing).", value=snap.queue_depth
        )
        yield GaugeMetricFamily(
            "rmserve_in_flight_items",
            "Items admitted and unfinished (queued, preprocessing or computing).",
            value=snap.in_flight,
        )
        counters = [
            ("rmserve_batches", "Forward passes run (bisection re-runs not counted).", snap.batches_run),
            ("rmserve_items_scored", "Items scored successfully.", snap.items_scored),
            ("rmserve_items_failed", "Items that failed in the model (after bisection).", snap.items_failed),
            ("rmserve_items_expired", "Items dropped before compute: deadline passed.", snap.items_expired),
            (
                "rmserve_items_cancelled",
                "Items dropped before compute: caller went away.",
                snap.items_cancelled,
            ),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield _histogram("rmserve_batch_size", "Items per forward pass.", snap.batch_size)
        yield _histogram(
            "rmserve_batch_tokens", "Padded tokens (longest x items) per forward.", snap.batch_tokens
        )
        yield _histogram("rmserve_batch_duration_seconds", "Forward-pass wall time.", snap.batch_seconds)
        yield _histogram(
            "rmserve_item_queue_seconds", "Per item: enqueue until its batch ran.", snap.queue_seconds
        )


def _histogram(name: str, doc: str, snap: HistogramSnapshot) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=snap.cumulative(), sum_value=snap.total)
