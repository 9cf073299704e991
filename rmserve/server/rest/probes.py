"""Probes and scrapes: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics`` (Prometheus).

They answer from ``AppState``'s methods (server/state.py), the same ones gRPC health reports from.
No API key is needed for these (server/middleware.py OPEN_PATHS).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from rmserve.server.errors import error_response
from rmserve.server.rest.deps import State

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process is up (503 if the model failed to load)")
async def healthz(state: State) -> JSONResponse:
    problem = state.health_problem()
    if problem is not None:
        code, message = problem
        return error_response(503, message, "unavailable", code=code)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz", summary="Readiness: 200 once the model is loaded and warm, 503 before and while draining"
)
async def readyz(state: State) -> JSONResponse:
    if not state.serving() or state.service is None:
        return error_response(503, state.not_ready_reason(), "unavailable", code="not_ready")
    return JSONResponse({"status": "ready", "model": state.service.models.default.name})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
