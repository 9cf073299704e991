"""Engine, per-item dispatch (engine/dispatch.py): each item goes to a model that schedules work itself (the
vLLM backend's ``submit_item``) the moment it is submitted; admission, deadlines, cancellation, failure
isolation and drain stay the engine's. The model here is torch-free: the fake reward model behind a
scheduler thread that runs whatever is queued together, as vLLM's engine steps do."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import pytest

from rmserve.config import ServerConfig
from rmserve.engine import Engine, EngineConfig
from rmserve.errors import BackendError, DeadlineExceeded, NotReady
from tests.conftest import item, running_engine
from tests.fakes import NAN_MARKER, RAISE_MARKER, FakeRewardModel

pytestmark = pytest.mark.asyncio


class FakeScheduler(FakeRewardModel):
    """``submit_item``: queue the item; a scheduler thread scores everything queued at each step (one
    ``score_batch`` per step, like vLLM's continuous batching). ``forward_gate`` holds every step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.submitted = 0
        self.cancelled = 0
        self._queue: list[tuple] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._steps, daemon=True).start()

    def submit_item(self, encoded) -> Future:
        future: Future = Future()
        future.add_done_callback(self._count_cancel)
        with self._cv:
            self.submitted += 1
            self._queue.append((encoded, future))
            self._cv.notify()
        return future

    def _count_cancel(self, future: Future) -> None:
        if future.cancelled():
            self.cancelled += 1

    def _steps(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                step, self._queue = self._queue, []
            live = [(enc, fut) for enc, fut in step if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                outputs = self.score_batch([enc for enc, _ in live])
            except Exception:  # isolate as the real backend does: each item is its own request there
                for enc, fut in live:
                    try:
                        fut.set_result(self.score_batch([enc])[0])
                    except Exception as exc:
                        fut.set_exception(exc)
                continue
            for (_, fut), out in zip(live, outputs, strict=True):
                fut.set_result(out)


async def _score(engine, model, responses, deadline=None):
    return await engine.score_items([model.encode(item(r)) for r in responses], deadline=deadline)


async def _occupy(engine, model) -> asyncio.Future:
    """A request the model's scheduler is computing (held at its gate): later items wait in its queue."""
    blocker = asyncio.ensure_future(_score(engine, model, ["blocker"]))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if model.batches:
            return blocker
    raise AssertionError("the blocker never reached the model")


async def test_items_go_to_the_model_at_once_and_score_as_alone():
    model = FakeScheduler(forward_sleep_s=0.01)
    # A batch wait that would show if rmserve's batcher were still in the path: per-item never waits.
    with running_engine(model, max_wait_ms=10_000) as engine:
        assert engine.per_item  # auto: the model schedules items itself
        responses = [f"answer number {i}" * (1 + i % 3) for i in range(24)]
        start = time.monotonic()
        results = await asyncio.gather(*(_score(engine, model, [r]) for r in responses),
                                       _score(engine, model, ["a", "bb", "ccc"]))
        assert time.monotonic() - start < 5
        snap = engine.snapshot()
    for r, result in zip(responses, results[:-1], strict=True):
        assert result.outputs[0].reward == model.expected(item(r)).reward
    assert [o.reward for o in results[-1].outputs] == [model.expected(item(r)).reward for r in ["a", "bb", "ccc"]]
    assert model.submitted == 27 and snap.items_scored == 27
    assert snap.batches_run == 0  # rmserve formed no batches; the model's scheduler did (several per step)
    assert max(len(b) for b in model.batches) > 1


async def test_a_failing_or_non_finite_item_fails_only_its_own_request():
    model = FakeScheduler()
    with running_engine(model) as engine:
        good, bad, nan = await asyncio.gather(
            _score(engine, model, ["fine"]), _score(engine, model, ["ok", RAISE_MARKER]),
            _score(engine, model, [f"x {NAN_MARKER}"]), return_exceptions=True)
        snap = engine.snapshot()
    assert good.outputs[0].reward == model.expected(item("fine")).reward
    assert isinstance(bad, BackendError) and bad.code == "forward_failed" and bad.item == 1
    assert isinstance(nan, BackendError) and nan.code == "non_finite_score" and nan.item == 0
    assert snap.items_failed == 2


async def test_an_expired_request_fails_on_time_and_its_items_are_aborted():
    gate = threading.Event()
    model = FakeScheduler(forward_gate=gate)
    try:
        with running_engine(model) as engine:
            blocker = await _occupy(engine, model)
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await _score(engine, model, ["slow", "slower"], deadline=time.monotonic() + 0.2)
            assert time.monotonic() - start < 2  # the watcher woke for the deadline, not for the model
            gate.set()
            await blocker
            snap = engine.snapshot()
            assert engine.health().in_flight == 0
    finally:
        gate.set()
    assert snap.items_expired == 2 and snap.items_scored == 1
    assert model.cancelled == 2  # aborted in the model: they never cost compute


async def test_a_cancelled_caller_aborts_its_items():
    gate = threading.Event()
    model = FakeScheduler(forward_gate=gate)
    try:
        with running_engine(model) as engine:
            blocker = await _occupy(engine, model)
            task = asyncio.ensure_future(_score(engine, model, ["a", "b", "c"]))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            await blocker
            assert engine.health().in_flight == 0 and engine.snapshot().items_cancelled == 3
    finally:
        gate.set()
    assert model.cancelled == 3 and model.submitted == 4


async def test_stop_fails_what_is_still_running_with_not_ready():
    gate = threading.Event()
    model = FakeScheduler(forward_gate=gate)
    engine = Engine(model, EngineConfig())
    engine.start()
    try:
        task = asyncio.ensure_future(_score(engine, model, ["stuck"]))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(engine.stop, drain=True, timeout=0.2)
        with pytest.raises(NotReady):
            await task
    finally:
        gate.set()


async def test_batch_dispatch_is_kept_on_request_and_per_item_needs_a_scheduler():
    model = FakeScheduler()
    with running_engine(model, dispatch="batch", max_wait_ms=20) as engine:
        assert not engine.per_item
        await asyncio.gather(*(_score(engine, model, [f"r{i}"]) for i in range(8)))
        assert model.submitted == 0 and engine.snapshot().batches_run >= 1
    assert not Engine(FakeRewardModel()).per_item  # auto: a model without a scheduler is batched
    with pytest.raises(ValueError, match="dispatch per_item needs a model that schedules items"):
        Engine(FakeRewardModel(), EngineConfig(dispatch="per_item"))
    with pytest.raises(ValueError, match="dispatch must be one of"):
        EngineConfig(dispatch="sometimes")
    with pytest.raises(ValueError, match="per_item needs a backend with its own scheduler: --backend vllm"):
        ServerConfig(dispatch="per_item")
