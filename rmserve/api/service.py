"""The service layer: transport-free methods that REST and gRPC both call.

``ScoreService`` is the one object the transports hold. Each endpoint family lives in its own
module (vLLM-entrypoints style) and is exposed here as a method:

    score(ScoreRequest, deadline=)         -> ScoreResult     (this module)
    compare(CompareRequest, deadline=)     -> CompareResponse (api/pairs.py)
    rank(RankRequest, deadline=)           -> RankResponse    (api/pairs.py)
    critique(CritiqueRequest, deadline=)   -> CritiqueResponse, critique_stream(...) -> chunks (api/critique.py)
    safety(SafetyRequest, deadline=)       -> SafetyResponse  (api/safety.py)
    upload_image(bytes)                    -> ImageUploadResponse (api/uploads.py)
    get_reward / classify / pooling        -> OpenRLHF and vLLM-shaped compat (api/compat.py)
    model_list()                           -> ModelList

``deadline`` is always a ``time.monotonic()`` value (None: none). Errors are ``RMServeError``s
whose ``param`` is the dotted path of the offending field in the request (``items.3.images.0``,
``response_b``, ``query.0``).

Score pipeline: validate (limits the wire types cannot know) -> the scoring core in
``api/scoring.py`` (admit, preprocess, submit, combine across an ensemble) -> compose (hybrid
verifier reward, safety policy) -> build_response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from rmserve.api import compat, critique, pairs, safety, uploads
from rmserve.api.images import ImageLimits, ImageLoader
from rmserve.api.models import ModelSet, Selection
from rmserve.api.protocol import ModelCard, ModelList, ScoreItemOut, ScoreRequest, ScoreResponse, Usage
from rmserve.api.scoring import Scored, Scorer, compose_reward, jobs_from_items
from rmserve.engine import Engine
from rmserve.errors import InvalidInput
from rmserve.safety import SafetyPolicy


@dataclass(frozen=True)
class ServiceLimits:
    max_items_per_request: int = 256
    max_images_per_item: int = 8
    images: ImageLimits = ImageLimits()


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
    response: ScoreResponse
    timings: Timings


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
        safety: SafetyPolicy | None = None,
        apply_safety: Literal["request", "always"] = "request",
        compat_verifier: str | None = None,
    ):
        self.models = engine if isinstance(engine, ModelSet) else ModelSet.single(engine)
        self.engine = self.models.primary  # the first model's engine (uploads, single-model callers)
        self.info = self.engine.model.info
        self.limits = limits or ServiceLimits()
        self.images = images or ImageLoader(self.limits.images)
        self.safety_policy = safety or SafetyPolicy()
        self.apply_safety_always = apply_safety == "always"
        self.compat_verifier = compat_verifier
        self.scorer = Scorer(self.models, self.images)

    # ── score ──────────────────────────────────────────────────────────────────────────────

    async def score(self, request: ScoreRequest, *, deadline: float | None = None) -> ScoreResult:
        """Score a request's items (batched with other requests' items)."""
        selection = self.models.resolve(request.model)
        self.validate(request, selection)
        jobs = jobs_from_items(request.items)
        scored = await self.scorer.run(selection, jobs, deadline=deadline)
        return ScoreResult(self.build_response(request, selection, scored), Timings.of(scored))

    def validate(self, request: ScoreRequest, selection: Selection | None = None) -> None:
        selection = selection or self.models.resolve(request.model)
        self.check_items(len(request.items), "items")
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
            self.check_images(len(item.images), selection, f"items.{i}.images")
            if item.ground_truth is not None and request.verifier is None:
                raise InvalidInput(
                    "`ground_truth` needs a request-level `verifier` (e.g. \"numeric_match\") to check it with",
                    param=f"items.{i}.ground_truth",
                    code="verifier_required",
                )

    def check_items(self, n: int, param: str) -> None:
        cap = self.limits.max_items_per_request
        if n > cap:
            raise InvalidInput(
                f"{n} items in one request, over the limit of {cap}; split the request",
                param=param,
                code="too_many_items",
            )

    def check_images(self, n: int, selection: Selection, param: str) -> None:
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

    def wants_safety(self, asked: bool, selection: Selection) -> bool:
        return (asked or self.apply_safety_always) and selection.first_with("safety") is not None

    def build_response(self, request: ScoreRequest, selection: Selection, scored: Scored) -> ScoreResponse:
        wanted = set(request.return_)
        apply_safety = self.wants_safety("safety" in wanted, selection)
        verifier = (request.verifier.name, request.verifier.tolerance) if request.verifier else None
        items = []
        for i, (wire, output) in enumerate(zip(request.items, scored.outputs, strict=True)):
            composed = compose_reward(
                output.reward,
                response=wire.response,
                verifier=verifier,
                ground_truth=wire.ground_truth,
                safety=output.safety if apply_safety else None,
                policy=self.safety_policy,
            )
            decision = composed.decision
            if decision is not None and decision.rejected and request.on_reject == "error":
                raise InvalidInput(
                    f"the safety policy rejects this response (categories: {', '.join(decision.flagged_categories)})",
                    param=f"items.{i}",
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
        usage = Usage(prompt_tokens=scored.num_tokens, total_tokens=scored.num_tokens, items=len(items))
        return ScoreResponse(items=items, model=selection.name, usage=usage)

    # ── the other families (each in its own module) ────────────────────────────────────────

    async def compare(self, request: pairs.CompareRequest, *, deadline: float | None = None) -> pairs.CompareResponse:
        """Pairwise: rewards of two responses, P(a better), margin and MM-DPO's dynamic beta."""
        return await pairs.compare(self, request, deadline=deadline)

    async def rank(self, request: pairs.RankRequest, *, deadline: float | None = None) -> pairs.RankResponse:
        """Best-of-N: N responses ranked best first, and a chosen/rejected pair for DPO."""
        return await pairs.rank(self, request, deadline=deadline)

    async def critique(
        self, request: critique.CritiqueRequest, *, deadline: float | None = None
    ) -> critique.CritiqueResponse:
        """MM-RLHF critique: generate an evaluation greedily, then score with it."""
        return await critique.critique(self, request, deadline=deadline)

    def critique_stream(
        self, request: critique.CritiqueRequest, *, deadline: float | None = None
    ) -> AsyncIterator[critique.CritiqueChunk]:
        """The critique as it is generated: text chunks, then a final chunk with the reward.
        Validation errors are raised by the first ``__anext__``, before any chunk."""
        return critique.critique_stream(self, request, deadline=deadline)

    async def safety(self, request: safety.SafetyRequest, *, deadline: float | None = None) -> safety.SafetyResponse:
        """Per-category hazard probabilities, flagged categories and the policy's action, per item."""
        return await safety.classify_safety(self, request, deadline=deadline)

    async def upload_image(self, data: bytes) -> uploads.ImageUploadResponse:
        """Keep an image (by the sha256 of its bytes) so later requests can send ``{"sha256": ...}``."""
        return await uploads.upload_image(self, data)

    async def get_reward(
        self, request: compat.GetRewardRequest, *, deadline: float | None = None
    ) -> compat.GetRewardResponse:
        """OpenRLHF's remote reward model protocol."""
        return await compat.get_reward(self, request, deadline=deadline)

    async def classify(
        self, request: compat.ClassifyRequest, *, deadline: float | None = None
    ) -> compat.ClassifyResponse:
        """vLLM's /classify shape (veRL's reward loop)."""
        return await compat.classify(self, request, deadline=deadline)

    async def pooling(self, request: compat.PoolingRequest, *, deadline: float | None = None) -> compat.PoolingResponse:
        """vLLM's /pooling shape: the reward as a one-element vector, or the pooled hidden state."""
        return await compat.pooling(self, request, deadline=deadline)

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
