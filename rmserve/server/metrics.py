"""Prometheus metrics: requests (count, latency, in flight), and per served model (label ``model``): the
queue, batches, item outcomes, caches and load time.

    rmserve_requests_total{endpoint,method,status}            REST route templates; gRPC methods (method GRPC)
    rmserve_request_duration_seconds{endpoint,method,status}  histogram
    rmserve_requests_in_flight{transport}                     http | grpc, now
    rmserve_request_queue_seconds / _inference_seconds        per scored request (histograms)
    rmserve_ready                                             1 once every model is loaded and warm
    rmserve_model_load_seconds{model,phase}                   phase load (weights) | warmup (engine start)
    rmserve_queue_depth{model} / rmserve_in_flight_items{model}
    rmserve_batches_total{model}, rmserve_items_{scored,failed,expired,cancelled}_total{model}
    rmserve_batch_size{model}, rmserve_batch_tokens{model}, rmserve_batch_duration_seconds{model},
    rmserve_item_queue_seconds{model}                         histograms
      (a generative judge's: one batch = one generate call over judgments shared across requests, its
      padded tokens counting max_new_tokens; a judgment counts as an item; engine/judging.py)
    rmserve_image_cache_{hits,misses}_total, _entries, _bytes, _hit_ratio      decoded images (shared)
    rmserve_video_cache_{hits,misses}_total, _entries, _bytes, _hit_ratio      decoded video clips (shared)
    rmserve_vision_cache_{hits,misses}_total{model}, _entries, _bytes, _hit_ratio   vision features
    rmserve_prompt_cache_{hits,misses}_total{model}, _entries, _bytes, _hit_ratio   preprocessed image prompts

Each app gets its own ``CollectorRegistry`` (several apps in one test process must not collide).
Engine and cache stats are read at scrape time by a custom collector from consistent snapshots, so
the engine itself depends on no metrics library.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from rmserve.engine import Engine, HistogramSnapshot

if TYPE_CHECKING:
    from rmserve.api.images import ImageCache
    from rmserve.api.videos import VideoCache
    from rmserve.server.inflight import InFlight

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.engines: dict[str, Engine] = {}  # model name -> engine, set once the models are up
        self.image_cache: ImageCache | None = None
        self.video_cache: VideoCache | None = None
        self.inflight: InFlight | None = None
        self.load_seconds: dict[tuple[str, str], float] = {}  # (model, phase) -> seconds
        self.ready = False
        self.requests = Counter(
            "rmserve_requests",
            "Requests by endpoint (REST route template or gRPC method), method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rmserve_request_duration_seconds",
            "Request latency by endpoint, method and status code.",
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

    @property
    def engine(self) -> Engine | None:
        """The first model's engine (older callers)."""
        return next(iter(self.engines.values()), None)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        labels = (endpoint, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_timings(self, queue_ms: float, inference_ms: float) -> None:
        self.queue_time.observe(queue_ms / 1000)
        self.inference_time.observe(inference_ms / 1000)

    def model_loaded(self, model: str, *, load_s: float, warmup_s: float) -> None:
        self.load_seconds[(model, "load")] = load_s
        self.load_seconds[(model, "warmup")] = warmup_s

    def render(self) -> bytes:
        return generate_latest(self.registry)


_ITEM_COUNTERS = [
    ("rmserve_batches", "Forward passes run (bisection re-runs not counted).", "batches_run"),
    ("rmserve_items_scored", "Items scored successfully.", "items_scored"),
    ("rmserve_items_failed", "Items that failed in the model (after bisection).", "items_failed"),
    ("rmserve_items_expired", "Items dropped before compute: deadline passed.", "items_expired"),
    ("rmserve_items_cancelled", "Items dropped before compute: caller went away.", "items_cancelled"),
]
_HISTOGRAMS = [
    ("rmserve_batch_size", "Items per forward pass.", "batch_size"),
    ("rmserve_batch_tokens", "Padded tokens (longest x items) per forward.", "batch_tokens"),
    ("rmserve_batch_duration_seconds", "Forward-pass wall time.", "batch_seconds"),
    ("rmserve_item_queue_seconds", "Per item: enqueue until its batch ran.", "queue_seconds"),
]


class _EngineCollector(Collector):
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator:
        metrics = self.metrics
        yield GaugeMetricFamily("rmserve_ready", "1 when every model is loaded and warm.", value=metrics.ready)
        if metrics.inflight is not None:
            inflight = GaugeMetricFamily(
                "rmserve_requests_in_flight", "Requests in progress, by transport.", labels=["transport"]
            )
            for transport, count in sorted(metrics.inflight.by_transport.items()):
                inflight.add_metric([transport], count)
            yield inflight
        if metrics.load_seconds:
            load = GaugeMetricFamily(
                "rmserve_model_load_seconds",
                "Seconds to load each model's weights (phase=load) and start its engine, warm-up included "
                "(phase=warmup).",
                labels=["model", "phase"],
            )
            for (model, phase), seconds in metrics.load_seconds.items():
                load.add_metric([model, phase], seconds)
            yield load
        yield from _cache_families("rmserve_image_cache", "Decoded-image cache", [], _shared_rows(metrics.image_cache))
        yield from _cache_families("rmserve_video_cache", "Decoded-video cache (clips by file and sampling)", [],
                                   _shared_rows(metrics.video_cache))
        if not metrics.engines:
            return
        snaps = {name: engine.snapshot() for name, engine in metrics.engines.items()}
        depth = GaugeMetricFamily(
            "rmserve_queue_depth", "Items waiting for a batch (not yet computing).", labels=["model"]
        )
        items = GaugeMetricFamily(
            "rmserve_in_flight_items",
            "Items admitted and unfinished (queued, preprocessing or computing).",
            labels=["model"],
        )
        for name, snap in snaps.items():
            depth.add_metric([name], snap.queue_depth)
            items.add_metric([name], snap.in_flight)
        yield depth
        yield items
        for metric, doc, attr in _ITEM_COUNTERS:
            family = CounterMetricFamily(metric, doc, labels=["model"])
            for name, snap in snaps.items():
                family.add_metric([name], getattr(snap, attr))
            yield family
        for metric, doc, attr in _HISTOGRAMS:
            family = HistogramMetricFamily(metric, doc, labels=["model"])
            for name, snap in snaps.items():
                hist: HistogramSnapshot = getattr(snap, attr)
                family.add_metric([name], hist.cumulative(), sum_value=hist.total)
            yield family
        model_caches = (
            ("vision", "rmserve_vision_cache", "Vision-feature cache (encoder outputs by image)"),
            ("prompt", "rmserve_prompt_cache", "Preprocessed-prompt cache (ids + pixels)"),
        )
        stats = {name: engine.model.cache_stats() for name, engine in metrics.engines.items()}
        for cache, prefix, what in model_caches:
            rows = [([name], caches[cache]) for name, caches in stats.items() if cache in caches]
            yield from _cache_families(prefix, what, ["model"], rows)


def _shared_rows(cache: ImageCache | VideoCache | None) -> list[tuple[list[str], dict[str, Any]]]:
    if cache is None:
        return []
    return [([], cache.stats())]


def _cache_families(prefix: str, what: str, labels: list[str], rows: list) -> Iterator:
    """hits/misses counters, entries/bytes/hit-ratio gauges for caches reporting ``stats()`` dicts."""
    if not rows:
        return
    kinds = [
        ("hits", CounterMetricFamily, f"{what}: lookups that found an entry."),
        ("misses", CounterMetricFamily, f"{what}: lookups that found none."),
        ("entries", GaugeMetricFamily, f"{what}: entries held."),
        ("bytes", GaugeMetricFamily, f"{what}: bytes held."),
        ("hit_ratio", GaugeMetricFamily, f"{what}: hits / lookups since start (0 before any lookup)."),
    ]
    for key, family_type, doc in kinds:
        family = family_type(f"{prefix}_{key}", doc, labels=labels)
        for label_values, stats in rows:
            family.add_metric(label_values, float(stats.get(key, 0)))
        yield family
