"""The app factory: builds the FastAPI app and brings the model up in the background.

    create_app(config)                        # uvicorn.run(create_app(cfg), host=..., port=...)
    create_app(config, model=some_model)      # tests: an already-built (fake) model
    create_app(config, model_factory=fn)      # fn(config) -> model, run in a thread at startup

Startup does not block serving: the lifespan starts a task that loads the model, warms it up
and starts the engine, while /healthz already answers and /readyz says 503 until it is done
(so orchestrators can tell "alive, still loading" from "dead"). Shutdown marks the server as
draining (/readyz 503, new work 503 + Retry-After), lets the engines finish admitted work, then
stops them. Under ``rmserve serve`` a SIGTERM drains before uvicorn closes anything (the sequence
is in server/shutdown.py); the lifespan's own drain then finds nothing left to wait for.

With ``config.grpc_port`` the lifespan also runs the gRPC server (server/grpc_server.py) over the
same service: it starts with the app (health NOT_SERVING until the model is ready) and stops first
on shutdown (NOT_SERVING, new calls refused, running calls get the drain budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI

from rmserve import __version__
from rmserve.api import EnsembleSpec, ImageCache, ImageLimits, ImageLoader, ModelSet, ScoreService, ServiceLimits
from rmserve.api.fetch import ImageFetcher
from rmserve.config import ServerConfig
from rmserve.engine import Engine, ScoringModel
from rmserve.models.types import ModelInfo
from rmserve.server import compat, rest, rest_v1
from rmserve.server.errors import install_error_handlers
from rmserve.server.grpc_server import GrpcServer
from rmserve.server.metrics import Metrics
from rmserve.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from rmserve.server.shutdown import InFlight

log = logging.getLogger("rmserve.server")

ModelFactory = Callable[[ServerConfig], ScoringModel]


@dataclass
class AppState:
    config: ServerConfig
    metrics: Metrics
    engine: Engine | None = None  # the first model's engine (metrics); all of them are in ``engines``
    engines: dict[str, Engine] = field(default_factory=dict)  # name -> engine, in load order
    service: ScoreService | None = None
    info: ModelInfo | None = None
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    grpc: GrpcServer | None = None  # the gRPC server beside REST, when config.grpc_port is set
    inflight: InFlight = field(default_factory=InFlight)  # requests in progress (REST and gRPC)
    drain_deadline: float | None = None  # time.monotonic() by which draining must be done

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


def configure_model(model: ScoringModel, config: ServerConfig) -> None:
    """Apply the serving-time model switches (prefix sharing, caches, forward calls) where the model has them."""
    if hasattr(model, "share_prefix"):
        model.share_prefix = config.share_prefix
    if hasattr(model, "chunk_policy"):
        from rmserve.models.chunking import ChunkPolicy

        model.chunk_policy = ChunkPolicy.for_device(model.device.type, config.max_forward_tokens)
    if config.vision_cache_mb and hasattr(model, "enable_vision_cache"):
        model.enable_vision_cache(config.vision_cache_mb * 1024 * 1024)
    if config.prompt_cache_mb and hasattr(model, "enable_prompt_cache"):
        model.enable_prompt_cache(config.prompt_cache_mb * 1024 * 1024)


def load_model_from_config(config: ServerConfig) -> ScoringModel:
    """The default factory: ``config.model`` or the bundled default model, on ``config.device`` (or on vLLM)."""
    from rmserve.models import default_model_path, load_reward_model

    path = config.model or default_model_path()
    if config.backend == "vllm":
        from rmserve.models.vllm_backend import load_vllm_reward_model

        log.info("loading model from %s onto vLLM (dtype=%s)", path, config.dtype)
        return load_vllm_reward_model(path, config.vllm_settings())
    log.info("loading model from %s (device=%s, dtype=%s)", path, config.device, config.dtype)
    return load_reward_model(path, device=config.device, dtype=config.dtype)


def warn_if_untrained(info: ModelInfo) -> None:
    if info.untrained:
        banner = "!" * 78
        log.warning(
            "\n%s\n!! The model %r has UNTRAINED weights: its rewards are deterministic noise.\n"
            "!! Fine for wiring and load tests; pass --model DIR to serve a real reward model.\n%s",
            banner,
            info.name,
            banner,
        )


def build_service(engines: Engine | Mapping[str, Engine], config: ServerConfig) -> ScoreService:
    """The service over one engine, or several (an ensemble of all of them, per ``config.ensemble``)."""
    image_limits = ImageLimits(max_pixels=config.max_image_pixels, max_bytes=config.max_image_bytes)
    cache = ImageCache(config.image_cache_mb * 1024 * 1024) if config.image_cache_mb else None
    fetcher = None
    if config.allow_image_urls:
        fetcher = ImageFetcher(
            max_bytes=config.max_image_bytes,
            timeout_s=config.image_url_timeout_s,
            max_redirects=config.image_url_max_redirects,
        )
    limits = ServiceLimits(
        max_items_per_request=config.max_items_per_request,
        max_images_per_item=config.max_images_per_item,
        images=image_limits,
    )
    if isinstance(engines, Engine):
        engines = {engines.model.info.name: engines}
    weights = config.ensemble_weight_list()
    ensemble = EnsembleSpec(config.ensemble_name, config.ensemble, tuple(weights) if weights else None)
    return ScoreService(
        ModelSet(engines, ensemble=ensemble),
        limits=limits,
        images=ImageLoader(image_limits, cache, fetcher=fetcher),
        safety=config.build_safety_policy(),
        apply_safety=config.safety_apply,  # type: ignore[arg-type]  # validated by ServerConfig
        compat_verifier=config.compat_verifier,
    )


def _named(models: Sequence[ScoringModel] | Mapping[str, ScoringModel]) -> dict[str, ScoringModel]:
    """Models by unique name: a mapping's keys (the models are renamed), else their own names (-2, -3 on clashes)."""
    named: dict[str, ScoringModel] = {}
    items = models.items() if isinstance(models, Mapping) else [(None, m) for m in models]
    for name, model in items:
        if name is None:
            base = name = model.info.name
            suffix = 2
            while name in named:
                name, suffix = f"{base}-{suffix}", suffix + 1
        if model.info.name != name:
            _rename(model, name)
        named[name] = model
    return named


