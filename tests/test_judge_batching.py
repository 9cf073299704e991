"""Judge generation batched across requests (engine/judging.py): concurrent single-item requests share
generate batches, their rewards equal the alone rewards, and timings/stats count judge work truthfully."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rmserve.api import ScoreRequest, ScoreService
from rmserve.errors import RMServeError
from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge
from tests.conftest import running_engine

REASONING = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 6}
RESPONSES = [f"Answer number {i}: a {'red' if i % 2 else 'blue'} {'circle' * (1 + i % 3)}." for i in range(12)]


def one(response: str, **options) -> ScoreRequest:
    return ScoreRequest(items=[{"prompt": "What is shown?", "response": response}], **options)


async def outcome(service: ScoreService, request: ScoreRequest) -> float | str:
    """The item's reward, or the error's message (an unreadable judgment quotes its generated text)."""
    try:
        return (await service.score(request)).response.items[0].reward
    except RMServeError as exc:
        return f"{exc.code}: {exc}"


def recording(model) -> list[int]:
    """Record the size of every generate batch the model runs."""
    sizes: list[int] = []
    original = model.generate_judgments

    def generate(prompts, decoding, **options):
        sizes.append(len(prompts))
        return original(prompts, decoding, **options)

    model.generate_judgments = generate
    return sizes


@pytest.mark.parametrize("section", [TINY_JUDGE, REASONING], ids=["direct", "reasoning"])
async def test_concurrent_single_item_requests_share_generate_batches(section):
    judge = build_tiny_judge("qwen2", section, seed=3)
    voting = {"k": 2, "seed": 5, "temperature": 2.0}
    with running_engine(judge, max_wait_ms=200, max_batch_size=8) as engine:
        service = ScoreService(engine)
        alone = [await outcome(service, one(r, voting=voting)) for r in RESPONSES]
        sizes = recording(judge)
        before = engine.snapshot()
        together = await asyncio.gather(*(outcome(service, one(r, voting=voting)) for r in RESPONSES))
        after = engine.snapshot()
    # a judgment (its text, its reward) does not depend on its batch neighbours
    for got, expected in zip(together, alone, strict=True):
        assert got == (expected if isinstance(expected, str) else pytest.approx(expected, abs=1e-4))
    assert sum(sizes) == 2 * len(RESPONSES) and max(sizes) == 8  # 24 judgments from 12 requests, batched
    assert len(sizes) < len(RESPONSES)
    # the engine's batch metrics see judge batches and judgments like scoring batches and items
    assert after.batches_run - before.batches_run == len(sizes)
    assert after.items_scored - before.items_scored == 2 * len(RESPONSES)  # generated (readable or not)
    assert after.max_batch_size_seen == 8
    assert after.batch_size.count - before.batch_size.count == len(sizes)


async def test_judge_timings_split_queue_wait_from_generation():
    judge = build_tiny_judge("qwen2", TINY_JUDGE, seed=3)
    original = judge.generate_judgments
    started = threading.Event()

    def slow(prompts, decoding, **options):
        started.set()
        time.sleep(0.4)
        return original(prompts, decoding, **options)

    with running_engine(judge, max_wait_ms=0) as engine:
        judge.generate_judgments = slow  # after the engine's warm-up, which generates too
        service = ScoreService(engine)
        first = asyncio.ensure_future(service.score(one("first")))
        await asyncio.to_thread(started.wait, 10)
        second = await service.score(one("second"))  # queued behind the first one's generation
        await first
        snap = engine.snapshot()
    timings = second.timings
    assert timings.queue_ms >= 250  # waited for the worker, not counted as its own inference
    assert 350 <= timings.inference_ms < timings.queue_ms + timings.inference_ms <= timings.total_ms + 1
    assert snap.queue_seconds.count == 2 and snap.queue_seconds.total >= 0.25


async def test_a_failing_judgment_in_a_shared_batch_fails_only_its_request():
    judge = build_tiny_judge("qwen2", TINY_JUDGE, seed=3)
    original = judge.generate_judgments
    sizes = []

    def flaky(prompts, decoding, **options):
        sizes.append(len(prompts))
        if any("BOOM" in judge.decode_text(p.prompt_ids) for p in prompts):
            raise RuntimeError("simulated device error")
        return original(prompts, decoding, **options)

    with running_engine(judge, max_wait_ms=200, max_batch_size=8) as engine:
        service = ScoreService(engine)
        alone = [await outcome(service, one(r)) for r in RESPONSES[:6]]
        judge.generate_judgments = flaky
        responses = [*RESPONSES[:3], "BOOM", *RESPONSES[3:6]]
        together = await asyncio.gather(*(outcome(service, one(r)) for r in responses))
        calls = len(sizes)
        with pytest.raises(RMServeError) as info:
            await service.score(one("late"), deadline=time.monotonic() - 1)
        assert len(sizes) == calls  # dropped before generation
    assert sizes[0] == 7  # the seven requests shared one batch, then it was bisected
    assert together[3].startswith("forward_failed")
    assert [together[i] for i in (0, 1, 2, 4, 5, 6)] == pytest.approx(alone, abs=1e-4)
    assert info.value.code == "deadline_exceeded"
