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
from rmserve.server.rest.deps import ERRORS, Deadline, Service, answer

router = APIRouter(tags=["compat"])


@router.post("/get_reward", response_model=GetRewardResponse, responses=ERRORS, summary="OpenRLHF remote RM")
async def get_reward(body: GetRewardRequest, request: Request, service: Service, deadline: Deadline):
    return await answer(request, service.get_reward(body, deadline=deadline))


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, summary="vLLM-style classify")
@router.post("/v1/classify", response_model=ClassifyResponse, include_in_schema=False)
async def classify(body: ClassifyRequest, request: Request, service: Service, deadline: Deadline):
    return await answer(request, service.classify(body, deadline=deadline))


@router.post("/pooling", response_model=PoolingResponse, responses=ERRORS, summary="vLLM-style pooling")
async def pooling(body: PoolingRequest, request: Request, service: Service, deadline: Deadline):
    return await answer(request, service.pooling(body, deadline=deadline))


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS, summary="SGLang-style embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, service: Service, deadline: Deadline):
    return await answer(request, service.embeddings(body, deadline=deadline))


@router.post("/slime/reward", response_model=SlimeRewardResponse, responses=ERRORS, summary="slime remote RM")
async def slime_reward(body: SlimeRewardRequest, request: Request, service: Service, deadline: Deadline):
    return await answer(request, service.slime_reward(body, deadline=deadline))
