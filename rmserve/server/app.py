"""The app factory: builds the FastAPI app and brings the model up in the background.

    create_app(config)                        # uvicorn.run(create_app(cfg), host=..., port=...)
    create_app(config, model=some_model)      # tests: an already-built (fake) model
    create_app(config, model_factory=fn)      # fn(config) -> model, run in a thread at startup

Startup does not block serving: the lifespan starts a task that loads the model, warms it up
and starts the engine, while /healthz already answers and /readyz says 503 until it is done
(so orchestrators can tell "alive, still loading" from "dead"). Shutdown marks the server as
draining (/readyz 503), lets the engine finish admitted work, then stops it. uvicorn itself
stops accepting connections and waits for open requests before the lifespan ends.

With ``config.grpc_port`` the lifespan also runs the gRPC server (server/grpc_server.py) over the
same service: it starts with the app (health NOT_SERVING until the model is ready) and stops first
on shutdown (NOT_SERVING, new calls refused, running calls get the drain budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI

from rmserve import __version__
from rmserve.api import EnsembleSpec, ImageCache, ImageLimits, ImageLoader, ModelSet, ScoreService, ServiceLimits
from rmserve.config import ServerConfig
from rmserve.engine import Engine, ScoringModel
from rmserve.models.types import ModelInfo
from rmserve.server import compat, rest, rest_v1
from rmserve.server.errors import install_error_handlers
from rmserve.server.grpc_server import GrpcServer
from rmserve.server.metrics import Metrics
from rmserve.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestMetricsMiddleware

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


def configure_model(model: ScoringModel, config: ServerConfig) -> None:
    """Apply the serving-time model switches (prefix sharing, vision cache) where the model has them."""
    if hasattr(model, "share_prefix"):
        model.share_prefix = config.share_prefix
    if config.vision_cache_mb and hasattr(model, "enable_vision_cache"):
        model.enable_vision_cache(config.vision_cache_mb * 1024 * 1024)


def load_model_from_config(config: ServerConfig) -> ScoringModel:
    """The default factory: ``config.model`` or the bundled default model, on ``config.device``."""
    from rmserve.models import default_model_path, load_reward_model

    path = config.model or default_model_path()
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
        images=ImageLoader(image_limits, cache),
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


async def _load_models(config: ServerConfig, factory: ModelFactory) -> dict[str, ScoringModel]:
    specs = config.model_specs()
    loaded: dict[str, ScoringModel] | list[ScoringModel] = {} if all(name for name, _ in specs) else []
    for name, path in specs:
        cfg = config if len(specs) == 1 else dataclasses.replace(config, model=path)
        model = await asyncio.to_thread(factory, cfg)
        if isinstance(loaded, dict):
            loaded[name] = model
        else:
            if name:
                _rename(model, name)
            loaded.append(model)
    return _named(loaded)


async def _bring_up(
    state: AppState, models: Sequence[ScoringModel] | Mapping[str, ScoringModel] | None, factory: ModelFactory
) -> None:
    config = state.config
    engines: dict[str, Engine] = {}
    try:
        named = _named(models) if models is not None else await _load_models(config, factory)
        for name, model in named.items():
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
        _warn_about_policy(config, [m.info for m in named.values()])
        state.service = build_service(engines, config)
        state.engines = engines
        state.engine = next(iter(engines.values()))
        state.info = state.engine.model.info
        state.metrics.engine = state.engine
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
            state.draining, state.ready, state.metrics.ready = True, False, False
            if state.grpc is not None:  # NOT_SERVING, refuse new calls, let running ones finish
                await state.grpc.stop(grace=config.drain_timeout_s)
            # Loading runs in a thread that cannot be interrupted: give it the drain budget.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(bring_up), timeout=config.drain_timeout_s)
            stops = [
                asyncio.to_thread(engine.stop, drain=True, timeout=config.drain_timeout_s)
                for engine in (state.engines or {}).values()
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
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)  # added last = outermost
    return app
