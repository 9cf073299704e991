"""What an endpoint family may use: the narrow ``ServingContext`` (not the whole ``ScoreService``).

    ctx.models                       which model(s) a request means (api/models.py)
    ctx.scorer                       items in, rewards out, across one model or an ensemble (api/scoring.py)
    ctx.images                       wire images -> decoded (api/images.py); its cache serves uploads
    ctx.check_items / check_images   the limits the wire types cannot know
    ctx.safety_applies(sel, asked)   THE rule for whether the safety policy adjusts rewards
    ctx.compose(output, ...)         raw reward -> verifier -> safety policy (api/scoring.compose_reward)
    ctx.usage(scored, n)             the usage block of every scoring response

Every rule lives here once; endpoint families (api/endpoints.py and the modules it names) call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rmserve.api.images import ImageLimits, ImageLoader
from rmserve.api.models import ModelSet, Selection
from rmserve.api.protocol import Usage
from rmserve.api.scoring import Composed, Scored, Scorer, compose_reward
from rmserve.errors import InvalidInput, Param
from rmserve.models.types import ScoreOutput
from rmserve.safety import SafetyPolicy


@dataclass(frozen=True)
class ServiceLimits:
    max_items_per_request: int = 256
    max_images_per_item: int = 8
    images: ImageLimits = ImageLimits()


@dataclass
class ServingContext:
    models: ModelSet
    images: ImageLoader
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    # "request": the policy applies when a request asks for it; "always": unless a request opts out.
    safety_default: Literal["request", "always"] = "request"
    compat_verifier: str | None = None  # a verifier name applied to OpenRLHF ``labels`` as ground truths
    scorer: Scorer = field(init=False)

    def __post_init__(self) -> None:
        self.scorer = Scorer(self.models, self.images)

    # ── limits ─────────────────────────────────────────────────────────────────────────────

    def check_items(self, n: int, param: Param) -> None:
        cap = self.limits.max_items_per_request
        if n > cap:
            raise InvalidInput(
                f"{n} items in one request, over the limit of {cap}; split the request",
                param=param,
                code="too_many_items",
            )

    def check_images(self, n: int, selection: Selection, param: Param) -> None:
        if n and not selection.multimodal:
            text_only = [m.name for m in selection.members if not m.info.multimodal]
            raise InvalidInput(
                f"model {', '.join(map(repr, text_only))} is text-only and takes no images",
                param=param,
                code="images_not_supported",
            )
        if n > self.limits.max_images_per_item:
            raise InvalidInput(
                f"{n} images in one item, over the limit of {self.limits.max_images_per_item}",
                param=param,
                code="too_many_images",
            )

    # ── rewards ────────────────────────────────────────────────────────────────────────────

    def safety_applies(self, selection: Selection, asked: bool | None) -> bool:
        """Whether the safety policy adjusts this request's rewards: the request's own choice when it made
        one (``return: ["safety"]``, ``apply_safety``), else the server's ``safety_apply``; and only when a
        selected model has a safety head."""
        wanted = asked if asked is not None else self.safety_default == "always"
        return wanted and selection.first_with("safety") is not None

    def compose(
        self,
        output: ScoreOutput,
        *,
        apply_safety: bool,
        response: str = "",
        verifier: tuple[str, float] | None = None,
        ground_truth: str | None = None,
    ) -> Composed:
        return compose_reward(
            output.reward,
            response=response,
            verifier=verifier,
            ground_truth=ground_truth,
            safety=output.safety if apply_safety else None,
            policy=self.policy,
        )

    @staticmethod
    def usage(scored: Scored, n: int) -> Usage:
        return Usage(prompt_tokens=scored.num_tokens, total_tokens=scored.num_tokens, items=n)


__all__ = ["ServiceLimits", "ServingContext"]
