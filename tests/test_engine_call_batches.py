"""Batches of unshared items close at one forward call's tokens when the model cuts batches into calls.

engine/batching.py says why: on CPU the transformers backend runs a batch as forward calls of <= 1024
padded tokens (models/chunking.py), so a larger batch of unshared items only narrows the rows each call
can choose from. Groups that share a prefix keep the whole budget (their prefix pass spans the groups).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from rmserve.engine import Engine, EngineConfig
from rmserve.engine.base import forward_call_tokens
from rmserve.engine.batching import select_grouped_batch, unshared_budget
from tests.conftest import item
from tests.fakes import FakeRewardModel


class CallCuttingModel(FakeRewardModel):
    """A fake that, like the transformers backend on CPU, runs batches as calls of ``call_tokens``."""

    def __init__(self, call_tokens: int | None, **kwargs):
        super().__init__(**kwargs)
        self.call_tokens = call_tokens

    @property
    def forward_call_tokens(self) -> int | None:
        return self.call_tokens


def test_unshared_budget_is_the_smaller_of_the_two():
    assert unshared_budget(16384, None) == 16384
    assert unshared_budget(16384, 1024) == 1024
    assert unshared_budget(512, 1024) == 512  # the operator's --max-batch-tokens still caps it


def test_unshared_items_close_at_the_call_budget_and_pick_the_rows_that_pad_least():
    lengths = [100, 10, 98, 11, 101, 12, 99, 9]
    no_groups = [None] * len(lengths)
    idx, full = select_grouped_batch(lengths, [0] * len(lengths), no_groups, max_batch_size=32,
                                     max_batch_tokens=16384, unshared_batch_tokens=420)
    assert full and sorted(lengths[i] for i in idx) == [98, 99, 100, 101]  # the oldest and its neighbours
    idx, full = select_grouped_batch(lengths, [0] * len(lengths), no_groups, max_batch_size=32,
                                     max_batch_tokens=16384)
    assert not full and len(idx) == len(lengths)  # without it: everything, as before


def test_groups_that_share_a_prefix_keep_the_full_budget():
    lengths = [60] * 8
    prefix = [40] * 8
    groups = ["a"] * 4 + ["b"] * 4  # two GRPO groups: 40 + 4 x 20 = 120 token slots each
    idx, full = select_grouped_batch(lengths, prefix, groups, max_batch_size=32, max_batch_tokens=16384,
                                     unshared_batch_tokens=100)
    assert sorted(idx) == list(range(8)) and not full


def test_forward_call_tokens_is_read_from_models_that_cut_calls_only():
    assert forward_call_tokens(FakeRewardModel()) is None
    assert forward_call_tokens(CallCuttingModel(None)) is None
    assert forward_call_tokens(CallCuttingModel(256)) == 256


async def _score_all(engine: Engine, model: FakeRewardModel, responses: list[str]) -> list[float]:
    async def one(response: str) -> float:
        result = await engine.score_items([model.encode(item(response))])
        return result.outputs[0].reward

    return await asyncio.gather(*(one(r) for r in responses))


@pytest.mark.asyncio
@pytest.mark.parametrize("share_prefix", [False, True])
async def test_engine_batches_of_singles_stay_within_one_call(share_prefix):
    gate = threading.Event()
    model = CallCuttingModel(200, forward_gate=gate)
    engine = Engine(model, EngineConfig(max_batch_size=32, max_batch_tokens=16384, max_wait_ms=0,
                                        share_prefix=share_prefix))
    engine.start()
    try:
        # Different prompts: nothing shares a prefix. The first batch blocks on the gate, the rest queue up.
        responses = [f"answer {i}" + "x" * (10 + 7 * (i % 5)) for i in range(24)]
        task = asyncio.ensure_future(_score_all(engine, model, [f"q{i}|{r}" for i, r in enumerate(responses)]))
        await asyncio.sleep(0.2)
        gate.set()
        rewards = await task
    finally:
        engine.stop(drain=False, timeout=5)
    expected = [model.expected(item(f"q{i}|{r}")).reward for i, r in enumerate(responses)]
    assert rewards == expected
    assert len(model.batches) > 1
    for lengths in model.batches:
        assert len(lengths) == 1 or max(lengths) * len(lengths) <= 200


@pytest.mark.asyncio
async def test_an_item_longer_than_a_call_is_scored_alone_not_refused():
    model = CallCuttingModel(32)
    engine = Engine(model, EngineConfig(max_batch_tokens=4096, max_wait_ms=0))
    engine.start()
    try:
        long = "y" * 200
        rewards = await _score_all(engine, model, [long, "short"])
    finally:
        engine.stop(drain=False, timeout=5)
    assert rewards == [model.expected(item(long)).reward, model.expected(item("short")).reward]
    assert all(len(b) == 1 for b in model.batches)


def test_reward_model_reports_its_cpu_call_budget():
    from rmserve.models.tiny import build_tiny_reward_model
    from rmserve.models.types import ServingOptions

    model = build_tiny_reward_model()  # a fresh one: configure_serving below changes it
    assert forward_call_tokens(model) == 1024  # models/chunking.py: CPU calls of <= 1024 padded tokens
    model.configure_serving(ServingOptions(max_forward_tokens=512))
    assert forward_call_tokens(model) == 512
    model.chunk_policy = None  # a batch as one call: nothing to close batches at
    assert forward_call_tokens(model) is None
