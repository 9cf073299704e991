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

import dataclasses
import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from rmserve.api.judge import JudgeCase, Judged, JudgeSetup
from rmserve.api.models import Selection
from rmserve.api.pipeline import RequestT, ResponseT, ScoringEndpoint
from rmserve.api.protocol import Conversation, JudgmentOut, Usage, VotingSpec
from rmserve.api.scoring import Job, Scored
from rmserve.errors import InvalidInput, Loc
from rmserve.models.judge_format import pair_probability, second_is_better
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
    voting: VotingSpec | None = Field(
        default=None, description="Generative judges: k sampled judgments per response (pointwise) or per order "
        "(pairwise) instead of one greedy one.")
    return_judgment: bool = Field(default=False, description="Generative judges: return the judgments.")


class CompareResponse(BaseModel):
    reward_a: float | None = Field(description="Reward of response_a (null from a pairwise judge: it gives no "
                                   "per-response rewards).")
    reward_b: float | None = Field(description="Reward of response_b (null from a pairwise judge).")
    prob_a_better: float = Field(description="sigmoid(reward_a - reward_b): Bradley-Terry P(a preferred over b); a "
                                 "pairwise judge: the mean of prob_a_better_ab and prob_a_better_ba.")
    margin: float | None = Field(description="reward_a - reward_b (null from a pairwise judge).")
    beta: float | None = Field(description="MM-DPO dynamic beta: beta0 * (1 + w * (1 - exp(-k * |margin|))) (null "
                               "from a pairwise judge).")
    prob_a_better_ab: float | None = Field(default=None, description="Pairwise judges: P(A) with a shown first.")
    prob_a_better_ba: float | None = Field(default=None, description="Pairwise judges: P(B) with b shown first (a "
                                           "second); differs from prob_a_better_ab by the judge's position bias.")
    judgments: list[JudgmentOut] | None = Field(default=None, description="With `return_judgment`: the judgments "
                                                "(`about`: [0] is a, [1] is b, in the order shown).")
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
    voting: VotingSpec | None = Field(
        default=None, description="Generative judges: k sampled judgments per response (pointwise) or per ordered "
        "pair (pairwise) instead of one greedy one.")
    return_judgment: bool = Field(default=False, description="Generative judges: return the judgments.")


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
    judgments: list[JudgmentOut] | None = Field(default=None, description="With `return_judgment`: the judgments "
                                                "(`about`: the responses' indices, in the order shown).")
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

    def judge_options(self, request):
        return request.voting, request.return_judgment

    async def judge_each(self, request, selection: Selection, judge: JudgeSetup, *, deadline) -> Judged:
        """A pointwise judge: one judgment (or k votes) per response, like a scalar model's rewards."""
        cases = [JudgeCase(job, (job.response,), (k,), job.where(()))
                 for k, job in enumerate(self.jobs(request, selection))]
        return await self.ctx.judges.run(judge, cases, voting=request.voting, deadline=deadline,
                                         shared_images=request.images)

    async def judge_pairs(self, request, selection: Selection, judge: JudgeSetup, pairs: list[tuple[int, int]], *,
                          deadline) -> tuple[Judged, dict[tuple[int, int], float]]:
        """A pairwise judge on ``pairs`` (i, j), each in both orders: P(i better than j) per pair, the mean of
        P(first) with i first and P(second) with j first."""
        texts = [text for text, _ in self.responses(request)]
        job = self.jobs(request, selection)[0]  # the shared conversation (its response is not used)
        cases = [JudgeCase(job, (texts[a], texts[b]), (a, b)) for i, j in pairs for a, b in ((i, j), (j, i))]
        judged = await self.ctx.judges.run(judge, cases, voting=request.voting, deadline=deadline,
                                           shared_images=request.images)
        first = [r.reward for r in judged.results]  # P(first shown better), per order
        return judged, {pair: pair_probability(first[2 * n], second_is_better(first[2 * n + 1]))
                        for n, pair in enumerate(pairs)}

    def rewards(self, request, selection: Selection, scored: Scored) -> list[float]:
        """Each response's reward, after the safety policy when it applies."""
        apply_safety = self.ctx.safety_applies(selection, request.apply_safety)
        return [self.ctx.compose(o, apply_safety=apply_safety).reward for o in scored.outputs]


class CompareEndpoint(_ConversationEndpoint[CompareRequest, CompareResponse]):
    """Pairwise: rewards of two responses, P(a better), margin and MM-DPO's dynamic beta."""

    def responses(self, request: CompareRequest) -> list[tuple[str, Loc]]:
        return [(request.response_a, ("response_a",)), (request.response_b, ("response_b",))]

    async def judge(self, request: CompareRequest, selection: Selection, judge: JudgeSetup, *,
                    deadline: float | None) -> CompareResponse:
        if judge.config.mode == "pointwise":
            judged = await self.judge_each(request, selection, judge, deadline=deadline)
            response = self.build(request, selection, dataclasses.replace(judged.scored, outputs=judged.outputs()))
        else:
            judged, probs = await self.judge_pairs(request, selection, judge, [(0, 1)], deadline=deadline)
            p_ab, p_ba_first = judged.results[0].reward, judged.results[1].reward
            response = CompareResponse(
                reward_a=None, reward_b=None, prob_a_better=probs[(0, 1)], margin=None, beta=None,
                prob_a_better_ab=p_ab, prob_a_better_ba=second_is_better(p_ba_first), model=selection.name,
                usage=self.ctx.usage(judged.scored, 2))
        if request.return_judgment:
            response.judgments = [j for i in range(len(judged.results)) for j in judged.judgments(i)]
        return response

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

    async def judge(self, request: RankRequest, selection: Selection, judge: JudgeSetup, *,
                    deadline: float | None) -> RankResponse:
        """Pointwise judges rank by their scores; pairwise judges judge every pair in both orders and rank by
        each response's mean P(better) against all the others (a Borda-style win rate)."""
        n = len(request.responses)
        if judge.config.mode == "pointwise":
            judged = await self.judge_each(request, selection, judge, deadline=deadline)
            rewards = [r.reward for r in judged.results]
        else:
            if n < 2:
                raise InvalidInput(f"model {selection.name!r} is a pairwise judge: it ranks two or more responses",
                                   param="responses", code="too_few_responses")
            self.ctx.check_items(n * (n - 1), "responses")  # judgments: every ordered pair
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
            judged, probs = await self.judge_pairs(request, selection, judge, pairs, deadline=deadline)
            wins = [0.0] * n
            for (i, j), p in probs.items():
                wins[i] += p
                wins[j] += 1.0 - p
            rewards = [w / (n - 1) for w in wins]
        response = self.ranked(request, selection, rewards, judged.scored)
        if request.return_judgment:
            response.judgments = [j for i in range(len(judged.results)) for j in judged.judgments(i)]
        return response

    def build(self, request: RankRequest, selection: Selection, scored: Scored) -> RankResponse:
        return self.ranked(request, selection, self.rewards(request, selection, scored), scored)

    def ranked(self, request: RankRequest, selection: Selection, rewards: list[float], scored: Scored) -> RankResponse:
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
