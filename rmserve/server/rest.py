"""REST routes. Thin on purpose: each calls the service (or reads state) and maps the result.

Headers out: ``x-queue-time-ms`` (longest wait of the request's items for a batch),
``x-inference-time-ms`` (forward time of the batches they rode in), ``x-total-time-ms``.
Header in: ``x-request-timeout-ms`` sets the request's deadline (default: config.request_timeout_s);
work still queued when it passes is dropped and the answer is 504. ``x-request-id`` (in, and always
out) is handled by the middleware (server/middleware.py), like API keys and the body limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from rmserve.api.protocol import ErrorResponse, ModelList, ScoreRequest, ScoreResponse
from rmserve.api.service import ScoreService
from rmserve.errors import NotReady
from rmserve.server.errors import error_response

if TYPE_CHECKING:
    from rmserve.server.app import AppState

router = APIRouter()
T = TypeVar("T")

ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (413, "Request body too large."),
        (422, "Invalid request; `param` names the field."),
        (429, "Queue full; retry after the `Retry-After` header's seconds."),
        (500, "The model failed on an item."),
        (503, "Model not loaded yet, or the server is draining."),
        (504, "The request's deadline passed before it was scored."),
    ]
}


def _state(request: Request) -> AppState:
    return request.app.state.rmserve


def _service(request: Request) -> ScoreService:
    state = _state(request)
    if not state.ready or state.service is None:
        raise NotReady(_not_ready_reason(state), code="not_ready")
    return state.service


def request_deadline(state: AppState, timeout_ms: float | None) -> float | None:
    """The ``time.monotonic()`` deadline of a request: its header's timeout, else the server default."""
    timeout_s = timeout_ms / 1000 if timeout_ms else state.config.request_timeout_s
    return time.monotonic() + timeout_s if timeout_s else None


def _not_ready_reason(state: AppState) -> str:
    if state.load_error:
        return f"the model failed to load: {state.load_error}"
    if state.draining:
        return "the server is shutting down"
    return "the model is still loading"


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    summary="Score responses with the reward model",
)
async def score(
    body: ScoreRequest,
    request: Request,
    response: Response,
    x_request_timeout_ms: Annotated[
        float | None, Header(gt=0, description="Deadline for this request in milliseconds.")
    ] = None,
) -> ScoreResponse | JSONResponse:
    state = _state(request)
    service = _service(request)
    deadline = request_deadline(state, x_request_timeout_ms)
    result = await _unless_client_leaves(request, service.score(body, deadline=deadline))
    if result is None:  # nobody is listening; the status is for access logs and metrics only
        return error_response(499, "client closed the request", "client_closed_request")
    timings = result.timings
    response.headers["x-queue-time-ms"] = f"{timings.queue_ms:.2f}"
    response.headers["x-inference-time-ms"] = f"{timings.inference_ms:.2f}"
    response.headers["x-total-time-ms"] = f"{timings.total_ms:.2f}"
    state.metrics.observe_timings(timings.queue_ms, timings.inference_ms)
    return result.response


@router.get(
    "/v1/models", response_model=ModelList, responses=ERRORS, summary="The models served (and the ensemble)"
)
async def models(request: Request) -> ModelList:
    return _service(request).model_list()


@router.get("/healthz", summary="Liveness: the process is up (503 if the model failed to load)")
async def healthz(request: Request) -> JSONResponse:
    state = _state(request)
    if state.load_error:
        return error_response(
            503, f"model failed to load: {state.load_error}", "unavailable", code="load_failed"
        )
    for engine in _engines(state):
        health = engine.health()
        if not health.healthy:
            return error_response(503, health.detail, "unavailable", code="engine_dead")
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz", summary="Readiness: 200 once the model is loaded and warm, 503 before and while draining"
)
async def readyz(request: Request) -> JSONResponse:
    state = _state(request)
    engines = _engines(state)
    if not state.ready or not engines or not all(engine.health().accepting for engine in engines):
        return error_response(503, _not_ready_reason(state), "unavailable", code="not_ready")
    default = state.service.models.default.name if state.service else None
    return JSONResponse({"status": "ready", "model": default})


def _engines(state: AppState) -> list:
    return list(state.engines.values()) if state.engines else [e for e in [state.engine] if e is not None]


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = _state(request)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``, cancelling it if the client disconnects first (its queued items are then
    dropped before compute). The body has been read, so the next ASGI message is the disconnect."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        return task.result()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
