"""The scoring core every endpoint shares: items in, rewards out, across one model or an ensemble.

    validate (per endpoint) -> admit -> preprocess -> submit -> combine -> compose (per endpoint)

- admit: reserve queue room on every member's engine, or refuse at once with Overloaded;
- preprocess: one job per item in the preprocessing pool: decode its images (through the shared
  content-addressed cache), then encode it for each member model (each has its own tokenizer);
- submit: hand each member's encoded items to its engine (batched with other requests' items);
  if one member fails, the others' items are cancelled;
- combine: one reward per item (the ensemble's mean / weighted mean), attributes and safety from
  the first member with those heads;
- compose: the hybrid verifier reward and the safety policy on top (``compose_reward``).

A ``Job`` carries a ``where`` function that maps an error's item-relative location (``("response",)``,
``("images", 0)``) to the caller's request (``("items", 3, "response")``, ``("response_b",)``), so
every endpoint reports errors in its own terms. Locations stay tuples all the way (rmserve/errors.py):
the engine marks which item of a submission failed (``error.item``) and ``submit`` relocates the
error with that item's job, with no string in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rmserve.api.conversation import ItemBudget, load_conversation
from rmserve.api.images import DecodedImage, ImageLoader
from rmserve.api.models import Member, ModelSet, Selection
from rmserve.api.videos import VideoLimits, VideoLoader
from rmserve.engine import EngineResult
from rmserve.errors import DeadlineExceeded, InvalidInput, Loc, RMServeError
from rmserve.models.types import EncodedItem, ScoreItem, ScoreOutput
from rmserve.rewards import hybrid_reward, verify
from rmserve.safety import SafetyDecision, SafetyPolicy

Where = Callable[[Loc], Loc]


def under(*prefix: str | int) -> Where:
    """``under("items", 3)(("response",))`` -> ``("items", 3, "response")``; ``(())`` -> ``("items", 3)``."""
    return lambda loc: (*prefix, *loc)


def here(loc: Loc) -> Loc:
    """The identity ``Where``: the item's fields are the request's own (one conversation per request)."""
    return loc


@dataclass
class Job:
    """One item to score, not yet tied to a model."""

    response: str
    where: Where
    prompt: str | None = None
    messages: list[dict] | None = None
    image_specs: Sequence = ()  # wire images, decoded in the pool; errors at where(("images", j))
    images: list[DecodedImage] | None = None  # or images decoded already (shared by several jobs)
    truncate: bool = False
    rendered: bool = False  # ``prompt`` is already templated text (compat endpoints): encode_rendered


def jobs_from_items(items: Sequence, prefix: str = "items") -> list[Job]:
    """Jobs for wire score items (``/v1/score``, ``/v1/safety``); errors point at ``<prefix>.<i>.<field>``."""
    return [
        Job(
            response=item.response,
            where=under(prefix, i),
            prompt=item.prompt,
            messages=[m.model_dump() for m in item.messages] if item.messages is not None else None,
            image_specs=item.images,
            truncate=item.truncate,
        )
        for i, item in enumerate(items)
    ]


@dataclass
class Scored:
    outputs: list[ScoreOutput]  # reward = the selection's combined reward
    model_rewards: list[dict[str, float]] | None  # per item, each member's reward (ensembles only)
    num_tokens: int
    preprocess_s: float
    queue_s: float
    inference_s: float
    total_s: float = 0.0


@dataclass
class Composed:
    reward: float
    raw_reward: float
    verified: bool | None = None
    decision: SafetyDecision | None = None
    changed_by: list[str] = field(default_factory=list)  # "verifier", "safety"


def compose_reward(
    raw: float,
    *,
    response: str = "",
    verifier: tuple[str, float] | None = None,
    ground_truth: str | None = None,
    safety: dict[str, float] | None = None,
    policy: SafetyPolicy | None = None,
) -> Composed:
    """raw model reward -> hybrid verifier reward (if a verifier is given) -> safety policy (if given)."""
    out = Composed(reward=raw, raw_reward=raw)
    if verifier is not None:
        name, tolerance = verifier
        out.verified = verify(name, response, ground_truth, tolerance=tolerance) if ground_truth is not None else None
        out.reward = hybrid_reward(raw, out.verified)
        out.changed_by.append("verifier")
    if policy is not None and safety is not None:
        out.decision = policy.decide(safety)
        out.reward = out.decision.apply(out.reward)
        out.changed_by.append("safety")
    return out


class Scorer:
    def __init__(self, models: ModelSet, images: ImageLoader, videos: VideoLoader | None = None,
                 budget: ItemBudget | None = None):
        self.models = models
        self.images = images
        self.videos = videos or VideoLoader(VideoLimits())
        self.budget = budget or ItemBudget()

    async def run(
        self, selection: Selection, jobs: list[Job], *, deadline: float | None = None, shared_images: Sequence = ()
    ) -> Scored:
        """Score ``jobs`` with ``selection``. ``shared_images``: wire images of a conversation all jobs share
        (decoded once, after admission; errors at ``images.<j>``)."""
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            permits = [stack.enter_context(m.engine.try_admit(len(jobs))) for m in selection.members]
            if shared_images:
                decoded = await self.load_images(shared_images, here)
                for job in jobs:
                    job.images = decoded
            encoded = await self.preprocess(selection, jobs)
            preprocessed = time.monotonic()
            if deadline is not None and preprocessed >= deadline:
                raise DeadlineExceeded("the request's deadline passed during preprocessing", code="deadline_exceeded")
            results = await self.submit(selection, permits, encoded, jobs, deadline=deadline)
        scored = combine(selection, results)
        scored.preprocess_s = preprocessed - start
        scored.total_s = time.monotonic() - start
        return scored

    async def load_images(self, specs: Sequence, where: Where) -> list[DecodedImage]:
        """Decode wire images in the pool (for images shared by several jobs)."""
        return await self.models.primary.run_in_pool(self._load, specs, where)

    def _load(self, specs: Sequence, where: Where) -> list[DecodedImage]:
        return [self.images.load(spec, param=where(("images", j))) for j, spec in enumerate(specs)]

    async def preprocess(self, selection: Selection, jobs: list[Job]) -> list[list[EncodedItem]]:
        """Per member, the encoded items in job order."""
        pool = self.models.primary
        results = await asyncio.gather(
            *(pool.run_in_pool(self._prepare, job, selection.members) for job in jobs), return_exceptions=True
        )
        for outcome in results:  # the first failing item by position, whatever order the pool finished in
            if isinstance(outcome, BaseException):
                raise outcome
        return [[per_job[k] for per_job in results] for k in range(len(selection.members))]  # type: ignore[index]

    def load_item(self, job: Job) -> ScoreItem:
        """The job's conversation with its images and videos decoded, within the item's budgets (pool thread)."""
        decoded = job.images if job.images is not None else self._load(job.image_specs, job.where)
        conversation = load_conversation(job.messages, decoded, self.images, self.videos, self.budget, job.where)
        return ScoreItem(
            response=job.response,
            prompt=job.prompt,
            messages=conversation.messages,
            images=[d.image for d in conversation.images],
            truncate=job.truncate,
            image_hashes=[d.sha256 for d in conversation.images],
            videos=conversation.videos,
        )

    def _prepare(self, job: Job, members: Sequence[Member]) -> list[EncodedItem]:
        item = self.load_item(job)
        out = []
        for member in members:
            suffix = f" (model {member.name!r})" if len(members) > 1 else ""
            model = member.model
            try:
                if job.rendered:
                    out.append(model.encode_rendered(item.prompt, item.response, images=item.images,
                                                     truncate=item.truncate, image_hashes=item.image_hashes))
                else:
                    out.append(model.encode(item))
            except InvalidInput as exc:
                loc = exc.loc if exc.loc == ("model",) else job.where(exc.loc)
                raise InvalidInput(exc.message + suffix, param=loc, code=exc.code) from None
            except RMServeError:
                raise
            except (ValueError, TypeError) as exc:  # the tokenizer/processor rejecting this input
                raise InvalidInput(
                    f"item could not be encoded{suffix}: {exc}", param=job.where(()), code="invalid_item"
                ) from None
            except StopIteration as exc:  # cannot cross into an asyncio future: the request would hang forever
                raise RuntimeError(f"encoding raised StopIteration{suffix}: {exc}") from None
        return out

    async def submit(
        self, selection: Selection, permits, encoded: list[list[EncodedItem]], jobs: list[Job], *, deadline
    ) -> list[EngineResult]:
        tasks = [
            asyncio.ensure_future(m.engine.score(permit, items, deadline=deadline))
            for m, permit, items in zip(selection.members, permits, encoded, strict=True)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None), None)
        if failed is not None:
            for task in tasks:
                task.cancel()
            exc = failed.exception()
            raise _relocate(exc, jobs) if isinstance(exc, RMServeError) else exc
        return [t.result() for t in tasks]


def _relocate(error: RMServeError, jobs: list[Job]) -> RMServeError:
    """An engine error on item ``k`` of the submission, at that item's place in the caller's request."""
    if error.item is None or error.item >= len(jobs):
        return error
    return error.relocated(jobs[error.item].where(error.loc))


def combine(selection: Selection, results: list[EngineResult]) -> Scored:
    n = len(results[0].outputs)
    outputs, per_model = [], []
    for i in range(n):
        member_outputs = [r.outputs[i] for r in results]
        rewards = [o.reward for o in member_outputs]
        outputs.append(
            ScoreOutput(
                reward=selection.combine(rewards),
                attributes=next((o.attributes for o in member_outputs if o.attributes is not None), None),
                safety=next((o.safety for o in member_outputs if o.safety is not None), None),
            )
        )
        per_model.append({m.name: r for m, r in zip(selection.members, rewards, strict=True)})
    return Scored(
        outputs=outputs,
        model_rewards=per_model if selection.is_ensemble else None,
        num_tokens=sum(r.num_tokens for r in results),
        preprocess_s=0.0,
        queue_s=max(r.queue_s for r in results),
        inference_s=max(r.inference_s for r in results),
    )


__all__ = ["Composed", "Job", "Scored", "Scorer", "Where", "compose_reward", "here", "under"]
