"""What every REST route takes from the app, as FastAPI dependencies over ``AppState``'s methods.

    call: Work            what a route that runs work needs, resolved once per request:
                            call.service   state.service_or_raise(): 503 + Retry-After while loading,
                                           failed or draining
                            call.deadline  state.deadline(x-request-timeout-ms): the request's own, else
                                           the server default
                            call.state     the app's AppState (server/state.py)
    service: Service      call.service alone (routes that take no deadline: uploads, the model list)
    state: State          the AppState alone (probes, which run whether or not a model is up)

``answer(request, work)`` awaits a service call and cancels it when the client disconnects first
(its queued items are dropped before compute); the 499 it returns is for access logs and metrics.
A new route declares ``call: Work`` and calls one service method: nothing else to wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse

from rmserve.api import ScoreService
from rmserve.api.protocol import ErrorResponse
from rmserve.server.errors import error_response
from rmserve.server.state import AppState

T = TypeVar("T")

ERRORS: dict[int | str, dict[str, Any]] = {
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


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker
# thread, a thread hop per request for attribute reads (profiled: bench/README.md). And a route takes one
# dependency, not three chained ones: FastAPI's resolution walks every sub-dependency's parameters per
# request, and that walk was the largest piece of the event loop's CPU after HTTP parsing.
async def get_state(request: Request) -> AppState:
    return request.app.state.rmserve


State = Annotated[AppState, Depends(get_state)]


async def get_service(request: Request) -> ScoreService:
    return request.app.state.rmserve.service_or_raise()


Service = Annotated[ScoreService, Depends(get_service)]


@dataclass(frozen=True, slots=True)
class Call:
    """The app's side of one request that runs work on the models."""

    state: AppState
    service: ScoreService
    deadline: float | None  # time.monotonic() by which the work must be done; None: no deadline


async def get_call(
    request: Request,
    x_request_timeout_ms: Annotated[
        float | None, Header(gt=0, description="Deadline for this request in milliseconds.")
    ] = None,
) -> Call:
    state: AppState = request.app.state.rmserve
    service = state.service_or_raise()
    return Call(state, service, state.deadline(x_request_timeout_ms / 1000 if x_request_timeout_ms else None))


Work = Annotated[Call, Depends(get_call)]


def client_closed() -> JSONResponse:
    return error_response(499, "client closed the request", "client_closed_request")


async def answer(request: Request, work: Awaitable[T]) -> T | JSONResponse:
    """``work``'s result, or 499 if the client disconnected first (``work`` is then cancelled)."""
    result = await unless_client_leaves(request, work)
    return client_closed() if result is None else result


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``, cancelling it if the client disconnects first (its queued items are then
    dropped before compute). The body has been read, so the next ASGI message is the disconnect.

    The watcher cancels ``work`` from a done callback instead of both being awaited with
    ``asyncio.wait``, which costs a waiter future and two callbacks per request on the event loop."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    watcher.add_done_callback(lambda w: task.cancel() if _client_left(w) else None)
    try:
        return await task
    except asyncio.CancelledError:
        if _client_left(watcher):  # the work was cancelled because the client left: a 499, not our own cancel
            return None
        raise
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


def _client_left(watcher: asyncio.Future) -> bool:
    """The disconnect watcher saw the client go (not cancelled, not failed)."""
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