def _rename(model: ScoringModel, name: str) -> None:
    if isinstance(getattr(type(model), "info", None), property):
        model.name = name  # RewardModel: info is computed from .name
    else:
        model.info.name = name


async def _load_models(config: ServerConfig, factory: ModelFactory) -> tuple[dict[str, ScoringModel], list[float]]:
    """The models by name, and each one's load time in seconds (in load order)."""
    specs = config.model_specs()
    loaded: dict[str, ScoringModel] | list[ScoringModel] = {} if all(name for name, _ in specs) else []
    seconds = []
    for name, path in specs:
        cfg = config if len(specs) == 1 else dataclasses.replace(config, model=path)
        start = time.perf_counter()
        model = await asyncio.to_thread(factory, cfg)
        seconds.append(time.perf_counter() - start)
        if isinstance(loaded, dict):
            loaded[name] = model
        else:
            if name:
                _rename(model, name)
            loaded.append(model)
    return _named(loaded), seconds


async def _bring_up(
    state: AppState, models: Sequence[ScoringModel] | Mapping[str, ScoringModel] | None, factory: ModelFactory
) -> None:
    config = state.config
    engines: dict[str, Engine] = {}
    try:
        if models is not None:
            named, load_seconds = _named(models), []
        else:
            named, load_seconds = await _load_models(config, factory)
        for k, (name, model) in enumerate(named.items()):
            start = time.perf_counter()
            info = model.info
            warn_if_untrained(info)
            if info.max_length > config.max_batch_tokens:
                log.warning(
                    "max_batch_tokens=%d is below model %s's max_length=%d: items longer than the "
                    "budget will be refused; raise --max-batch-tokens to serve them",
                    config.max_batch_tokens,
                    name,
                    info.max_length,
                )
            configure_model(model, config)
            engine = Engine(model, config.engine_config())
            await asyncio.to_thread(engine.start, warmup=config.warmup)
            engines[name] = engine
            load = load_seconds[k] if k < len(load_seconds) else 0.0
            state.metrics.model_loaded(name, load_s=load, warmup_s=time.perf_counter() - start)
        _warn_about_policy(config, [m.info for m in named.values()])
        state.service = build_service(engines, config)
        state.engines = engines
        state.engine = next(iter(engines.values()))
        state.info = state.engine.model.info
        state.metrics.engines = dict(engines)
        state.metrics.image_cache = state.service.images.cache
        state.ready = state.metrics.ready = not state.draining
        for name, engine in engines.items():
            info = engine.model.info
            log.info("ready: model %s (%s, %s on %s)", name, info.family, info.dtype, info.device)
        if state.service.models.ensemble is not None:
            ens = state.service.models.ensemble
            log.info("ensemble %r = %s of %s (the default model)", ens.name, ens.method, [m.name for m in ens.members])
    except Exception as exc:  # keep serving /healthz (503) so the failure is visible, not a crash loop
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("model failed to load")
        for engine in engines.values():
            await asyncio.to_thread(engine.stop, drain=False, timeout=1.0)


