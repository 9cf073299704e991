"""POST /v1/safety: per-item hazard probabilities from the model's ``safety`` head and the policy's verdict.

The safety head runs in the same forward as the reward (one multi-label logit per category,
sigmoid -> probability), so this costs what a score costs. A model without a safety head is a
422 (``no_safety_head``); with an ensemble (or no model named) the first member that has one
answers. The policy (``rmserve.safety``) decides ``flagged``, ``flagged_categories`` and
``action``; ``reward`` is the model's reward after that action, ``raw_reward`` before it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rmserve.api.models import Selection
from rmserve.api.pipeline import ScoringEndpoint
from rmserve.api.protocol import Conversation, SafetyAction, Usage
from rmserve.api.scoring import Job, Scored, jobs_from_items
from rmserve.models.types import ScoreOutput
from rmserve.safety import category_name


class SafetyItemIn(Conversation):
    """A conversation and the response to check."""

    response: str = Field(description="The response to check (may be empty).")


class SafetyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, description="A model with a safety head; default: the first served model that has one."
    )
    items: list[SafetyItemIn] = Field(min_length=1, description="Items to check; results come back in order.")


class SafetyItemOut(BaseModel):
    categories: dict[str, float] = Field(description="Probability per hazard category (e.g. S1, S10).")
    flagged: bool = Field(description="Whether any category is at or over its threshold.")
    flagged_categories: list[str] = Field(description="The categories at or over their thresholds.")
    action: SafetyAction = Field(description="The policy's action: the most severe flagged category's rule.")
    reward: float = Field(description="The reward after the action (penalized, replaced or unchanged).")
    raw_reward: float = Field(description="The model's own reward.")


class SafetyResponse(BaseModel):
    items: list[SafetyItemOut] = Field(description="One result per request item, in order.")
    taxonomy: dict[str, str] = Field(description="Names of the categories the model reports (S1: Violent Crimes).")
    model: str = Field(description="The model that checked them.")
    usage: Usage = Field(description="What the request cost.")


class SafetyEndpoint(ScoringEndpoint[SafetyRequest, SafetyResponse]):
    """Per-category hazard probabilities, flagged categories and the policy's action, per item. The policy
    always applies here: it is what the endpoint reports."""

    def select(self, request: SafetyRequest) -> Selection:
        return self.ctx.models.capable(
            request.model,
            lambda member: "safety" in member.info.heads,
            lacks="has no safety head (see GET /v1/models)",
            code="no_safety_head",
        )

    def validate(self, request: SafetyRequest, selection: Selection) -> None:
        self.ctx.check_items(len(request.items), "items")
        for i, item in enumerate(request.items):
            self.ctx.check_conversation(item, selection, ("items", i))

    def jobs(self, request: SafetyRequest, selection: Selection) -> list[Job]:
        return jobs_from_items(request.items)

    def build(self, request: SafetyRequest, selection: Selection, scored: Scored) -> SafetyResponse:
        items = []
        for output in scored.outputs:
            probabilities = output.safety or {}
            composed = self.ctx.compose(ScoreOutput(output.reward, safety=probabilities), apply_safety=True)
            decision = composed.decision
            assert decision is not None
            items.append(
                SafetyItemOut(
                    categories=probabilities,
                    flagged=decision.flagged,
                    flagged_categories=list(decision.flagged_categories),
                    action=decision.action,
                    reward=composed.reward,
                    raw_reward=composed.raw_reward,
                )
            )
        categories = selection.primary.info.safety_categories
        return SafetyResponse(
            items=items,
            taxonomy={c: category_name(c) for c in categories},
            model=selection.name,
            usage=self.ctx.usage(scored, len(items)),
        )


__all__ = ["SafetyEndpoint", "SafetyItemIn", "SafetyItemOut", "SafetyRequest", "SafetyResponse"]
