"""``/v1/score`` (and gRPC Score / ScoreStream, and offline ``rmserve score``): items in, rewards out.

Per item: the model's reward (or a pointwise generative judge's: api/judge.py), then the hybrid verifier
reward when the request names a ``verifier`` and the item a ``ground_truth``, then the safety policy when it
applies (``ctx.safety_applies``: ``return: ["safety"]`` asks for it; the server's ``safety_apply: always``
applies it regardless). ``on_reject: "error"`` turns a rejecting policy decision into a 422 naming the item.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rmserve.api.judge import JudgeCase, JudgeSetup
from rmserve.api.models import Selection
from rmserve.api.pipeline import ScoringEndpoint
from rmserve.api.protocol import ScoreItemOut, ScoreRequest, ScoreResponse
from rmserve.api.scoring import Job, Scored, jobs_from_items
from rmserve.errors import InvalidInput


@dataclass
class Timings:
    preprocess_ms: float = 0.0
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    total_ms: float = 0.0

    @classmethod
    def of(cls, scored: Scored) -> Timings:
        return cls(scored.preprocess_s * 1000, scored.queue_s * 1000, scored.inference_s * 1000, scored.total_s * 1000)


@dataclass
class ScoreResult:
    """The response, and where the time went (the transports report it: headers, trailing metadata)."""

    response: ScoreResponse
    timings: Timings


class ScoreEndpoint(ScoringEndpoint[ScoreRequest, ScoreResult]):
    def validate(self, request: ScoreRequest, selection: Selection) -> None:
        self.ctx.check_items(len(request.items), "items")
        heads = selection.heads
        for wanted in request.return_:
            if wanted != "reward" and wanted not in heads:
                raise InvalidInput(
                    f"{wanted!r} was requested but model {selection.name!r} has no {wanted} head "
                    f"(heads: {', '.join(heads)})",
                    param="return",
                    code="unsupported_output",
                )
        for i, item in enumerate(request.items):
            self.ctx.check_conversation(item, selection, ("items", i))
            if item.ground_truth is not None and request.verifier is None:
                raise InvalidInput(
                    "`ground_truth` needs a request-level `verifier` (e.g. \"numeric_match\") to check it with",
                    param=("items", i, "ground_truth"),
                    code="verifier_required",
                )

    def jobs(self, request: ScoreRequest, selection: Selection) -> list[Job]:
        return jobs_from_items(request.items)

    def judge_options(self, request: ScoreRequest):
        return request.voting, request.return_judgment

    async def judge(self, request: ScoreRequest, selection: Selection, judge: JudgeSetup, *,
                    deadline: float | None) -> ScoreResult:
        """A pointwise judge scores each item; a pairwise judge needs two responses (compare, rank)."""
        if judge.config.mode == "pairwise":
            raise InvalidInput(f"model {selection.name!r} is a pairwise judge: it says which of two responses is "
                               "better, not a score; use /v1/compare or /v1/rank", param="model",
                               code="pairwise_judge")
        cases = [JudgeCase(job, (job.response,), (), job.where(())) for job in self.jobs(request, selection)]
        judged = await self.ctx.judges.run(judge, cases, voting=request.voting, deadline=deadline)
        result = self.build(request, selection, dataclasses.replace(judged.scored, outputs=judged.outputs()))
        if request.return_judgment:
            for i, item in enumerate(result.response.items):
                item.judgments = judged.judgments(i)
        return result

    def build(self, request: ScoreRequest, selection: Selection, scored: Scored) -> ScoreResult:
        wanted = set(request.return_)
        apply_safety = self.ctx.safety_applies(selection, True if "safety" in wanted else None)
        verifier = (request.verifier.name, request.verifier.tolerance) if request.verifier else None
        items = []
        for i, (wire, output) in enumerate(zip(request.items, scored.outputs, strict=True)):
            composed = self.ctx.compose(
                output, apply_safety=apply_safety, response=wire.response, verifier=verifier,
                ground_truth=wire.ground_truth,
            )
            decision = composed.decision
            if decision is not None and decision.rejected and request.on_reject == "error":
                raise InvalidInput(
                    f"the safety policy rejects this response (categories: {', '.join(decision.flagged_categories)})",
                    param=("items", i),
                    code="safety_rejected",
                )
            items.append(
                ScoreItemOut(
                    reward=composed.reward,
                    attributes=output.attributes if "attributes" in wanted else None,
                    safety=output.safety if "safety" in wanted else None,
                    raw_reward=composed.raw_reward if composed.changed_by else None,
                    verified=composed.verified,
                    flagged=decision.flagged if decision else None,
                    flagged_categories=list(decision.flagged_categories) if decision else None,
                    safety_action=decision.action if decision else None,
                    model_rewards=scored.model_rewards[i] if scored.model_rewards else None,
                )
            )
        response = ScoreResponse(items=items, model=selection.name, usage=self.ctx.usage(scored, len(items)))
        return ScoreResult(response, Timings.of(scored))


__all__ = ["ScoreEndpoint", "ScoreResult", "Timings"]
