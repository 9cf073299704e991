"""Per-item dispatch: every admitted item goes straight to a model that schedules work itself.

    Engine.submit ──► ItemDispatch.dispatch(request) ──► model.submit_item(item) ──► Future per item
                                                          (vLLM's AsyncLLM: continuous batching,
                                                           prefix caching, by vLLM's scheduler)
    future done ──► isolation (error / non-finite -> that item's request fails) ──► request.item_done
    deadline watcher thread ──► request.fail(DeadlineExceeded) ──► its futures cancelled (vLLM aborts them)

For models whose backend batches across requests on its own (the vLLM backend): rmserve's batcher would
only add a wait and make requests arriving during a batch's compute wait for the next one, while the
backend's scheduler can add them to its very next step. What rmserve keeps: admission (``try_admit``, the
queue cap), deadlines (watched here; an expired item is aborted in the backend, not just ignored),
cancellation (a caller gone aborts its items) and failure isolation (each item is its own backend request,
so one item's error or non-finite score fails only the request it belongs to, as ``score_isolated`` does
for a single item).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import Future

from rmserve.engine.isolation import output_is_finite
from rmserve.engine.request import Request
from rmserve.engine.stats import EngineStats
from rmserve.errors import BackendError, DeadlineExceeded, NotReady, RMServeError
from rmserve.models.types import ItemScheduler

log = logging.getLogger(__name__)


class ItemDispatch:
    def __init__(self, model: ItemScheduler, stats: EngineStats):
        self.model = model
        self.stats = stats
        self._cv = threading.Condition()
        self._deadlines: list[tuple[float, int, Request]] = []  # heap: (deadline, tie-break, request)
        self._live: dict[int, Request] = {}  # id(request) -> request, dispatched and not finished
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._watch_deadlines, name="rmserve-deadlines", daemon=True)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Fail whatever is still running with NotReady (its backend requests are aborted)."""
        with self._cv:
            self._stopping = True
            leftovers = list(self._live.values())
            self._live.clear()
            self._deadlines.clear()
            self._cv.notify_all()
        for request in leftovers:
            request.fail(NotReady("the server is shutting down", code="shutting_down"))

    def dispatch(self, request: Request) -> None:
        """Hand every item of ``request`` to the model now. Thread-safe; never blocks on compute."""
        now = time.monotonic()
        if request.expired(now):  # e.g. a deadline spent in preprocessing: never costs compute
            self._expire(request)
            return
        futures: list[Future] = []
        # Set before submitting: a cancel arriving mid-way aborts what was already submitted.
        request.on_abandon = lambda: _cancel_all(futures)
        with self._cv:
            if self._stopping:
                raise NotReady("the engine is not running", code="not_ready")
            self._live[id(request)] = request
            if request.deadline is not None:
                heapq.heappush(self._deadlines, (request.deadline, next(self._seq), request))
                self._cv.notify_all()
        for index, item in enumerate(request.items):
            try:
                future = self.model.submit_item(item)
            except Exception as exc:  # the backend refused it at once (dead engine, bad input)
                self._item_failed(request, index, exc)
                break
            futures.append(future)
            future.add_done_callback(lambda f, i=index: self._item_finished(request, i, now, f))
        if request.finished:  # cancelled or failed while submitting: abort what went out
            _cancel_all(futures)

    # ── completions (the backend's thread) ─────────────────────────────────────────────────

    def _item_finished(self, request: Request, index: int, started: float, future: Future) -> None:
        if future.cancelled():  # abandoned: counted where it was abandoned (cancel, deadline, failure)
            self._forget_if_done(request)
            return
        error = future.exception()
        if error is not None:
            self._item_failed(request, index, error)
            return
        output = future.result()
        if not output_is_finite(output):
            error = BackendError(f"the model produced a non-finite score ({output.reward!r}) for this item",
                                 code="non_finite_score")
            self._item_failed(request, index, error)
            return
        seconds = time.monotonic() - started
        self.stats.record_item()  # before resolving: a caller seeing its result sees it counted
        request.item_done(index, output, batch_id=None, batch_s=seconds, queue_s=0.0)
        self._forget_if_done(request)

    def _item_failed(self, request: Request, index: int, error: BaseException) -> None:
        if not isinstance(error, RMServeError):
            log.warning("the model failed on an item: %s: %s", type(error).__name__, error)
            error = BackendError(f"the model failed on this item: {type(error).__name__}: {error}",
                                 code="forward_failed")
        self.stats.record_items(failed=1)
        request.fail(error.for_item(index))
        self._forget_if_done(request)

    def _forget_if_done(self, request: Request) -> None:
        if request.finished:
            with self._cv:
                if self._live.pop(id(request), None) is not None and request.cancelled:
                    self.stats.record_items(cancelled=len(request.items))

    def _expire(self, request: Request) -> None:
        if request.fail(DeadlineExceeded("the request's deadline passed before it was scored",
                                         code="deadline_exceeded")):
            self.stats.record_items(expired=len(request.items))

    # ── deadlines (own thread) ─────────────────────────────────────────────────────────────

    def _watch_deadlines(self) -> None:
        while True:
            due: list[Request] = []
            with self._cv:
                while not due:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    while self._deadlines and (self._deadlines[0][0] <= now or self._deadlines[0][2].finished):
                        _, _, request = heapq.heappop(self._deadlines)
                        if not request.finished:
                            due.append(request)
                    if not due:
                        self._cv.wait(self._deadlines[0][0] - now if self._deadlines else None)
            for request in due:
                self._expire(request)
                self._forget_if_done(request)


def _cancel_all(futures: list[Future]) -> None:
    for future in list(futures):
        future.cancel()


__all__ = ["ItemDispatch"]
