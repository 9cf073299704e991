"""Judge generation batched across requests: what the engine's worker does with pending judgments.

A generative judge's requests are usually one item each (an RL trainer scores one rollout per call), so a
request alone makes a batch of one generation. The engine queues each request's judgments (``Engine.judge``)
like score items and the worker takes them in shared batches:

    Engine.judge(permit, prompts) -> one JudgeJob entry per prompt in the judge queue
    worker: take_judge_batch (the oldest entry's decoding; length-sorted, max_batch_size, padded-token budget;
            waits up to max_wait_ms for company while company is on its way, never while generating)
         -> run_judge_batch: one ``generate_judgments`` call; a batch that raises is bisected so only the
            failing judgment fails (``generate_isolated``); each entry's request gets its Judgment or its error

A batch that has started generating stops early once nobody waits for it: ``Abandonment`` (a plain callable,
no torch here) is handed to ``generate_judgments``, which polls it between decode steps; it fires once every
request in the batch has ended (cancelled: the client left; failed) or passed its deadline. It never fires
while one request is live, so a live row's judgment is exactly what it would have been. A batch cut short
delivers nothing: its expired requests fail with ``deadline_exceeded``, the cancelled ones are gone already.

While a batch generates, new requests' judgments pile up and go together in the next one. Per-entry outcomes
include errors (the API layer places them on their item); only an expired deadline or shutdown fails a
whole request. Batches and judgments count in the engine's stats like scoring batches and items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rmserve.engine.batching import padded_tokens, select_batch
from rmserve.engine.request import Entry, Request
from rmserve.engine.stats import EngineStats
from rmserve.errors import BackendError, RMServeError
from rmserve.models.types import JudgeDecoding, JudgePrompt, Judgment

log = logging.getLogger(__name__)

GenerateFn = Callable[..., list[Judgment]]  # ServedModel.generate_judgments(prompts, decoding, abandoned=...)


@dataclass(frozen=True)
class JudgeJob:
    """One judgment waiting in the engine's judge queue (the ``item`` of its queue ``Entry``)."""

    prompt: JudgePrompt
    decoding: JudgeDecoding
    prefix_key = None  # judge batches do not share prefixes (Entry reads this)

    @property
    def num_tokens(self) -> int:
        """Padded slots this judgment occupies in a generate batch: its prompt plus the tokens it may write."""
        return len(self.prompt.prompt_ids) + (self.decoding.max_new_tokens if self.decoding.reasoning else 1)


def take_judge_batch(pending: list[Entry], *, max_batch_size: int, max_batch_tokens: int) -> list[int]:
    """Indices into ``pending`` (arrival order) of the next batch: entries with the oldest's decoding, the
    oldest always included, chosen by ``select_batch`` (length-sorted, least padding, within the limits)."""
    decoding = pending[0].item.decoding
    same = [i for i, e in enumerate(pending) if e.item.decoding == decoding]
    idx, _ = select_batch([pending[i].num_tokens for i in same], max_batch_size=max_batch_size,
                          max_batch_tokens=max_batch_tokens)
    return [same[i] for i in idx]


class Abandonment:
    """Whether a judge batch is still wanted: called between decode steps (worker thread), True once every
    request with a judgment in the batch has ended or passed its deadline. Sticky: once it has fired the
    generation may have been cut short, so ``fired`` tells the engine not to deliver the batch's judgments."""

    def __init__(self, batch: Sequence[Entry]):
        self.requests = list({id(e.request): e.request for e in batch}.values())  # each once, in batch order
        self.fired = False

    def __call__(self) -> bool:
        if not self.fired:
            now = time.monotonic()
            # ``finished`` before the batch delivers means cancelled or failed (its own items are not done yet)
            self.fired = all(r.finished or r.expired(now) for r in self.requests)
        return self.fired


def generate_isolated(generate: GenerateFn, prompts: Sequence[JudgePrompt], decoding: JudgeDecoding,
                      abandoned: Callable[[], bool] | None = None) -> list[Judgment | RMServeError]:
    """Each prompt's judgment, or the error for that prompt alone: a failing batch is bisected (unless nobody
    waits for it any more: ``abandoned``)."""
    if not prompts:
        return []
    try:
        out = generate(list(prompts), decoding, abandoned=abandoned)
        if len(out) != len(prompts):
            raise RuntimeError(f"generate_judgments returned {len(out)} judgments for {len(prompts)} prompts")
        return list(out)
    except RMServeError as exc:
        if len(prompts) == 1:
            return [exc]
    except Exception as exc:  # a backend failure: find the prompt to blame
        if len(prompts) == 1:
            log.warning("judge generation failed for a single prompt: %s: %s", type(exc).__name__, exc)
            return [BackendError(f"the judge failed on this item: {type(exc).__name__}: {exc}",
                                 code="forward_failed")]
    if abandoned is not None and abandoned():  # nobody will read the halves' judgments
        return [BackendError("the judge batch was abandoned", code="abandoned")] * len(prompts)
    log.info("judge generation failed for a batch of %d; bisecting", len(prompts))
    mid = len(prompts) // 2
    return (generate_isolated(generate, prompts[:mid], decoding, abandoned)
            + generate_isolated(generate, prompts[mid:], decoding, abandoned))


def run_judge_batch(generate: GenerateFn, batch: list[Entry], stats: EngineStats, batch_id: int,
                    expire: Callable[[list[Request]], None]) -> None:
    """On the worker thread: generate ``batch``'s judgments together and hand each to its request; a batch
    abandoned on the way (see ``Abandonment``) hands its expired requests to ``expire`` instead."""
    start = time.monotonic()
    abandoned = Abandonment(batch)
    outcomes = generate_isolated(generate, [e.item.prompt for e in batch], batch[0].item.decoding, abandoned)
    seconds = time.monotonic() - start
    waits = [start - e.enqueued_at for e in batch]
    stats.record_batch(size=len(batch), padded_tokens=padded_tokens([e.num_tokens for e in batch]),
                       seconds=seconds, queue_waits=waits)
    if abandoned.fired:  # judgments possibly cut short: none is delivered (every request has ended or expired)
        log.info("judge batch %d abandoned after %.3fs: every request in it ended or expired", batch_id, seconds)
        stats.record_items(cancelled=sum(e.request.cancelled for e in batch))
        expire([r for r in abandoned.requests if not r.finished])
        return
    failed = sum(isinstance(o, RMServeError) for o in outcomes)
    stats.record_items(scored=len(batch) - failed, failed=failed)  # counted before callers can see results
    for entry, outcome, wait in zip(batch, outcomes, waits, strict=True):
        entry.request.item_done(entry.index, outcome, batch_id=batch_id, batch_s=seconds, queue_s=wait)


__all__ = ["Abandonment", "JudgeJob", "generate_isolated", "run_judge_batch", "take_judge_batch"]
