"""A judge batch nobody waits for stops generating (engine/judging.py ``Abandonment``, models/judge.py): once every
request in a started batch is cancelled or past its deadline, generation ends within a step or two instead of
running to ``max_new_tokens``; while one request is live, its judgment is exactly what it would have been.

Decode steps are counted (a forward hook on the backbone, slowed so that cancellation lands mid-generation),
not wall time: the shared CPU makes wall time meaningless."""

from __future__ import annotations

import asyncio
import time

import pytest

from rmserve.api import ScoreRequest, ScoreService
from rmserve.engine.judging import Abandonment
from rmserve.errors import RMServeError
from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge
from tests.conftest import running_engine

# A reasoning judge whose tiny random backbone writes its whole budget without the answer prefix (the answer is
# then parsed from the text: the first digit; OTHER's text has none). 40 decode steps per batch unless abandoned.
BUDGET = 40
SECTION = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": BUDGET, "answer_pattern": r"(\d)"}
LIVE, OTHER = "A blue square.", "A red circle."
STEP_S = 0.01  # each decode step made this much slower, so a cancellation lands mid-generation


def one(response: str, **options) -> ScoreRequest:
    return ScoreRequest(items=[{"prompt": "What is shown?", "response": response}], **options)


def slow_judge() -> tuple[object, list[int]]:
    """The tiny judge, each backbone forward (one per decode step) recorded and slowed by STEP_S."""
    judge = build_tiny_judge("qwen2", SECTION, seed=3)
    steps: list[int] = []

    def hook(module, args, output):
        steps.append(1)
        time.sleep(STEP_S)

    judge.backbone.register_forward_hook(hook)
    return judge, steps


async def until(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.002)


async def test_a_judge_batch_whose_requests_all_left_stops_within_a_few_steps():
    judge, steps = slow_judge()
    with running_engine(judge, max_wait_ms=0) as engine:
        service = ScoreService(engine)

        async def run(request_step, **score):
            """Steps the batch ran, and the steps seen when ``request_step`` ended the request."""
            batches = engine.snapshot().batches_run
            steps.clear()
            task = asyncio.ensure_future(service.score(one(LIVE), **score))
            ended_at = await request_step(task)
            await until(lambda: engine.snapshot().batches_run > batches)  # the worker is done with the batch
            return len(steps), ended_at, task

        async def ran_to_the_end(task):
            await task
            return len(steps)

        async def cancel_mid_generation(task):
            await until(lambda: len(steps) >= 5)
            task.cancel()
            return len(steps)

        async def deadline_passes(task):
            with pytest.raises(RMServeError) as info:
                await task
            assert info.value.code == "deadline_exceeded"
            return len(steps)

        full, _, done = await run(ran_to_the_end)
        assert full >= BUDGET  # the baseline writes its whole budget
        cancelled, at_cancel, _ = await run(cancel_mid_generation)
        assert 5 <= at_cancel and cancelled <= at_cancel + 2  # stopped a step after the client left, not at BUDGET
        expired, at_deadline, _ = await run(deadline_passes, deadline=time.monotonic() + 0.15)
        assert 5 <= expired <= at_deadline + 2 < BUDGET  # a passed deadline stops it too, and fails the request
        # counted as expired and cancelled (Engine._expire counts right after failing the request)
        await until(lambda: engine.snapshot().items_expired == 1 and engine.snapshot().items_cancelled == 1)
    assert done.result().response.items[0].reward > 0  # the un-abandoned batch was read as before


async def test_a_partly_cancelled_batch_gives_the_live_item_its_exact_judgment():
    judge, steps = slow_judge()
    with running_engine(judge, max_wait_ms=500, max_batch_size=2) as engine:
        service = ScoreService(engine)
        steps.clear()
        baseline, _ = await asyncio.gather(service.score(one(LIVE, return_judgment=True)), service.score(one(OTHER)),
                                           return_exceptions=True)  # OTHER's text has no answer: unparseable
        full = len(steps)
        steps.clear()
        live = asyncio.ensure_future(service.score(one(LIVE, return_judgment=True)))
        other = asyncio.ensure_future(service.score(one(OTHER)))
        await until(lambda: len(steps) >= 5)
        other.cancel()
        got = await live
        assert len(steps) == full  # the batch ran to its end for the live row
        assert engine.snapshot().max_batch_size_seen == 2  # both times the two requests shared one batch
    want = baseline.response.items[0]
    item = got.response.items[0]
    assert item.reward == want.reward  # the same batch, the same rows: exactly
    assert [j.text for j in item.judgments] == [j.text for j in want.judgments] and item.judgments[0].text
    assert other.cancelled()


class _Request:
    def __init__(self, deadline=None):
        self.finished, self.deadline = False, deadline

    def expired(self, now):
        return self.deadline is not None and now >= self.deadline


class _Entry:
    def __init__(self, request):
        self.request = request


def test_abandonment_fires_only_once_every_request_has_gone_and_stays_fired():
    live, leaving, expiring = _Request(), _Request(), _Request(deadline=time.monotonic() + 3600)
    flag = Abandonment([_Entry(live), _Entry(leaving), _Entry(leaving), _Entry(expiring)])
    leaving.finished = True
    expiring.deadline = time.monotonic() - 1
    assert not flag() and not flag.fired  # one request still waits
    live.finished = True
    assert flag() and flag.fired
    live.finished = False  # a batch cut short stays abandoned, whatever happens next
    assert flag()
