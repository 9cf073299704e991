"""Critique scoring: the engine's exclusive-job path, token streaming, and the critique service
(greedy critique + score) against a tiny real critique model, whole and streamed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rmserve.api import CritiqueRequest, ScoreRequest, ScoreService
from rmserve.engine import StreamCancelled, TokenStream
from rmserve.errors import DeadlineExceeded, InvalidInput, NotReady
from rmserve.models.critique import CritiqueConfig, critique_and_score
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.types import ScoreItem
from tests.conftest import running_engine
from tests.fakes import FakeRewardModel


def critique_model(seed: int = 11, max_new_tokens: int = 12):
    model = build_tiny_reward_model("qwen2", seed=seed)
    # min_new_tokens: a random tiny model may emit its end token at once; the tests want some text
    config = CritiqueConfig(max_new_tokens=max_new_tokens, generation={"min_new_tokens": max_new_tokens})
    model.extra_config = {"critique": config.to_dict()}
    return model


@pytest.fixture(scope="module")
def model():
    return critique_model()


# ── Engine.run_exclusive ──────────────────────────────────────────────────────────────────────


async def test_run_exclusive_runs_on_the_worker_between_batches():
    gate = threading.Event()
    model = FakeRewardModel(forward_gate=gate)
    with running_engine(model, max_wait_ms=0) as engine:
        scoring = asyncio.ensure_future(engine.score_items([model.encode(ScoreItem(prompt="p", response="r"))]))
        await asyncio.sleep(0.05)  # the worker is inside that forward now
        job = engine.run_exclusive(lambda: (threading.current_thread().name, model.max_concurrent_forwards))
        await asyncio.sleep(0.05)
        assert not job.done()  # waits for the batch: the model is never used by two threads
        gate.set()
        thread, concurrent = await asyncio.wrap_future(job)
        await scoring
        assert thread == "rmserve-worker" and concurrent == 1

        failing = engine.run_exclusive(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            await asyncio.wrap_future(failing)
        assert (await engine.score_items([model.encode(ScoreItem(prompt="p", response="after"))])).outputs


async def test_run_exclusive_cancel_before_start_and_stop():
    gate = threading.Event()
    model = FakeRewardModel()
    engine_cm = running_engine(model, max_wait_ms=0)
    engine = engine_cm.__enter__()
    try:
        blocker = engine.run_exclusive(gate.wait, 10)
        ran = []
        dropped = engine.run_exclusive(ran.append, "dropped")
        assert dropped.cancel()
        pending = engine.run_exclusive(ran.append, "never")
        gate.set()
        await asyncio.wrap_future(blocker)
        await asyncio.sleep(0.05)
        assert ran == ["never"]
        gate.clear()
        engine.run_exclusive(gate.wait, 0.3)
        late = engine.run_exclusive(ran.append, "late")
    finally:
        engine.stop(drain=False, timeout=2)
    with pytest.raises(NotReady):
        late.result(timeout=2)
    assert pending.done() and ran == ["never"]
    with pytest.raises(NotReady):
        engine.run_exclusive(ran.append, "x")


async def test_token_stream_decodes_incrementally_and_stops_generation():
    loop = asyncio.get_running_loop()
    text = "héllo"
    data = text.encode()

    def decode(ids):
        return bytes(ids).decode("utf-8", errors="replace")

    stream = TokenStream(decode, loop)
    stream.put([1, 2, 3])  # the prompt: skipped
    for byte in data:
        stream.put([byte])
    stream.end()
    stream.close()
    chunks = [c async for c in stream]
    assert "".join(chunks) == text and stream.tokens == len(data)
    assert all("\ufffd" not in c for c in chunks)  # the 2-byte "é" waited for its second byte

    stream = TokenStream(decode, loop)
    stream.cancel()
    with pytest.raises(StreamCancelled):
        stream.put([1])
    expired = TokenStream(decode, loop, deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        expired.put([1])


# ── the critique service ──────────────────────────────────────────────────────────────────────


async def test_critique_equals_generating_and_scoring_directly(model):
    request = CritiqueRequest(prompt="What colour is the circle?", response="It is red.")
    item = ScoreItem(prompt=request.prompt, response=request.response)
    (direct,) = critique_and_score(model, [item])
    with running_engine(model, max_wait_ms=1) as engine:
        service = ScoreService(engine)
        whole = await service.critique(request)
        chunks = [c async for c in service.critique_stream(request)]
    assert whole.critique == direct.critique and whole.critique.strip()
    assert whole.reward == pytest.approx(direct.score.reward, abs=1e-5)
    assert whole.model == model.name and whole.usage.completion_tokens == 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 12
    *deltas, final = chunks
    assert deltas and all(not c.done and c.delta for c in deltas)
    assert final.done and final.critique == whole.critique and final.reward == whole.reward
    assert "".join(c.delta for c in deltas).strip() == whole.critique


async def test_scoring_keeps_working_while_critiques_stream(model):
    request = CritiqueRequest(prompt="Describe the shape.", response="A blue square.", max_new_tokens=6)
    with running_engine(model, max_wait_ms=1) as engine:
        service = ScoreService(engine)
        score = ScoreRequest.model_validate({"items": [{"prompt": "q", "response": "a"}]})
        results = await asyncio.gather(service.critique(request), service.score(score), service.critique(request))
    assert results[0].critique == results[2].critique and results[0].usage.completion_tokens == 6
    assert results[1].response.items[0].reward == pytest.approx(
        model.score([ScoreItem(prompt="q", response="a")])[0].reward, abs=1e-5
    )


async def test_closing_the_stream_stops_generation(model):
    slow = critique_model(max_new_tokens=400)
    request = CritiqueRequest(prompt="Describe everything.", response="Everything is fine.")
    with running_engine(slow, max_wait_ms=1) as engine:
        service = ScoreService(engine)
        stream = service.critique_stream(request)
        first = await stream.__anext__()
        assert first.delta and not first.done
        start = time.monotonic()
        await stream.aclose()
        # the worker is free again long before 400 tokens could have been generated
        assert await asyncio.wrap_future(engine.run_exclusive(lambda: "free")) == "free"
        assert time.monotonic() - start < 2.0
        assert engine.snapshot().in_flight == 0


async def test_deadline_stops_generation(model):
    slow = critique_model(max_new_tokens=400)
    with running_engine(slow, max_wait_ms=1) as engine:
        with pytest.raises(DeadlineExceeded):
            await ScoreService(engine).critique(
                CritiqueRequest(prompt="p", response="r"), deadline=time.monotonic() + 0.2
            )
        assert engine.snapshot().in_flight == 0


async def test_models_that_cannot_critique_are_a_clear_4xx(model, tiny_models):
    plain = tiny_models("qwen2")  # a reward model, LM head but no critique section
    seq_cls = tiny_models("qwen2_seq_cls")
    seq_cls.extra_config = {"critique": CritiqueConfig().to_dict()}  # a section, but no LM head to generate with
    try:
        for candidate in (plain, seq_cls, FakeRewardModel()):
            with running_engine(candidate, max_wait_ms=1) as engine:
                with pytest.raises(InvalidInput) as info:
                    await ScoreService(engine).critique(CritiqueRequest(prompt="p", response="r"))
            assert (info.value.param, info.value.code) == ("model", "not_a_critique_model")
            assert "rmserve-train critique" in info.value.message
    finally:
        seq_cls.extra_config = {}
    with running_engine(model, max_wait_ms=1) as engine:
        service = ScoreService(engine)
        with pytest.raises(InvalidInput) as info:
            await service.critique(CritiqueRequest(prompt="p", response="r", images=["data:image/png;base64,AAAA"]))
        assert (info.value.param, info.value.code) == ("images", "images_not_supported")
        with pytest.raises(InvalidInput) as info:
            await service.critique(CritiqueRequest(prompt="p", response="r", model="other"))
        assert info.value.code == "model_not_found"
