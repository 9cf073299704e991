"""The score service: transport-free; REST and (later) gRPC call the same methods.

A request goes through named steps, each a method:

    validate       limits the wire types cannot know (items per request, images per item, heads)
    admit          reserve queue room or refuse at once with Overloaded (before any expensive work)
    preprocess     per item in the engine's thread pool: decode images, then model.encode
    submit         hand the EncodedItems to the engine and await their outputs (batched with
                   other requests' items; a deadline or the caller leaving drops them)
    build_response keep the requested outputs, add usage

Errors are ``RMServeError``s whose ``param`` is the dotted path into the request, e.g.
``items.3.images.0`` or ``items.0.response``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from rmserve.api.images import ImageLimits, ImageLoader
from rmserve.api.protocol import ScoreItemIn, ScoreItemOut, ScoreRequest, ScoreResponse, Usage
from rmserve.engine import Engine, EngineResult, Permit
from rmserve.errors import DeadlineExceeded, InvalidInput, RMServeError
from rmserve.models.types import EncodedItem, ScoreItem, ScoreOutput


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


@dataclass
class ScoreResult:
    response: ScoreResponse
    timings: Timings


class ScoreService:
    def __init__(
        self, engine: Engine, *, limits: ServiceLimits | None = None, images: ImageLoader | None = None
    ):
        self.engine = engine
        self.limits = limits or ServiceLimits()
        self.images = images or ImageLoader(self.limits.images)
        self.info = engine.model.info

    async def score(self, request: ScoreRequest, *, deadline: float | None = None) -> ScoreResult:
        """Score a request. ``deadline`` is a ``time.monotonic()`` value (None: no deadline)."""
        start = time.monotonic()
        self.validate(request)
        with self.admit(request) as permit:
            encoded = await self.preprocess(request)
            preprocessed = time.monotonic()
            if deadline is not None and preprocessed >= deadline:
                raise DeadlineExceeded(
                    "the request's deadline passed during preprocessing", code="deadline_exceeded"
                )
            result = await self.submit(permit, encoded, deadline=deadline)
        timings = Timings(
            preprocess_ms=(preprocessed - start) * 1000,
            queue_ms=result.queue_s * 1000,
            inference_ms=result.inference_s * 1000,
            total_ms=(time.monotonic() - start) * 1000,
        )
        return ScoreResult(self.build_response(request, result), timings)

    # ── steps ──────────────────────────────────────────────────────────────────────────────

    def validate(self, request: ScoreRequest) -> None:
        if request.model is not None and request.model != self.info.name:
            raise InvalidInput(
                f"model {request.model!r} is not served here; this server serves {self.info.name!r}",
                param="model",
                code="model_not_found",
            )
        n, cap = len(request.items), self.limits.max_items_per_request
        if n > cap:
            raise InvalidInput(
                f"{n} items in one request, over the limit of {cap}; split the request",
                param="items",
                code="too_many_items",
            )
        for wanted in request.return_:
            if wanted != "reward" and wanted not in self.info.heads:
                raise InvalidInput(
                    f"{wanted!r} was requested but this model has no {wanted} head "
                    f"(heads: {', '.join(self.info.heads)})",
                    param="return",
                    code="unsupported_output",
                )
        for i, item in enumerate(request.items):
            if item.images and not self.info.multimodal:
                raise InvalidInput(
                    "this model is text-only and takes no images",
                    param=f"items.{i}.images",
                    code="images_not_supported",
                )
            if len(item.images) > self.limits.max_images_per_item:
                raise InvalidInput(
                    f"{len(item.images)} images in one item, over the limit of "
                    f"{self.limits.max_images_per_item}",
                    param=f"items.{i}.images",
                    code="too_many_images",
                )

    def admit(self, request: ScoreRequest) -> Permit:
        return self.engine.try_admit(len(request.items))

    async def preprocess(self, request: ScoreRequest) -> list[EncodedItem]:
        jobs = [self.engine.run_in_pool(self._prepare_item, i, item) for i, item in enumerate(request.items)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        # Report the first failing item (by position), whatever order the pool finished in.
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        return results  # type: ignore[return-value]

    async def submit(
        self, permit: Permit, encoded: list[EncodedItem], *, deadline: float | None
    ) -> EngineResult:
        return await self.engine.score(permit, encoded, deadline=deadline)

    def build_response(self, request: ScoreRequest, result: EngineResult) -> ScoreResponse:
        wanted = set(request.return_)
        items = [_item_out(output, wanted) for output in result.outputs]
        usage = Usage(prompt_tokens=result.num_tokens, total_tokens=result.num_tokens, items=len(items))
        return ScoreResponse(items=items, model=self.info.name, usage=usage)

    # ── per-item work (runs in the preprocessing pool) ─────────────────────────────────────

    def _prepare_item(self, index: int, wire: ScoreItemIn) -> EncodedItem:
        prefix = f"items.{index}"
        decoded = [self.images.load(spec, param=f"{prefix}.images.{j}") for j, spec in enumerate(wire.images)]
        item = ScoreItem(
            response=wire.response,
            prompt=wire.prompt,
            messages=[m.model_dump() for m in wire.messages] if wire.messages is not None else None,
            images=[d.image for d in decoded],
            truncate=wire.truncate,
            image_hashes=[d.sha256 for d in decoded],
        )
        try:
            return self.engine.model.encode(item)
        except InvalidInput as exc:
            raise exc.with_prefix(prefix) from None
        except RMServeError:
            raise
        except (ValueError, TypeError) as exc:  # the tokenizer/processor rejecting this input
            raise InvalidInput(
                f"item could not be encoded: {exc}", param=prefix, code="invalid_item"
            ) from None


def _item_out(output: ScoreOutput, wanted: set[str]) -> ScoreItemOut:
    return ScoreItemOut(
        reward=output.reward,
        attributes=output.attributes if "attributes" in wanted else None,
        safety=output.safety if "safety" in wanted else None,
    )
