"""What an endpoint family may use: the narrow ``ServingContext`` (not the whole ``ScoreService``).

    ctx.models                       which model(s) a request means (api/models.py)
    ctx.scorer                       items in, rewards out, across one model or an ensemble (api/scoring.py)
    ctx.judges                       the same for a generative judge: judgments in, rewards out (api/judge.py)
    ctx.images                       wire images -> decoded (api/images.py); its cache serves uploads
    ctx.videos                       wire videos -> sampled clips (api/videos.py)
    ctx.check_items / check_images   the limits the wire types cannot know
    ctx.check_conversation           media a conversation declares, before admission
    ctx.safety_applies(sel, asked)   THE rule for whether the safety policy adjusts rewards
    ctx.compose(output, ...)         raw reward -> verifier -> safety policy (api/scoring.compose_reward)
    ctx.usage(scored, n)             the usage block of every scoring response

Every rule lives here once; endpoint families (api/endpoints.py and the modules it names) call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rmserve.api.conversation import ItemBudget, declared_visuals, split_parts
from rmserve.api.images import ImageLimits, ImageLoader
from rmserve.api.judge import JudgeRunner
from rmserve.api.models import ModelSet, Selection
from rmserve.api.protocol import Conversation, Usage
from rmserve.api.scoring import Composed, Scored, Scorer, compose_reward
from rmserve.api.videos import VideoCache, VideoLimits, VideoLoader
from rmserve.errors import InvalidInput, Loc, Param
from rmserve.models.types import ScoreOutput
from rmserve.safety import SafetyPolicy


@dataclass(frozen=True)
class ServiceLimits:
    max_items_per_request: int = 256
    max_judge_votes: int = 8  # voting.k cap of generative-judge requests
    max_images_per_item: int = 32  # images + video frames
    max_pixels_per_item: int = 8 * 16_777_216  # their width x height, summed
    images: ImageLimits = ImageLimits()
    videos: VideoLimits = VideoLimits()
    video_cache_bytes: int = 256 * 1024 * 1024  # decoded clips by file + sampling (0 disables)


@dataclass
class ServingContext:
    models: ModelSet
    images: ImageLoader
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    # "request": the policy applies when a request asks for it; "always": unless a request opts out.
    safety_default: Literal["request", "always"] = "request"
    compat_verifier: str | None = None  # a verifier name applied to OpenRLHF ``labels`` as ground truths
    videos: VideoLoader | None = None  # default: one over ``limits.videos`` with a ``video_cache_bytes`` cache
    scorer: Scorer = field(init=False)
    judges: JudgeRunner = field(init=False)

    def __post_init__(self) -> None:
        if self.videos is None:
            cache = VideoCache(self.limits.video_cache_bytes) if self.limits.video_cache_bytes else None
            self.videos = VideoLoader(self.limits.videos, cache)
        budget = ItemBudget(self.limits.max_images_per_item, self.limits.max_pixels_per_item)
        self.scorer = Scorer(self.models, self.images, self.videos, budget)
        self.judges = JudgeRunner(self.scorer, self.limits.max_judge_votes)

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
                f"{n} images and video frames in one item, over the limit of {self.limits.max_images_per_item}",
                param=param,
                code="too_many_images",
            )

    def check_conversation(self, conversation: Conversation, selection: Selection, at: Loc = ()) -> None:
        """Images and videos a conversation declares (top-level ``images`` and content parts), before admission:
        a text-only model refuses any (naming the first), and images + frames known so far must fit the cap
        (a ``video_url``'s frames are counted from its headers later, still before decoding)."""
        messages = [m.model_dump() for m in conversation.messages] if conversation.messages is not None else []
        _, media = split_parts(messages)
        n_top = len(conversation.images)
        if media and not n_top and not selection.multimodal:
            text_only = [m.name for m in selection.members if not m.info.multimodal]
            kind = "videos" if media[0].kind in ("video", "video_url") else "images"
            raise InvalidInput(f"model {', '.join(map(repr, text_only))} is text-only and takes no {kind}",
                               param=(*at, *media[0].loc), code=f"{kind}_not_supported")
        self.check_images(n_top + declared_visuals(messages), selection,
                          (*at, "images") if n_top or not media else (*at, *media[0].loc))

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
