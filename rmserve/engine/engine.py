"""The engine: bounded admission, a dynamic batcher across requests, and one model worker.

    try_admit(n) ──► Permit            (refuses with Overloaded when the queue is full; never waits)
    run_in_pool(fn)                    (preprocessing: image decode + model.encode, off the event loop)
    score(permit, items, deadline) ──► pending queue ──► batcher thread ──► ready slot ──► worker thread
                                                          (select_batch)     (1 batch)       (score_isolated)
    futures resolved with loop.call_soon_threadsafe ◄───────────────────────────────────────────┘
    run_exclusive(fn) ──► Future       (any other model work, e.g. critique generation, run by the
                                        worker between batches: the model is never used by two threads)
    judge(permit, prompts) ──► judge queue ──► worker thread (a generate batch shared across requests,
                                               engine/judging.py)

Two threads share one condition variable:
- the batcher closes a batch when it is full (``max_batch_size`` or the padded-token budget),
  or when the worker is idle and the oldest waiting item has waited ``max_wait_ms``. While the
  worker computes, the batcher keeps accumulating and hands over the next batch the moment it
  is full or the worker frees up (prefetch: selection never sits on the worker's critical path);
- the worker owns the model (``score_batch`` is not thread-safe) and runs one batch at a time.
  Exclusive jobs (``run_exclusive``) go before the next batch: they are rare (generation) and
  would otherwise starve while the batcher always has a batch ready under load.
Expired and cancelled items are dropped by both, so they never cost compute.

Per-item dispatch (``EngineConfig.dispatch``; engine/dispatch.py) replaces the batcher for models that
batch across requests themselves (the vLLM backend): ``submit`` hands each item to ``model.submit_item``
at once, and a deadline watcher takes the batcher thread's place. The worker stays for ``run_exclusive``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from rmserve.context import request_id_var
from rmserve.engine.base import EngineConfig, EngineHealth, ScoringModel, schedules_items
from rmserve.engine.batching import padded_tokens, select_batch, select_grouped_batch
from rmserve.engine.dispatch import ItemDispatch
from rmserve.engine.isolation import score_isolated
from rmserve.engine.judging import JudgeJob, run_judge_batch, take_judge_batch
from rmserve.engine.request import DoneCallback, EngineResult, Entry, Permit, Request, settled
from rmserve.engine.stats import EngineStats, StatsSnapshot
from rmserve.errors import BackendError, DeadlineExceeded, InvalidInput, NotReady, Overloaded, RMServeError
from rmserve.models.types import EncodedItem, JudgeDecoding, JudgePrompt

log = logging.getLogger(__name__)
T = TypeVar("T")


class Engine:
    def __init__(self, model: ScoringModel, config: EngineConfig | None = None, *,
                 preprocess_thread_setup: Callable[[], Any] | None = None):
        self.model = model
        self.config = config or EngineConfig()
        # Run once in each preprocessing thread (the server passes host_threads.single_threaded_torch_here).
        self._preprocess_thread_setup = preprocess_thread_setup
        self.stats = EngineStats()
        self._cv = threading.Condition()
        self._pending: list[Entry] = []  # arrival order
        self._ready: list[Entry] | None = None  # the batch handed to the worker next
        self._judges: list[Entry] = []  # judgments waiting for a generate batch (engine/judging.py), arrival order
        self._exclusive: deque[tuple[Future, Callable[[], Any]]] = deque()  # run_exclusive jobs, FIFO
        self._worker_busy = False
        self._in_flight = 0  # admitted items not yet released
        self._preparing = 0  # admitted items not yet submitted (in preprocessing): a batch's possible company
        self._live_requests = 0  # submitted requests not yet finished
        # The server's count of requests in progress (HTTP + gRPC, from their first byte), when it has
        # one: more of them than this engine holds means requests still being parsed, i.e. company.
        self.requests_in_progress: Callable[[], int] | None = None
        self._accepting = False
        self._draining = False
        self._stop_now = False
        self._batch_seq = 0
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._max_wait_s = self.config.max_wait_ms / 1000.0
        per_item = self.config.dispatch == "per_item" or (self.config.dispatch == "auto" and schedules_items(model))
        if per_item and not schedules_items(model):
            raise ValueError("dispatch per_item needs a model that schedules items itself (submit_item: the vllm "
                             "backend); this one is scored in rmserve's batches (dispatch batch or auto)")
        self._dispatch = ItemDispatch(model, self.stats) if per_item else None  # type: ignore[arg-type]

    @property
    def per_item(self) -> bool:
        """True when items go straight to the model's own scheduler (no rmserve batches)."""
        return self._dispatch is not None

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────

    def start(self, *, warmup: bool = True) -> None:
        """Start the worker, let it warm the model up (this call blocks until it has), then accept work.

        The warm-up runs on the worker thread, the one that runs every forward afterwards: a thread that
        has run torch's parallel regions keeps an OpenMP team alive as long as it lives, and with more
        OpenMP threads alive than cores libgomp stops spinning between regions, so the forward's threads
        sleep and wake on every op (bench/README.md, "One OpenMP team"); glibc also gives each thread its
        own malloc arena, and the warm-up should grow the worker's, not a passing thread's."""
        if self._threads:
            raise RuntimeError("engine already started")
        warm = threading.Event()
        failure: list[BaseException] = []

        def worker() -> None:
            try:
                if warmup:
                    self.model.warmup()
            except BaseException as exc:  # handed to start()'s caller below
                failure.append(exc)
                return
            finally:
                warm.set()
            self._worker_loop()

        thread = threading.Thread(target=worker, name="rmserve-worker", daemon=True)
        thread.start()
        warm.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._pool = ThreadPoolExecutor(self.config.preprocess_workers, thread_name_prefix="rmserve-pre",
                                        initializer=self._setup_preprocess_thread)
        self._threads = [thread]
        if self._dispatch is not None:
            self._threads.append(self._dispatch.thread)
        else:
            self._threads.append(threading.Thread(target=self._batcher_loop, name="rmserve-batcher", daemon=True))
        for thread in self._threads[1:]:
            thread.start()
        with self._cv:
            self._accepting = True

    def _setup_preprocess_thread(self) -> None:
        if self._preprocess_thread_setup is None:
            return
        try:
            self._preprocess_thread_setup()
        except Exception:  # an initializer that raises would break the pool: every request would fail
            log.exception("preprocessing thread setup failed; the thread runs without it")

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop admitting; with ``drain``, finish admitted work first (up to ``timeout``); then stop threads.

        Whatever is still queued afterwards fails with ``NotReady``.
        """
        timeout = self.config.drain_timeout_s if timeout is None else timeout
        with self._cv:
            self._accepting = False
            self._draining = True  # batches close at once: nobody new will join them
            self._cv.notify_all()
            if drain:
                end = time.monotonic() + timeout
                while (self._in_flight > 0 or self._pending or self._ready or self._worker_busy or self._exclusive
                       or self._judges):
                    left = end - time.monotonic()
                    if left <= 0:
                        log.warning("drain timed out with %d items in flight", self._in_flight)
                        break
                    self._cv.wait(left)
            self._stop_now = True
            leftovers = [entry.request for entry in self._pending + (self._ready or []) + self._judges]
            jobs = list(self._exclusive)
            self._pending, self._ready, self._judges = [], None, []
            self._exclusive.clear()
            self._cv.notify_all()
        for request in dict.fromkeys(leftovers):
            request.fail(NotReady("the server is shutting down", code="shutting_down"))
        if self._dispatch is not None:
            self._dispatch.stop()
        for future, _ in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(NotReady("the server is shutting down", code="shutting_down"))
        for thread in self._threads:
            thread.join(timeout=max(timeout, 1.0))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def health(self) -> EngineHealth:
        alive = all(t.is_alive() for t in self._threads)
        with self._cv:
            stopped = self._stop_now
            healthy = alive or stopped  # threads exit on purpose after stop()
            detail = "" if healthy else "an engine thread died; see the logs"
            accepting = self._accepting and alive
            return EngineHealth(healthy, accepting, self._queue_depth(), self._in_flight, detail)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def snapshot(self) -> StatsSnapshot:
        with self._cv:
            depth, in_flight = self._queue_depth(), self._in_flight
        return self.stats.snapshot(queue_depth=depth, in_flight=in_flight)

    # ── admission ──────────────────────────────────────────────────────────────────────────

    def try_admit(self, n_items: int) -> Permit:
        """Reserve queue room for ``n_items`` or refuse at once (never an unbounded wait)."""
        if n_items < 1:
            raise ValueError("n_items must be >= 1")
        cap = self.config.max_queue_items
        if n_items > cap:
            raise InvalidInput(
                f"{n_items} items can never fit this server's queue of {cap} items; split the request",
                param="items",
                code="too_many_items",
            )
        with self._cv:
            if not self._accepting:
                raise NotReady("the engine is not accepting work (warming up or draining)", code="not_ready")
            if self._in_flight + n_items > cap:
                raise Overloaded(
                    f"queue full ({self._in_flight}/{cap} items in flight); retry later",
                    retry_after_s=self._retry_after_locked(),
                    code="queue_full",
                )
            self._in_flight += n_items
            self._preparing += n_items
        return Permit(n_items, self._release)

    def _release(self, permit: Permit) -> None:
        with self._cv:
            self._in_flight -= permit.n
            if permit.submitted:
                self._live_requests -= 1
            else:  # preprocessing failed or was cancelled: no longer on its way
                self._preparing -= permit.n
                self._wake_batcher_locked()
            if self._draining:  # only stop() waits for in-flight work to end; nobody else needs a wake-up
                self._cv.notify_all()

    def _wake_batcher_locked(self) -> None:
        """Wake the batcher when it could act: only with the ready slot free (else the worker's next
        take wakes it). One wake per item arriving would re-plan the whole queue each time. The cost:
        an item arriving while a batch is ready has its deadline watched from the worker's next take,
        at most one forward later (the worker drops expired items before compute either way)."""
        if self._ready is None:
            self._cv.notify_all()

    def _retry_after_locked(self) -> float:
        # Time to work off what is in flight at the recent throughput, clamped to a sane range.
        rate = self.stats.items_per_s
        return min(30.0, max(1.0, self._in_flight / rate)) if rate > 0 else 1.0

    # ── preprocessing ──────────────────────────────────────────────────────────────────────

    async def run_in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (image decode, tokenization) in the preprocessing pool, off the event loop."""
        if self._pool is None:
            raise NotReady("the engine is not started", code="not_ready")
        # The caller's context (its request id for log lines) goes with the job into the pool thread.
        job = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, job)

    # ── exclusive model work ───────────────────────────────────────────────────────────────

    def run_exclusive(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on the worker thread, between batches, and return its future.

        For model work other than scoring (critique generation, pooled hidden states): the model
        is not thread-safe and the worker is the only thread that touches it. Thread-safe and
        non-blocking; ``await asyncio.wrap_future(f)`` from a coroutine. Cancelling the future
        before the job starts drops it; a started job runs to completion (give ``fn`` its own way
        to stop early, e.g. a generation streamer that raises). Takes no admission permit: callers
        hold one (``try_admit``) for as long as their job matters to them.
        """
        future: Future[T] = Future()
        with self._cv:
            if self._stop_now or not self._threads:
                raise NotReady("the engine is not running", code="not_ready")
            self._exclusive.append((future, functools.partial(fn, *args, **kwargs)))
            self._cv.notify_all()
        return future

    def _run_exclusive_job(self, future: Future, job: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():  # cancelled while queued
            return
        try:
            result = job()
        except BaseException as exc:  # the caller gets it; the worker carries on
            future.set_exception(exc)
        else:
            future.set_result(result)

    # ── scoring ────────────────────────────────────────────────────────────────────────────

    def submit(
        self,
        permit: Permit,
        items: list[EncodedItem],
        *,
        deadline: float | None = None,
        on_done: DoneCallback,
    ) -> Request:
        """Queue an admitted request; ``on_done(result, error)`` is called once, from some engine thread.

        ``deadline`` is a ``time.monotonic()`` value. Thread-safe and non-blocking.
        """
        if len(items) != permit.n:
            raise ValueError(f"permit is for {permit.n} items, got {len(items)}")
        budget = self.config.max_batch_tokens
        for i, item in enumerate(items):
            if item.num_tokens > budget:
                raise InvalidInput(
                    f"item has {item.num_tokens} tokens, more than max_batch_tokens={budget}",
                    item=i,
                    code="too_long",
                )
        request = Request(items, deadline=deadline, permit=permit, on_done=on_done)
        now = time.monotonic()
        with self._cv:
            if self._stop_now or not self._threads:
                raise NotReady("the engine is not running", code="not_ready")
            if self._dispatch is None:
                self._pending.extend(Entry(request, i, item, now) for i, item in enumerate(items))
            self._preparing -= permit.n
            self._live_requests += 1
            permit.submitted = True
            self._wake_batcher_locked()
        if self._dispatch is not None:
            self._dispatch.dispatch(request)
        return request

    async def score(
        self, permit: Permit, items: list[EncodedItem], *, deadline: float | None = None
    ) -> EngineResult:
        """Submit and await; if the awaiting task is cancelled, the request's items are dropped."""
        return await settled(lambda on_done: self.submit(permit, items, deadline=deadline, on_done=on_done))

    async def judge(
        self, permit: Permit, prompts: list[JudgePrompt], decoding: JudgeDecoding, *, deadline: float | None = None
    ) -> EngineResult:
        """Generate an admitted request's judgments in batches shared with other requests' (engine/judging.py).

        ``outputs`` holds, per prompt, its ``Judgment`` or the ``RMServeError`` for that prompt alone; the request
        itself fails only when its deadline passes or the engine stops. Cancelling the awaiting task drops
        the judgments not yet generated."""
        if len(prompts) != permit.n:
            raise ValueError(f"permit is for {permit.n} judgments, got {len(prompts)}")
        jobs = [JudgeJob(p, decoding) for p in prompts]

        def submit(on_done: DoneCallback) -> Request:
            request = Request(jobs, deadline=deadline, permit=permit, on_done=on_done)  # type: ignore[arg-type]
            now = time.monotonic()
            with self._cv:
                if self._stop_now or not self._threads:
                    raise NotReady("the engine is not running", code="not_ready")
                self._judges.extend(Entry(request, i, job, now) for i, job in enumerate(jobs))  # type: ignore[arg-type]
                self._preparing -= permit.n
                self._live_requests += 1
                permit.submitted = True
                self._cv.notify_all()  # the worker takes judge batches
            return request

        return await settled(submit)

    async def score_items(self, items: list[EncodedItem], *, deadline: float | None = None) -> EngineResult:
        """Admit + score in one call (for callers that did their preprocessing already)."""
        with self.try_admit(len(items)) as permit:
            return await self.score(permit, items, deadline=deadline)

    # ── batcher thread ─────────────────────────────────────────────────────────────────────

    def _queue_depth(self) -> int:
        return len(self._pending) + len(self._ready or []) + len(self._judges)

    def _alone_locked(self) -> bool:
        """No company on its way: no admitted items still in preprocessing, no requests the server is still
        reading. An idle worker waits up to max_wait for company only while some is coming."""
        return self._preparing == 0 and (
            self.requests_in_progress is None or self.requests_in_progress() <= self._live_requests)

    def _batcher_loop(self) -> None:
        while True:
            expired: list[Request] = []
            with self._cv:
                while not expired:
                    if self._stop_now:
                        return
                    now = time.monotonic()
                    self._pending, expired = self._drop_dead_locked(self._pending, now)
                    if expired:
                        break  # fail them outside the lock, then come back
                    timeout = self._maybe_close_batch_locked(now)
                    if timeout is not False:
                        self._cv.wait(timeout)
            self._expire(expired)

    def _drop_dead_locked(self, entries: list[Entry], now: float) -> tuple[list[Entry], list[Request]]:
        """``entries`` without those of finished (cancelled/failed) or expired requests, and the newly expired."""
        keep, expired, cancelled = [], {}, 0
        for entry in entries:
            request = entry.request
            if request.finished:
                cancelled += request.cancelled
            elif request.expired(now):
                expired[id(request)] = request
            else:
                keep.append(entry)
        if cancelled:
            self.stats.record_items(cancelled=cancelled)
        return keep, list(expired.values())

    def _maybe_close_batch_locked(self, now: float) -> float | None | bool:
        """Close a batch into the ready slot if it is time; return how long to wait (None = until
        notified), or False to loop again at once."""
        timeout: float | None = None
        if self._pending and self._ready is None:
            limits = {"max_batch_size": self.config.max_batch_size, "max_batch_tokens": self.config.max_batch_tokens}
            lengths = [e.num_tokens for e in self._pending]
            if self.config.share_prefix:
                idx, full = select_grouped_batch(
                    lengths, [e.item.prefix_len for e in self._pending], [e.group for e in self._pending], **limits
                )
            else:
                idx, full = select_batch(lengths, **limits)
            age = now - self._pending[0].enqueued_at
            alone = self._alone_locked()  # one request alone is not held back for nothing
            if full or self._draining or (not self._worker_busy and (age >= self._max_wait_s or alone)):
                chosen = set(idx)
                self._ready = [self._pending[i] for i in idx]
                self._pending = [e for i, e in enumerate(self._pending) if i not in chosen]
                self._cv.notify_all()
                return False
            if not self._worker_busy:
                timeout = self._max_wait_s - age
        # Also wake for the nearest deadline, so an expired caller hears back on time.
        deadlines = [e.request.deadline for e in self._pending if e.request.deadline is not None]
        if deadlines:
            until = min(deadlines) - now
            timeout = until if timeout is None else min(timeout, until)
        return None if timeout is None else max(timeout, 0.0)

    def _expire(self, requests: list[Request]) -> None:
        for request in requests:
            if request.fail(
                DeadlineExceeded(
                    "the request's deadline passed before it was scored", code="deadline_exceeded"
                )
            ):
                self.stats.record_items(expired=len(request.items))

    # ── worker thread ──────────────────────────────────────────────────────────────────────

    def _worker_loop(self) -> None:
        while True:
            job, judges, expired = None, [], []
            with self._cv:
                while self._ready is None and not self._exclusive and not self._stop_now:
                    judges, expired, wait = self._take_judges_locked(time.monotonic())
                    if judges or expired:
                        break
                    self._cv.wait(wait)
                if self._exclusive:
                    job, batch = self._exclusive.popleft(), []
                elif judges or expired:
                    batch = judges
                elif self._ready is None:
                    return
                else:
                    batch, self._ready = self._ready, None
                self._worker_busy = True
                self._cv.notify_all()  # the batcher may prepare the next batch now
            try:
                self._expire(expired)
                if job is not None:
                    self._run_exclusive_job(*job)
                elif judges:
                    self._batch_seq += 1
                    run_judge_batch(self.model.generate_judgments, batch, self.stats, self._batch_seq,
                                    self._expire)
                elif batch:
                    self._run_batch(batch)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("engine worker failed on a batch")
                for entry in batch:
                    entry.request.fail(BackendError(f"internal engine error: {exc}", code="engine_error"))
            finally:
                with self._cv:
                    self._worker_busy = False
                    self._cv.notify_all()

    def _take_judges_locked(self, now: float) -> tuple[list[Entry], list[Request], float | None]:
        """The next judge batch if it is due (taken out of the queue), the requests whose deadline passed
        (dropped), and otherwise how long to wait for company (None: until notified)."""
        live, expired = self._drop_dead_locked(self._judges, now)
        self._judges = live
        if not live:
            return [], expired, None
        age = now - live[0].enqueued_at
        if not (len(live) >= self.config.max_batch_size or self._draining or age >= self._max_wait_s
                or self._alone_locked()):
            return [], expired, self._max_wait_s - age
        idx = take_judge_batch(live, max_batch_size=self.config.max_batch_size,
                               max_batch_tokens=self.config.max_batch_tokens)
        chosen = set(idx)
        self._judges = [e for i, e in enumerate(live) if i not in chosen]
        return [live[i] for i in idx], expired, None

    def _run_batch(self, batch: list[Entry]) -> None:
        now = time.monotonic()
        live, expired = [], {}
        for entry in batch:
            if entry.request.finished:
                self.stats.record_items(cancelled=int(entry.request.cancelled))
            elif entry.request.expired(now):
                expired[id(entry.request)] = entry.request
            else:
                live.append(entry)
        self._expire(list(expired.values()))
        if not live:
            return
        self._batch_seq += 1
        ids = list(dict.fromkeys(e.request.request_id for e in live if e.request.request_id))
        token = request_id_var.set(",".join(ids[:8]) + (",..." if len(ids) > 8 else "") or None)
        start = time.monotonic()
        try:
            outcomes = score_isolated(self.model.score_batch, [e.item for e in live])
        finally:
            request_id_var.reset(token)
        seconds = time.monotonic() - start
        waits = [start - e.enqueued_at for e in live]
        self.stats.record_batch(
            size=len(live),
            padded_tokens=padded_tokens([e.num_tokens for e in live]),
            seconds=seconds,
            queue_waits=waits,
        )
        failed = sum(isinstance(outcome, RMServeError) for outcome in outcomes)
        # Count before resolving, so a caller that sees its result also sees it in the stats.
        self.stats.record_items(scored=len(live) - failed, failed=failed)
        for entry, outcome, wait in zip(live, outcomes, waits, strict=True):
            if isinstance(outcome, RMServeError):
                entry.request.fail(outcome.for_item(entry.index))
            else:
                entry.request.item_done(
                    entry.index, outcome, batch_id=self._batch_seq, batch_s=seconds, queue_s=wait
                )


__all__ = ["Engine", "EngineConfig", "EngineHealth", "ScoringModel"]  # re-exported
