"""The app's state, and the methods both transports call on it (one source of truth for each rule).

    state.service()                  the ScoreService, or NotReady naming why not (loading, failed, draining)
    state.serving()                  ready for new work: /readyz 200, gRPC health SERVING
    state.health_problem()           why the process is unhealthy (/healthz 503), or None
    state.deadline(timeout_s)        a request's ``time.monotonic()`` deadline (its own, else the default)
    state.record_timings(timings)    observe a scored request's timings; the ``x-*-time-ms`` pairs to send
    state.begin_drain(budget_s)      readiness off, new work refused; admitted work goes on

REST reaches these through FastAPI dependencies (server/rest/deps.py); gRPC calls them directly
(server/grpc/servicer.py). Neither transport reads the state's fields to decide readiness itself.
The state holds the engines and the service; everything else (the default model, its info) is
derived from them, so there is no second copy to keep in step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from rmserve.api import ScoreService, Timings
from rmserve.config import ServerConfig
from rmserve.engine import Engine
from rmserve.errors import NotReady
from rmserve.models.types import ModelInfo
from rmserve.server.inflight import InFlight
from rmserve.server.metrics import Metrics


class HealthReporter(Protocol):
    """A transport that publishes readiness itself (gRPC health); told when it may have changed."""

    async def refresh_health(self) -> None: ...


@dataclass
class AppState:
    config: ServerConfig
    metrics: Metrics
    engines: dict[str, Engine] = field(default_factory=dict)  # name -> engine, in load order
    service: ScoreService | None = field(default=None, repr=False)  # set once every model is up
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    grpc: HealthReporter | None = None  # the gRPC server beside REST, when config.grpc_port is set
    inflight: InFlight = field(default_factory=InFlight)  # requests in progress (REST and gRPC)
    drain_deadline: float | None = None  # time.monotonic() by which draining must be done
    freeze_gc: bool = False  # freeze start-up objects out of the GC once the models are up (server/loading.py)

    def __post_init__(self) -> None:
        self.metrics.inflight = self.inflight

    # ── derived (no copies) ────────────────────────────────────────────────────────────────

    @property
    def engine(self) -> Engine | None:
        """The default (first loaded) model's engine."""
        return next(iter(self.engines.values()), None)

    @property
    def info(self) -> ModelInfo | None:
        engine = self.engine
        return engine.model.info if engine is not None else None

    # ── what the transports ask ────────────────────────────────────────────────────────────

    def service_or_raise(self) -> ScoreService:
        """The service, or NotReady (503 / UNAVAILABLE, with Retry-After) saying why there is none."""
        if not self.ready or self.service is None:
            raise NotReady(self.not_ready_reason(), code="not_ready")
        return self.service

    def not_ready_reason(self) -> str:
        if self.load_error:
            return f"the model failed to load: {self.load_error}"
        if self.draining:
            return "the server is shutting down"
        return "the model is still loading"

    def serving(self) -> bool:
        """Ready for new work: loaded and warm, not draining, and every engine accepting."""
        engines = list(self.engines.values())
        return bool(self.ready and not self.draining and engines and all(e.health().accepting for e in engines))

    def health_problem(self) -> tuple[str, str] | None:
        """``(code, message)`` when the process should be restarted (load failed, an engine thread died)."""
        if self.load_error:
            return "load_failed", f"model failed to load: {self.load_error}"
        for engine in self.engines.values():
            health = engine.health()
            if not health.healthy:
                return "engine_dead", health.detail
        return None

    def deadline(self, timeout_s: float | None) -> float | None:
        """A request's ``time.monotonic()`` deadline: its own timeout, else the server default (None: none)."""
        timeout_s = timeout_s or self.config.request_timeout_s
        return time.monotonic() + timeout_s if timeout_s else None

    def record_timings(self, timings: Timings) -> tuple[tuple[str, str], ...]:
        """Observe a scored request's timings; the header / trailing-metadata pairs that report them."""
        self.metrics.observe_timings(timings.queue_ms, timings.inference_ms)
        return (
            ("x-queue-time-ms", f"{timings.queue_ms:.2f}"),
            ("x-inference-time-ms", f"{timings.inference_ms:.2f}"),
            ("x-total-time-ms", f"{timings.total_ms:.2f}"),
        )

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────

    def models_up(self, engines: dict[str, Engine], service: ScoreService) -> None:
        """Every model is loaded and warm: serve (unless a drain began meanwhile)."""
        self.engines, self.service = engines, service
        self.metrics.engines = dict(engines)
        self.metrics.image_cache = service.images.cache
        self.metrics.video_cache = service.videos.cache
        self.ready = self.metrics.ready = not self.draining

    async def begin_drain(self, budget_s: float) -> None:
        """Readiness off (/readyz 503, gRPC NOT_SERVING) and new work refused; admitted work goes on.
        Idempotent: the first call sets the deadline."""
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + budget_s
        self.draining, self.ready, self.metrics.ready = True, False, False
        self.inflight.draining = True
        if self.grpc is not None:
            await self.grpc.refresh_health()

    def drain_left(self) -> float:
        """Seconds left of the drain budget (the full ``drain_timeout_s`` before draining began)."""
        if self.drain_deadline is None:
            return self.config.drain_timeout_s
        return max(0.0, self.drain_deadline - time.monotonic())

    def idle(self) -> bool:
        """No admitted request in progress and no engine holding work."""
        return self.inflight.admitted == 0 and all(e.health().in_flight == 0 for e in self.engines.values())

    def describe_work(self) -> str:
        items = {name: engine.health().in_flight for name, engine in self.engines.items()}
        return f"{self.inflight.admitted} requests, items per model {items}"

__all__ = ["AppState", "HealthReporter"]
