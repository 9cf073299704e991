"""The one serving pipeline every scoring endpoint runs (in the style of vLLM's ``OpenAIServing``):

    select(request)                          -> Selection      which model(s): default ``ctx.models.resolve``
    validate(request, selection)                               limits the wire types cannot know
    jobs(request, selection)                 -> [Job]          one per item, each knowing where its errors go
    shared_images(request)                   -> wire images    decoded once for all jobs (one conversation)
    ctx.scorer.run(selection, jobs, ...)     -> Scored         admit, preprocess, batch, combine (api/scoring.py)
    build(request, selection, scored)        -> the response   compose rewards (ctx.compose), usage (ctx.usage)

A family subclasses ``ScoringEndpoint`` and fills in ``jobs`` and ``build`` (and ``validate``/``select``
where it has rules of its own); it sees only the ``ServingContext``. ``ScoreService`` (api/service.py)
holds one instance per endpoint, so a transport calls ``service.compare(request, deadline=...)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from rmserve.api.context import ServingContext
from rmserve.api.models import Selection
from rmserve.api.scoring import Job, Scored

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class ScoringEndpoint(ABC, Generic[RequestT, ResponseT]):
    def __init__(self, ctx: ServingContext):
        self.ctx = ctx

    async def __call__(self, request: RequestT, *, deadline: float | None = None) -> ResponseT:
        """``deadline``: a ``time.monotonic()`` value (None: none). Errors are ``RMServeError``s whose
        ``param`` is the dotted path of the offending field in ``request``."""
        selection = self.select(request)
        self.validate(request, selection)
        jobs = self.jobs(request, selection)
        shared = self.shared_images(request)
        scored = await self.ctx.scorer.run(selection, jobs, deadline=deadline, shared_images=shared)
        return self.build(request, selection, scored)

    def select(self, request: RequestT) -> Selection:
        """The model the request names (``model``), else the default; families without one override this."""
        return self.ctx.models.resolve(request.model)  # type: ignore[attr-defined]

    def validate(self, request: RequestT, selection: Selection) -> None:  # noqa: B027  (optional step)
        """Check what the wire types cannot know (item and image limits, model capabilities)."""

    @abstractmethod
    def jobs(self, request: RequestT, selection: Selection) -> list[Job]: ...

    def shared_images(self, request: RequestT) -> Sequence[Any]:
        return ()

    @abstractmethod
    def build(self, request: RequestT, selection: Selection, scored: Scored) -> ResponseT: ...


__all__ = ["ScoringEndpoint"]
