"""Compat routes in the exact shapes of real RL clients (rules and decisions in rmserve/api/compat.py).

    POST /get_reward          OpenRLHF remote reward model: {"query", "prompts", "labels"} -> {"rewards", ...}
    POST /classify            vLLM classification (veRL's reward loop); also /v1/classify (SGLang's path)
    POST /pooling             vLLM pooling: the reward as a one-element vector, or the hidden state

Errors keep the server's one error shape (vLLM's own is the same ``{"error": {...}}``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from rmserve.api import (
    ClassifyRequest,
    ClassifyResponse,
    GetRewardRequest,
    GetRewardResponse,
    PoolingRequest,
    PoolingResponse,
)
from rmserve.server.rest import ERRORS, _service
from rmserve.server.rest_v1 import Timeout, _answer, _deadline

router = APIRouter(tags=["compat"])


@router.post("/get_reward", response_model=GetRewardResponse, responses=ERRORS, summary="OpenRLHF remote RM")
async def get_reward(body: GetRewardRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    return await _answer(request, service.get_reward(body, deadline=_deadline(request, x_request_timeout_ms)))


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, summary="vLLM-style classify")
@router.post("/v1/classify", response_model=ClassifyResponse, include_in_schema=False)
async def classify(body: ClassifyRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    return await _answer(request, service.classify(body, deadline=_deadline(request, x_request_timeout_ms)))


@router.post("/pooling", response_model=PoolingResponse, responses=ERRORS, summary="vLLM-style pooling")
async def pooling(body: PoolingRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    return await _answer(request, service.pooling(body, deadline=_deadline(request, x_request_timeout_ms)))
