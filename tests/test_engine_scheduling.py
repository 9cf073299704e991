"""Engine: batching across concurrent requests, admission, deadlines, cancellation, isolation, drain."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from rmserve.errors import BackendError, DeadlineExceeded, InvalidInput, NotReady, Overloaded
from tests.conftest import item, running_engine
from tests.fakes import NAN_MARKER, RAISE_MARKER, FakeRewardModel

pytestmark = pytest.mark.asyncio


async def _score(engine, model, responses, deadline=None):
    encoded = [model.encode(item(r)) for r in responses]
    return await engine.score_items(encoded, deadline=deadline)


async def test_concurrent_single_items_are_batched_and_match_alone():
    model = FakeRewardModel(forward_sleep_s=0.01)
    with running_engine(model, max_batch_size=16, max_wait_ms=20) as engine:
        responses = [f"answer number {i}" * (1 + i % 3) for i in range(32)]
        results = await asyncio.gather(*(_score(engine, model, [r]) for r in responses))
        for r, result in zip(responses, results, strict=True):
            assert result.outputs[0].reward == model.expected(item(r)).reward
        snap = engine.snapshot()
    assert snap.items_scored == 32
    assert snap.max_batch_size_seen > 1
    assert snap.batches_run < 32
    assert max(len(b) for b in model.batches) <= 16
    assert model.max_concurrent_forwards == 1  # one worker thread owns the model


async def test_multi_item_request_spans_batches_in_order():
    model = FakeRewardModel()
    with running_engine(model, max_batch_size=2, max_wait_ms=0) as engine:
        responses = [f"r{i}" + "x" * (10 * i) for i in range(5)]
        result = await _score(engine, model, responses)
    assert [o.reward for o in result.outputs] == [model.expected(item(r)).reward for r in responses]
    assert result.num_tokens == sum(model.encode(item(r)).num_tokens for r in responses)
    assert len(model.batches) >= 3


async def test_token_budget_limits_padded_batch_tokens():
    model = FakeRewardModel(forward_sleep_s=0.005)
    with running_engine(model, max_batch_size=64, max_batch_tokens=200, max_wait_ms=20) as engine:
        await asyncio.gather(*(_score(engine, model, ["y" * 40]) for _ in range(12)))
    for lengths in model.batches:
        assert max(lengths) * len(lengths) <= 200


async def test_full_queue_refuses_with_overloaded_and_recovers():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    with running_engine(model, max_queue_items=3, max_wait_ms=0) as engine:
        tasks = [
            asyncio.create_task(_score(engine, model, ["a", "b"])),
            asyncio.create_task(_score(engine, model, ["c"])),
        ]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as info:
            engine.try_admit(1)
        assert info.value.retry_after_s >= 1
        gate.set()
        await asyncio.gather(*tasks)
        with engine.try_admit(3):  # capacity is back once requests finish
            pass
        with pytest.raises(InvalidInput):  # can never fit: a client error, not overload
            engine.try_admit(4)


async def test_expired_items_are_dropped_before_compute():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    with running_engine(model, max_wait_ms=0) as engine:
        blocker = asyncio.create_task(_score(engine, model, ["blocker"]))
        await asyncio.sleep(0.05)  # the worker is now stuck in the blocker's forward
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await _score(engine, model, ["late" * 3], deadline=time.monotonic() + 0.05)
        assert time.monotonic() - t0 < 1.0  # answered at the deadline, not when the worker frees up
        gate.set()
        await blocker
        await _score(engine, model, ["after"])
        snap = engine.snapshot()
    late_len = model.encode(item("late" * 3)).num_tokens
    assert all(late_len not in batch for batch in model.batches)
    assert snap.items_expired == 1


async def test_cancelled_caller_is_dropped_before_compute():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    with running_engine(model, max_wait_ms=0) as engine:
        blocker = asyncio.create_task(_score(engine, model, ["blocker"]))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(_score(engine, model, ["caller went away" * 2]))
        await asyncio.sleep(0.02)
        gone.cancel()
        await asyncio.sleep(0.02)
        assert engine.snapshot().in_flight == 1  # the cancelled request released its admission
        gate.set()
        await blocker
        await _score(engine, model, ["after"])
    gone_len = model.encode(item("caller went away" * 2)).num_tokens
    assert all(gone_len not in batch for batch in model.batches)


@pytest.mark.parametrize("marker", [NAN_MARKER, RAISE_MARKER])
async def test_bisection_isolates_the_poisoned_item(marker):
    model = FakeRewardModel(forward_sleep_s=0.001)
    with running_engine(model, max_batch_size=8, max_wait_ms=50) as engine:
        responses = [f"fine answer {i}" for i in range(8)]
        responses[5] = f"poisoned {marker} answer"
        results = await asyncio.gather(
            *(_score(engine, model, [r]) for r in responses), return_exceptions=True
        )
        snap = engine.snapshot()
    assert len(model.batches[0]) == 8  # they really shared one batch before bisection
    for i, (r, result) in enumerate(zip(responses, results, strict=True)):
        if i == 5:
            assert isinstance(result, BackendError)
            assert result.param == "items.0"
            assert (
                ("non-finite" in result.message)
                if marker == NAN_MARKER
                else ("simulated CUDA" in result.message)
            )
        else:
            assert math.isfinite(result.outputs[0].reward)
            assert result.outputs[0].reward == model.expected(item(r)).reward
    assert snap.items_failed == 1 and snap.items_scored == 7


async def test_failure_in_multi_item_request_names_the_item():
    model = FakeRewardModel()
    with running_engine(model, max_wait_ms=0) as engine:
        with pytest.raises(BackendError) as info:
            await _score(engine, model, ["ok", "ok too", f"bad {NAN_MARKER}"])
    assert info.value.param == "items.2"


async def test_stop_drains_admitted_work_then_refuses():
    model = FakeRewardModel(forward_sleep_s=0.02)
    with running_engine(model, max_batch_size=4, max_wait_ms=1) as engine:
        tasks = [asyncio.create_task(_score(engine, model, [f"drain {i}"])) for i in range(10)]
        await asyncio.sleep(0.01)
        await asyncio.to_thread(engine.stop, drain=True, timeout=10)
        results = await asyncio.gather(*tasks)
        assert len(results) == 10
        with pytest.raises(NotReady):
            engine.try_admit(1)
        assert engine.health().healthy and not engine.health().accepting


async def test_not_started_engine_is_not_ready():
    from rmserve.engine import Engine

    engine = Engine(FakeRewardModel())
    with pytest.raises(NotReady):
        engine.try_admit(1)
    assert not engine.health().accepting


async def test_item_over_token_budget_is_invalid_input():
    model = FakeRewardModel()
    with running_engine(model, max_batch_tokens=10, max_wait_ms=0) as engine:
        with pytest.raises(InvalidInput) as info:
            await _score(engine, model, ["this is longer than ten tokens"])
        assert info.value.param == "items.0"
        assert engine.snapshot().in_flight == 0
