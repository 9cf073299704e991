"""The one serving pipeline every scoring endpoint runs (in the style of vLLM's ``OpenAIServing``):

    select(request)                          -> Selection      which model(s): default ``ctx.models.resolve``
    validate(request, selection)                               limits the wire types cannot know
    [a generative judge: judge(request, ...) instead of what follows (api/judge.py)]
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
from rmserve.api.judge import JudgeSetup, judge_setup, not_a_judge
from rmserve.api.models import Selection
from rmserve.api.protocol import VotingSpec
from rmserve.api.scoring import Job, Scored
from rmserve.errors import InvalidInput

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
        judge = judge_setup(selection)
        if judge is not None:  # a generative judge: its reward comes from generated judgments (api/judge.py)
            return await self.judge(request, selection, judge, deadline=deadline)
        not_a_judge(selection, *self.judge_options(request))
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

    def judge_options(self, request: RequestT) -> tuple[VotingSpec | None, bool]:
        """The request's ``voting`` and ``return_judgment`` (endpoints that serve judges have them)."""
        return None, False

    async def judge(self, request: RequestT, selection: Selection, judge: JudgeSetup, *,
                    deadline: float | None) -> ResponseT:
        """The judge path (score, compare, rank); any other endpoint refuses a generative judge."""
        raise InvalidInput(f"model {selection.name!r} is a generative judge: it serves /v1/score, /v1/compare and "
                           "/v1/rank, not this endpoint", param="model", code="judge_model")


__all__ = ["ScoringEndpoint"]
