"""What every REST route takes from the app, as FastAPI dependencies over ``AppState``'s methods.

    state: State          the app's AppState (server/state.py)
    service: Service      state.service_or_raise(): 503 + Retry-After while loading, failed or draining
    deadline: Deadline    state.deadline(x-request-timeout-ms): the request's own, else the server default

``answer(request, work)`` awaits a service call and cancels it when the client disconnects first
(its queued items are dropped before compute); the 499 it returns is for access logs and metrics.
A new route declares these three and calls one service method: nothing else to wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
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
# thread, three thread hops per request for three attribute reads (profiled: bench/README.md).
async def get_state(request: Request) -> AppState:
    return request.app.state.rmserve


State = Annotated[AppState, Depends(get_state)]


async def get_service(state: State) -> ScoreService:
    return state.service_or_raise()


Service = Annotated[ScoreService, Depends(get_service)]


async def get_deadline(
    state: State,
    x_request_timeout_ms: Annotated[
        float | None, Header(gt=0, description="Deadline for this request in milliseconds.")
    ] = None,
) -> float | None:
    return state.deadline(x_request_timeout_ms / 1000 if x_request_timeout_ms else None)


Deadline = Annotated[float | None, Depends(get_deadline)]


def client_closed() -> JSONResponse:
    return error_response(499, "client closed the request", "client_closed_request")


async def answer(request: Request, work: Awaitable[T]) -> T | JSONResponse:
    """``work``'s result, or 499 if the client disconnected first (``work`` is then cancelled)."""
    result = await unless_client_leaves(request, work)
    return client_closed() if result is None else result


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
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
