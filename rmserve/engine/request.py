"""What the engine tracks per submission: admission permits, requests and their queued items.

A request of N items becomes N queue entries that may land in different batches; the request
resolves (exactly once) when its last item is done, or as soon as one item fails, its deadline
passes or its caller goes away. These objects are touched by the event loop (submit, cancel),
the batcher thread (expiry) and the worker thread (results), hence the per-request lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from rmserve.context import request_id_var
from rmserve.models.types import EncodedItem, ScoreOutput


@dataclass
class EngineResult:
    """The outputs of one request, in item order, plus where its time went."""

    outputs: list[ScoreOutput]
    num_tokens: int
    queue_s: float  # the longest any of its items waited for a batch
    inference_s: float  # wall time of the forward passes its items were part of (summed over batches)


DoneCallback = Callable[[EngineResult | None, BaseException | None], None]


class Permit:
    """Admission for ``n`` items; released once: when the request ends, or if it is never submitted.

    ``submitted`` is set when the items reach the engine's queue: until then they are still being
    preprocessed, i.e. work on its way that a waiting batch may expect to join it."""

    def __init__(self, n: int, release: Callable[[Permit], None]):
        self.n = n
        self.submitted = False
        self._release = release
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._release(self)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


class Request:
    def __init__(
        self, items: list[EncodedItem], *, deadline: float | None, permit: Permit, on_done: DoneCallback
    ):
        self.items = items
        self.deadline = deadline  # time.monotonic() seconds, or None
        self.permit = permit
        self._on_done = on_done
        self._lock = threading.Lock()
        self._outputs: list[ScoreOutput | None] = [None] * len(items)
        self._remaining = len(items)
        self._batches: set[int] = set()
        self._queue_s = 0.0
        self._inference_s = 0.0
        self.finished = False  # read without the lock as a hint; decisions re-check under it
        self.cancelled = False
        self.request_id = request_id_var.get()  # for the worker's log lines about this request's batch
        # Set by per-item dispatch (engine/dispatch.py): aborts the items still running in the model when
        # the request ends early (cancelled, failed, expired), so they stop costing compute.
        self.on_abandon: Callable[[], None] | None = None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def item_done(
        self, index: int, output: ScoreOutput, *, batch_id: int | None, batch_s: float, queue_s: float
    ) -> None:
        """``batch_id`` None: the item ran on its own (per-item dispatch), concurrently with its siblings, so
        the request's inference time is the longest of its items', not their sum."""
        with self._lock:
            if self.finished:
                return
            self._outputs[index] = output
            self._remaining -= 1
            self._queue_s = max(self._queue_s, queue_s)
            if batch_id is None:
                self._inference_s = max(self._inference_s, batch_s)
            elif batch_id not in self._batches:
                self._batches.add(batch_id)
                self._inference_s += batch_s
            if self._remaining:
                return
            self.finished = True
            result = EngineResult(
                outputs=list(self._outputs),  # type: ignore[arg-type]  # all set once remaining == 0
                num_tokens=sum(item.num_tokens for item in self.items),
                queue_s=self._queue_s,
                inference_s=self._inference_s,
            )
        self._finish(result, None)

    def fail(self, error: BaseException) -> bool:
        """End the request with ``error``; False if it had already ended."""
        with self._lock:
            if self.finished:
                return False
            self.finished = True
        self._finish(None, error)
        self._abandon()
        return True

    def cancel(self) -> bool:
        """The caller went away: stop caring about results; queued items are dropped before compute."""
        with self._lock:
            if self.finished:
                return False
            self.finished = self.cancelled = True
        self.permit.release()
        self._abandon()
        return True

    def _abandon(self) -> None:
        if self.on_abandon is not None:
            self.on_abandon()

    def _finish(self, result: EngineResult | None, error: BaseException | None) -> None:
        self.permit.release()
        self._on_done(result, error)


@dataclass(slots=True)
class Entry:
    """One item of a request, waiting in the queue or riding in a batch."""

    request: Request
    index: int
    item: EncodedItem
    enqueued_at: float
    # Hash of the shareable prefix (prompt ids + image keys); None if the item cannot share one.
    group: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        key = self.item.prefix_key
        self.group = None if key is None else hash(key)

    @property
    def num_tokens(self) -> int:
        return self.item.num_tokens


async def settled(submit: Callable[[DoneCallback], Request]) -> EngineResult:
    """``submit(on_done)`` a request and await its result; cancelling the awaiting task cancels the request."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[EngineResult] = loop.create_future()

    def on_done(result: EngineResult | None, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    request = submit(on_done)
    try:
        return await future
    except asyncio.CancelledError:
        request.cancel()
        raise


def _settle(future: asyncio.Future, result: EngineResult | None, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
