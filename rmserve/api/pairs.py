"""Pairwise comparison and best-of-N ranking (protocol, math, serving).

compare: two responses to one conversation ->
    prob_a_better = sigmoid(r_a - r_b)          (Bradley-Terry)
    margin        = r_a - r_b
    beta          = beta0 * (1 + w * (1 - exp(-k * |margin|)))
The last is MM-DPO's dynamic reward scaling (MM-RLHF, 2025): a preference pair whose reward gap
is large gets a larger DPO beta, up to beta0 * (1 + w). MM-DPO defines the margin as chosen
minus rejected reward, which is >= 0 when the reward model agrees with the label; here neither
response is labelled chosen, so beta is computed from |margin| (symmetric in a and b; the pair's
beta does not depend on the order it was sent in).

rank: N responses to one conversation -> ranking best first, ``chosen_index`` (the best) and
``rejected_index``: the worst response whose reward is <= best - min_margin, else -1 (no pair
clears the margin; also for N = 1). Ties keep request order. ``top_k`` only shortens the returned
ranking; chosen/rejected are picked from all N.

Both use the selected model's reward, combined across an ensemble; with ``apply_safety`` (or the
server's ``safety_apply: always``) the safety policy adjusts each reward first, so a rejected or
penalized response ranks accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from rmserve.api.models import Selection
from rmserve.api.pipeline import RequestT, ResponseT, ScoringEndpoint
from rmserve.api.protocol import Conversation, Usage
from rmserve.api.scoring import Job, Scored
from rmserve.errors import Loc
from rmserve.rewards import sigmoid

MAX_BETA_PARAM = 1000.0
# MM-DPO defaults (beta_ori, w, k).
BETA0, W, K = 0.1, 0.5, 0.5


# ── math ───────────────────────────────────────────────────────────────────────────────────────


def dynamic_beta(margin: float, beta0: float = BETA0, w: float = W, k: float = K) -> float:
    """MM-DPO: beta0 * (1 + w * (1 - exp(-k * |margin|)))."""
    return beta0 * (1.0 + w * (1.0 - math.exp(-k * abs(margin))))


def compare_rewards(reward_a: float, reward_b: float) -> tuple[float, float]:
    """``(prob_a_better, margin)``."""
    margin = reward_a - reward_b
    return sigmoid(margin), margin


def rank_rewards(
    rewards: Sequence[float], *, min_margin: float = 0.0
) -> tuple[list[int], int, int]:
    """``(order best first, chosen_index, rejected_index)``; rejected is -1 when no response is at least
    ``min_margin`` below the best (or there is only one)."""
    order = sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))
    chosen = order[0]
    best = rewards[chosen]
    rejected = next((i for i in reversed(order[1:]) if rewards[i] <= best - min_margin), -1)
    return order, chosen, rejected


# ── protocol ───────────────────────────────────────────────────────────────────────────────────


class CompareRequest(Conversation):
    """Two responses to one conversation."""

    model: str | None = Field(default=None, description="Model or ensemble name; default: the server's default.")
    response_a: str = Field(description="First response.")
    response_b: str = Field(description="Second response.")
    # Bounded so beta stays a finite number (JSON has no infinity); real values are around 0.1-1.
    beta0: float = Field(default=BETA0, gt=0, le=MAX_BETA_PARAM, description="MM-DPO base beta (beta_ori).")
    w: float = Field(
        default=W, ge=0, le=MAX_BETA_PARAM,
        description="MM-DPO scaling weight: beta ranges over [beta0, beta0 * (1 + w)).",
    )
    k: float = Field(
        default=K, ge=0, le=MAX_BETA_PARAM, description="MM-DPO sharpness: how fast beta grows with |margin|."
    )
    apply_safety: bool | None = Field(
        default=None,
        description="Adjust both rewards with the server's safety policy first (default: the server's "
        "`safety_apply` setting).",
    )


class CompareResponse(BaseModel):
    reward_a: float = Field(description="Reward of response_a.")
    reward_b: float = Field(description="Reward of response_b.")
    prob_a_better: float = Field(description="sigmoid(reward_a - reward_b): Bradley-Terry P(a preferred over b).")
    margin: float = Field(description="reward_a - reward_b.")
    beta: float = Field(description="MM-DPO dynamic beta: beta0 * (1 + w * (1 - exp(-k * |margin|))).")
    model: str = Field(description="The model (or ensemble) that scored them.")
    usage: Usage = Field(description="What the request cost.")


class RankRequest(Conversation):
    """N responses to one conversation (best-of-N, DPO pair construction)."""

    model: str | None = Field(default=None, description="Model or ensemble name; default: the server's default.")
    responses: list[str] = Field(
        min_length=1, description="The candidate responses (empty ones are scored as the empty assistant turn)."
    )
    min_margin: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="The rejected response must score at least this much below the chosen one.",
    )
    top_k: int | None = Field(default=None, ge=1, description="Return only the best k of the ranking.")
    apply_safety: bool | None = Field(
        default=None,
        description="Adjust rewards with the server's safety policy before ranking (default: the server's "
        "`safety_apply` setting).",
    )


class Ranked(BaseModel):
    index: int = Field(description="Position of the response in the request.")
    reward: float = Field(description="Its reward.")


class RankResponse(BaseModel):
    ranking: list[Ranked] = Field(description="Responses best first (ties in request order), at most top_k.")
    chosen_index: int = Field(description="The best response.")
    rejected_index: int = Field(
        description="The worst response scoring <= best - min_margin; -1 if none does (or only one response)."
    )
    margin: float | None = Field(
        default=None, description="chosen reward - rejected reward; null without a rejected response."
    )
    model: str = Field(description="The model (or ensemble) that scored them.")
    usage: Usage = Field(description="What the request cost.")


# ── serving ────────────────────────────────────────────────────────────────────────────────────


class _ConversationEndpoint(ScoringEndpoint[RequestT, ResponseT]):
    """N responses to one conversation: its images are decoded once, errors point at each response."""

    def responses(self, request: RequestT) -> list[tuple[str, Loc]]:
        """(text, its field's location) per response."""
        raise NotImplementedError

    def validate(self, request, selection: Selection) -> None:
        self.ctx.check_items(len(self.responses(request)), "responses")
        self.ctx.check_conversation(request, selection)

    def shared_images(self, request) -> Sequence:
        return request.images

    def jobs(self, request, selection: Selection) -> list[Job]:
        messages = [m.model_dump() for m in request.messages] if request.messages is not None else None
        jobs = []
        for text, field in self.responses(request):
            def where(loc: Loc, field: Loc = field) -> Loc:
                return field if loc in ((), ("response",)) else loc

            jobs.append(Job(response=text, where=where, prompt=request.prompt, messages=messages,
                            truncate=request.truncate))
        return jobs

    def rewards(self, request, selection: Selection, scored: Scored) -> list[float]:
        """Each response's reward, after the safety policy when it applies."""
        apply_safety = self.ctx.safety_applies(selection, request.apply_safety)
        return [self.ctx.compose(o, apply_safety=apply_safety).reward for o in scored.outputs]


class CompareEndpoint(_ConversationEndpoint[CompareRequest, CompareResponse]):
    """Pairwise: rewards of two responses, P(a better), margin and MM-DPO's dynamic beta."""

    def responses(self, request: CompareRequest) -> list[tuple[str, Loc]]:
        return [(request.response_a, ("response_a",)), (request.response_b, ("response_b",))]

    def build(self, request: CompareRequest, selection: Selection, scored: Scored) -> CompareResponse:
        reward_a, reward_b = self.rewards(request, selection, scored)
        prob, margin = compare_rewards(reward_a, reward_b)
        return CompareResponse(
            reward_a=reward_a,
            reward_b=reward_b,
            prob_a_better=prob,
            margin=margin,
            beta=dynamic_beta(margin, request.beta0, request.w, request.k),
            model=selection.name,
            usage=self.ctx.usage(scored, 2),
        )


class RankEndpoint(_ConversationEndpoint[RankRequest, RankResponse]):
    """Best-of-N: N responses ranked best first, and a chosen/rejected pair for DPO."""

    def responses(self, request: RankRequest) -> list[tuple[str, Loc]]:
        return [(text, ("responses", i)) for i, text in enumerate(request.responses)]

    def build(self, request: RankRequest, selection: Selection, scored: Scored) -> RankResponse:
        rewards = self.rewards(request, selection, scored)
        order, chosen, rejected = rank_rewards(rewards, min_margin=request.min_margin)
        shown = order[: request.top_k] if request.top_k else order
        return RankResponse(
            ranking=[Ranked(index=i, reward=rewards[i]) for i in shown],
            chosen_index=chosen,
            rejected_index=rejected,
            margin=rewards[chosen] - rewards[rejected] if rejected >= 0 else None,
            model=selection.name,
            usage=self.ctx.usage(scored, len(rewards)),
        )


__all__ = [
    "BETA0", "K", "W", "CompareRequest", "CompareResponse", "RankRequest", "RankResponse", "Ranked",
    "CompareEndpoint", "RankEndpoint", "compare_rewards", "dynamic_beta", "rank_rewards",
]