def _warn_about_policy(config: ServerConfig, infos: list[ModelInfo]) -> None:
    categories = {c for info in infos for c in info.safety_categories}
    policy = config.build_safety_policy()
    unknown = sorted(set(policy.rules) - categories)
    if unknown and categories:
        log.warning("safety_policy names categories no served model reports: %s (models report %s)",
                    ", ".join(unknown), ", ".join(sorted(categories)))


def create_app(
    config: ServerConfig | None = None,
    *,
    model: ScoringModel | None = None,
    models: Sequence[ScoringModel] | Mapping[str, ScoringModel] | None = None,
    model_factory: ModelFactory | None = None,
) -> FastAPI:
    """``model``: one already-built model; ``models``: several (an ensemble; a mapping names them);
    else ``model_factory(config)`` (default: load ``config.model``), once per --model directory."""
    config = config or ServerConfig()
    state = AppState(config=config, metrics=Metrics())
    state.metrics.inflight = state.inflight
    if model is not None:
        models = [model]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.grpc_port:  # up at once, NOT_SERVING until the model is ready
            state.grpc = GrpcServer(state, host=config.host, port=config.grpc_port)
            await state.grpc.start()
        bring_up = asyncio.create_task(_bring_up(state, models, model_factory or load_model_from_config))
        if state.grpc is not None:
            bring_up.add_done_callback(lambda _: state.grpc and state.grpc.on_change())
        try:
            yield
        finally:
            # After a SIGTERM drain (server/shutdown.py) this is already done and the budget mostly
            # spent; otherwise (tests, embedding) the drain starts here with the whole budget.
            await state.begin_drain(config.drain_timeout_s)
            if state.grpc is not None:  # NOT_SERVING, refuse new calls, let running ones finish
                await state.grpc.stop(grace=state.drain_left())
            # Loading runs in a thread that cannot be interrupted: give it the drain budget.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(bring_up), timeout=state.drain_left())
            left = state.drain_left()
            stops = [
                asyncio.to_thread(engine.stop, drain=True, timeout=left) for engine in (state.engines or {}).values()
            ]
            await asyncio.gather(*stops)
            log.info("stopped")

    app = FastAPI(
        title="rmserve",
        version=__version__,
        summary="Batched reward-model server for multimodal RLHF.",
        lifespan=lifespan,
        docs_url="/docs",
    )
    app.state.rmserve = state
    install_error_handlers(app)
    app.include_router(rest.router)
    app.include_router(rest_v1.router)
    app.include_router(compat.router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    api_keys = config.api_keys()
    if api_keys:
        app.add_middleware(ApiKeyMiddleware, api_keys=api_keys)
    app.add_middleware(RequestContextMiddleware, state=state)  # added last = outermost
    return app
