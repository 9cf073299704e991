"""REST routes that score: ``/v1/score``, ``/v1/compare``, ``/v1/rank``, ``/v1/safety``, and ``/v1/models``.

Thin on purpose: each route takes the service and the deadline (rest/deps.py) and calls one service
method. Headers out on ``/v1/score``: ``x-queue-time-ms`` (longest wait of the request's items for a
batch), ``x-inference-time-ms`` (forward time of the batches they rode in), ``x-total-time-ms``.
Header in: ``x-request-timeout-ms`` sets the request's deadline (default: config.request_timeout_s);
work still queued when it passes is dropped and the answer is 504. ``x-request-id`` (in, and always
out) is handled by the middleware (server/middleware.py), like API keys and the body limit.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from rmserve.api import (
    CompareRequest,
    CompareResponse,
    ModelList,
    RankRequest,
    RankResponse,
    SafetyRequest,
    SafetyResponse,
    ScoreRequest,
    ScoreResponse,
)
from rmserve.server.rest.deps import ERRORS, Service, Work, answer, client_closed, unless_client_leaves

router = APIRouter()


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    summary="Score responses with the reward model",
)
async def score(
    body: ScoreRequest, request: Request, response: Response, call: Work
) -> ScoreResponse | JSONResponse:
    result = await unless_client_leaves(request, call.service.score(body, deadline=call.deadline))
    if result is None:
        return client_closed()
    response.headers.update(dict(call.state.record_timings(result.timings)))
    return result.response


# exclude_unset: the generative-judge fields appear only when a judge set them (a pairwise judge's
# reward_a/reward_b/margin/beta are set to null, explicitly); a scalar model's answer keeps its shape.
@router.post("/v1/compare", response_model=CompareResponse, response_model_exclude_unset=True, responses=ERRORS,
             summary="Compare two responses")
async def compare(body: CompareRequest, request: Request, call: Work):
    return await answer(request, call.service.compare(body, deadline=call.deadline))


@router.post("/v1/rank", response_model=RankResponse, response_model_exclude_unset=True, responses=ERRORS,
             summary="Rank N responses (best-of-N, DPO)")
async def rank(body: RankRequest, request: Request, call: Work):
    return await answer(request, call.service.rank(body, deadline=call.deadline))


@router.post(
    "/v1/safety", response_model=SafetyResponse, responses=ERRORS, summary="Hazard categories and policy action"
)
async def safety(body: SafetyRequest, request: Request, call: Work):
    return await answer(request, call.service.safety(body, deadline=call.deadline))


@router.get(
    "/v1/models", response_model=ModelList, responses=ERRORS, summary="The models served (and the ensemble)"
)
async def models(service: Service) -> ModelList:
    return service.model_list()
