"""Compat routes in the exact shapes of real RL clients (rules and decisions in rmserve/api/compat.py).

    POST /get_reward          OpenRLHF remote reward model: {"query", "prompts", "labels"} -> {"rewards", ...}
    POST /classify            vLLM classification (veRL's reward loop); also /v1/classify (SGLang's path)
    POST /pooling             vLLM pooling: the reward as a one-element vector, or the hidden state
    POST /v1/embeddings       SGLang/OpenAI embeddings (veRL's SGLang reward path): data[-1].embedding[-1] = reward
    POST /slime/reward        slime --rm-url: {"prompt", "response", "label"} -> {"reward", ...} (--reward-key reward)

Errors keep the server's one error shape (vLLM's own is the same ``{"error": {...}}``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from rmserve.api import (
    ClassifyRequest,
    ClassifyResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    GetRewardRequest,
    GetRewardResponse,
    PoolingRequest,
    PoolingResponse,
    SlimeRewardRequest,
    SlimeRewardResponse,
)
from rmserve.server.rest.deps import ERRORS, Work, answer

router = APIRouter(tags=["compat"])


@router.post("/get_reward", response_model=GetRewardResponse, responses=ERRORS, summary="OpenRLHF remote RM")
async def get_reward(body: GetRewardRequest, request: Request, call: Work):
    return await answer(request, call.service.get_reward(body, deadline=call.deadline))


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, summary="vLLM-style classify")
@router.post("/v1/classify", response_model=ClassifyResponse, include_in_schema=False)
async def classify(body: ClassifyRequest, request: Request, call: Work):
    return await answer(request, call.service.classify(body, deadline=call.deadline))


@router.post("/pooling", response_model=PoolingResponse, responses=ERRORS, summary="vLLM-style pooling")
async def pooling(body: PoolingRequest, request: Request, call: Work):
    return await answer(request, call.service.pooling(body, deadline=call.deadline))


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS, summary="SGLang-style embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, call: Work):
    return await answer(request, call.service.embeddings(body, deadline=call.deadline))


@router.post("/slime/reward", response_model=SlimeRewardResponse, responses=ERRORS, summary="slime remote RM")
async def slime_reward(body: SlimeRewardRequest, request: Request, call: Work):
    return await answer(request, call.service.slime_reward(body, deadline=call.deadline))
