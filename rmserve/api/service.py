"""The service layer's facade: the one object the transports hold, and what they may call on it.

    score(ScoreRequest, deadline=)            -> ScoreResult     (api/score.py)
    compare / rank(..., deadline=)            -> Compare/RankResponse        (api/pairs.py)
    safety(SafetyRequest, deadline=)          -> SafetyResponse  (api/safety.py)
    get_reward / classify / pooling / embeddings(...) -> OpenRLHF-, vLLM-, SGLang-shaped (api/compat.py)
    slime_reward(SlimeRewardRequest)          -> SlimeRewardResponse         (api/slime.py)
    critique(..., deadline=) / critique_stream(...)                          (api/critique.py)
    upload_image(bytes)                       -> ImageUploadResponse         (api/uploads.py)
    model_list()                              -> ModelList

The scoring endpoints are ``ScoringEndpoint``s (api/pipeline.py: select -> validate -> jobs -> run ->
build); each, like critique and uploads, sees only the ``ServingContext`` (api/context.py), never
this class. A new endpoint family is one module with a ``ScoringEndpoint`` subclass and one line here.
``deadline`` is always a ``time.monotonic()`` value (None: none). Errors are ``RMServeError``s whose
``param`` is the dotted path of the offending field in the request (``items.3.images.0``,
``response_b``, ``query.0``).
"""

from __future__ import annotations

import functools
from typing import Literal

from rmserve.api import critique, uploads
from rmserve.api.compat import ClassifyEndpoint, EmbeddingsEndpoint, GetRewardEndpoint, PoolingEndpoint
from rmserve.api.context import ServiceLimits, ServingContext
from rmserve.api.images import ImageLoader
from rmserve.api.models import ModelSet
from rmserve.api.pairs import CompareEndpoint, RankEndpoint
from rmserve.api.protocol import ModelCard, ModelList
from rmserve.api.safety import SafetyEndpoint
from rmserve.api.score import ScoreEndpoint
from rmserve.api.slime import SlimeRewardEndpoint
from rmserve.api.videos import VideoLoader
from rmserve.engine import Engine
from rmserve.models.judge_format import JudgeConfig
from rmserve.safety import SafetyPolicy


class ScoreService:
    """All endpoint methods over the served models (one engine each).

    ``engine``: one engine, or a ``ModelSet`` of several (ensembles). ``safety``: the policy applied
    when a request asks for safety outputs (or always, with ``apply_safety="always"``).
    ``compat_verifier``: a verifier name applied to OpenRLHF ``labels`` as ground truths.
    """

    def __init__(
        self,
        engine: Engine | ModelSet,
        *,
        limits: ServiceLimits | None = None,
        images: ImageLoader | None = None,
        videos: VideoLoader | None = None,
        safety: SafetyPolicy | None = None,
        apply_safety: Literal["request", "always"] = "request",
        compat_verifier: str | None = None,
    ):
        models = engine if isinstance(engine, ModelSet) else ModelSet.single(engine)
        limits = limits or ServiceLimits()
        self.context = ctx = ServingContext(
            models=models,
            images=images or ImageLoader(limits.images),
            limits=limits,
            policy=safety or SafetyPolicy(),
            safety_default=apply_safety,
            compat_verifier=compat_verifier,
            videos=videos,
        )
        self.models, self.images, self.videos = ctx.models, ctx.images, ctx.videos
        self.score = ScoreEndpoint(ctx)
        self.compare = CompareEndpoint(ctx)
        self.rank = RankEndpoint(ctx)
        self.safety = SafetyEndpoint(ctx)
        self.get_reward = GetRewardEndpoint(ctx)
        self.classify = ClassifyEndpoint(ctx)
        self.pooling = PoolingEndpoint(ctx)
        self.embeddings = EmbeddingsEndpoint(ctx)
        self.slime_reward = SlimeRewardEndpoint(ctx)
        self.critique = functools.partial(critique.critique, ctx)
        self.critique_stream = functools.partial(critique.critique_stream, ctx)
        self.upload_image = functools.partial(uploads.upload_image, ctx)

    # ── models ─────────────────────────────────────────────────────────────────────────────

    def model_list(self) -> ModelList:
        default = self.models.default.name
        cards = []
        for name, engine in self.models.engines.items():
            info = engine.model.info
            cards.append(
                ModelCard(
                    id=name,
                    family=info.family,
                    heads=list(info.heads),
                    max_length=info.max_length,
                    multimodal=info.multimodal,
                    untrained=info.untrained,
                    device=info.device,
                    dtype=info.dtype,
                    attribute_names=list(info.attribute_names),
                    safety_categories=list(info.safety_categories),
                    default=name == default,
                    critique=critique.can_critique(engine.model),
                    judge=_judge_mode(engine.model),
                )
            )
        ensemble = self.models.ensemble
        if ensemble is not None:
            infos = [m.info for m in ensemble.members]
            attrs = next((m.info.attribute_names for m in ensemble.members if m.info.attribute_names), [])
            cats = next((m.info.safety_categories for m in ensemble.members if m.info.safety_categories), [])
            cards.append(
                ModelCard(
                    id=ensemble.name,
                    family="ensemble",
                    heads=ensemble.heads,
                    max_length=min(i.max_length for i in infos),
                    multimodal=ensemble.multimodal,
                    untrained=any(i.untrained for i in infos),
                    device=",".join(dict.fromkeys(i.device for i in infos)),
                    dtype=",".join(dict.fromkeys(i.dtype for i in infos)),
                    attribute_names=list(attrs),
                    safety_categories=list(cats),
                    default=ensemble.name == default,
                    members=[m.name for m in ensemble.members],
                    ensemble_method=ensemble.method,
                    weights=[m.weight for m in ensemble.members],
                )
            )
        return ModelList(data=cards)


def _judge_mode(model) -> str | None:
    """A generative judge's mode for its model card (None: a scalar reward model)."""
    if model.judge_decoding() is None:
        return None
    config = JudgeConfig.of(model.extra_config)
    return config.mode if config is not None else None
