"""The app factory: builds the FastAPI app and brings the model up in the background.

    create_app(config)                        # uvicorn.run(create_app(cfg), host=..., port=...)
    create_app(config, model=some_model)      # tests: an already-built (fake) model
    create_app(config, model_factory=fn)      # fn(config) -> model, run in a thread at startup

Startup does not block serving: the lifespan starts a task (server/loading.py) that loads the model, warms it up
and starts the engine, while /healthz already answers and /readyz says 503 until it is done
(so orchestrators can tell "alive, still loading" from "dead"). Shutdown marks the server as
draining (/readyz 503, new work 503 + Retry-After), lets the engines finish admitted work, then
stops them. Under ``rmserve serve`` a SIGTERM drains before uvicorn closes anything (the sequence
is in server/shutdown.py); the lifespan's own drain then finds nothing left to wait for.

With ``config.grpc_port`` the lifespan also runs the gRPC server (server/rpc/) over the
same service: it starts with the app (health NOT_SERVING until the model is ready); on shutdown it
reads NOT_SERVING and refuses new calls with UNAVAILABLE while admitted work drains, and stops once
that work is done (or the drain budget is spent), before the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

from fastapi import FastAPI

from rmserve import __version__
from rmserve.config import ServerConfig
from rmserve.models.types import ServedModel
from rmserve.server.errors import install_error_handlers
from rmserve.server.loading import ModelFactory, bring_up, load_model_from_config
from rmserve.server.metrics import Metrics
from rmserve.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from rmserve.server.rest import ROUTERS
from rmserve.server.rpc import GrpcServer
from rmserve.server.shutdown import drain
from rmserve.server.state import AppState

log = logging.getLogger("rmserve.server")


def create_app(
    config: ServerConfig | None = None,
    *,
    model: ServedModel | None = None,
    models: Sequence[ServedModel] | Mapping[str, ServedModel] | None = None,
    model_factory: ModelFactory | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """``model``: one already-built model; ``models``: several (an ensemble; a mapping names them);
    else ``model_factory(config)`` (default: load ``config.model``), once per --model directory.
    ``freeze_gc``: once the models are up, keep what start-up made out of the garbage collector's
    scans (``rmserve serve`` sets it; server/loading.py says why)."""
    config = config or ServerConfig()
    state = AppState(config=config, metrics=Metrics(), freeze_gc=freeze_gc)
    if model is not None:
        models = [model]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc_server = None
        if config.grpc_port:  # up at once, NOT_SERVING until the model is ready
            state.grpc = grpc_server = GrpcServer(state, host=config.host, port=config.grpc_port)
            await grpc_server.start()
        starting = asyncio.create_task(bring_up(state, models, model_factory or load_model_from_config))
        if grpc_server is not None:
            starting.add_done_callback(lambda _: grpc_server.on_change())
        try:
            yield
        finally:
            # After a SIGTERM drain (server/shutdown.py) this is already done and the budget mostly
            # spent; otherwise (tests, embedding, another ASGI server's shutdown) the drain runs here
            # with the whole budget. gRPC stays up through it: health reads NOT_SERVING and new calls
            # get UNAVAILABLE with retry-after from the servicer. Stopping grpc.aio first would answer
            # calls that land mid-stop with CANCELLED (grpc/grpc#41785), which clients do not retry.
            await drain(state, delay_s=0.0, timeout_s=config.drain_timeout_s)
            if grpc_server is not None:  # calls still running (budget spent) get what is left of it
                await grpc_server.stop(grace=state.drain_left())
            # Loading runs in a thread that cannot be interrupted: give it the drain budget.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(starting), timeout=state.drain_left())
            left = state.drain_left()
            stops = [
                asyncio.to_thread(engine.stop, drain=True, timeout=left) for engine in (state.engines or {}).values()
            ]
            await asyncio.gather(*stops)
            if freeze_gc:
                gc.unfreeze()
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
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    api_keys = config.api_keys()
    if api_keys:
        app.add_middleware(ApiKeyMiddleware, api_keys=api_keys)
    app.add_middleware(RequestContextMiddleware, state=state)  # added last = outermost
    return app
