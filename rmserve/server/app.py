"""The app factory: builds the FastAPI app and brings the model up in the background.

    create_app(config)                        # uvicorn.run(create_app(cfg), host=..., port=...)
    create_app(config, model=some_model)      # tests: an already-built (fake) model
    create_app(config, model_factory=fn)      # fn(config) -> model, run in a thread at startup

Startup does not block serving: the lifespan starts a task that loads the model, warms it up
and starts the engine, while /healthz already answers and /readyz says 503 until it is done
(so orchestrators can tell "alive, still loading" from "dead"). Shutdown marks the server as
draining (/readyz 503), lets the engine finish admitted work, then stops it. uvicorn itself
stops accepting connections and waits for open requests before the lifespan ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI

from rmserve import __version__
from rmserve.api import ImageCache, ImageLimits, ImageLoader, ScoreService, ServiceLimits
from rmserve.config import ServerConfig
from rmserve.engine import Engine, ScoringModel
from rmserve.models.types import ModelInfo
from rmserve.server import rest
from rmserve.server.errors import install_error_handlers
from rmserve.server.metrics import Metrics
from rmserve.server.middleware import BodyLimitMiddleware, RequestMetricsMiddleware

log = logging.getLogger("rmserve.server")

ModelFactory = Callable[[ServerConfig], ScoringModel]


@dataclass
class AppState:
    config: ServerConfig
    metrics: Metrics
    engine: Engine | None = None
    service: ScoreService | None = None
    info: ModelInfo | None = None
    ready: bool = False
    draining: bool = False
    load_error: str | None = None


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


def build_service(engine: Engine, config: ServerConfig) -> ScoreService:
    image_limits = ImageLimits(max_pixels=config.max_image_pixels, max_bytes=config.max_image_bytes)
    cache = ImageCache(config.image_cache_mb * 1024 * 1024) if config.image_cache_mb else None
    limits = ServiceLimits(
        max_items_per_request=config.max_items_per_request,
        max_images_per_item=config.max_images_per_item,
        images=image_limits,
    )
    return ScoreService(engine, limits=limits, images=ImageLoader(image_limits, cache))


async def _bring_up(state: AppState, model: ScoringModel | None, factory: ModelFactory) -> None:
    config = state.config
    try:
        if model is None:
            model = await asyncio.to_thread(factory, config)
        info = model.info
        warn_if_untrained(info)
        if info.max_length > config.max_batch_tokens:
            log.warning(
                "max_batch_tokens=%d is below the model's max_length=%d: items longer than the "
                "budget will be refused; raise --max-batch-tokens to serve them",
                config.max_batch_tokens,
                info.max_length,
            )
        engine = Engine(model, config.engine_config())
        await asyncio.to_thread(engine.start, warmup=config.warmup)
        state.engine, state.info = engine, info
        state.service = build_service(engine, config)
        state.metrics.engine = engine
        state.ready = state.metrics.ready = not state.draining
        log.info("ready: model %s (%s, %s on %s)", info.name, info.family, info.dtype, info.device)
    except Exception as exc:  # keep serving /healthz (503) so the failure is visible, not a crash loop
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("model failed to load")


def create_app(
    config: ServerConfig | None = None,
    *,
    model: ScoringModel | None = None,
    model_factory: ModelFactory | None = None,
) -> FastAPI:
    config = config or ServerConfig()
    state = AppState(config=config, metrics=Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bring_up = asyncio.create_task(_bring_up(state, model, model_factory or load_model_from_config))
        try:
            yield
        finally:
            state.draining, state.ready, state.metrics.ready = True, False, False
            # Loading runs in a thread that cannot be interrupted: give it the drain budget.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(bring_up), timeout=config.drain_timeout_s)
            if state.engine is not None:
                await asyncio.to_thread(state.engine.stop, drain=True, timeout=config.drain_timeout_s)
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
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)  # added last = outermost
    return app
