"""Forward-call planning (rmserve.models.chunking): an exact, capped, length-sorted partition."""

from __future__ import annotations

import itertools
import random

import pytest

from rmserve.models.chunking import ChunkPolicy, plan_chunks


def _cost(lengths, chunks, policy) -> int:
    return sum(max(lengths[i] for i in c) * len(c) + policy.overhead_tokens for c in chunks)


def _brute_force(lengths, policy) -> int:
    """Cheapest cost over every contiguous split of the length-sorted rows."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        chunks, current = [], [order[0]]
        for cut, i in zip(cuts, order[1:], strict=True):
            if cut:
                chunks.append(current)
                current = []
            current.append(i)
        chunks.append(current)
        if policy.max_tokens is not None and any(
            len(c) > 1 and max(lengths[i] for i in c) * len(c) > policy.max_tokens for c in chunks
        ):
            continue
        cost = _cost(lengths, chunks, policy)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_plan_is_optimal_and_covers_every_row_once(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 9))]
    policy = ChunkPolicy(overhead_tokens=rng.choice([0, 8, 32, 500]), max_tokens=rng.choice([None, 64, 400, 1024]))
    chunks = plan_chunks(lengths, policy)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for c in chunks:
        assert [lengths[i] for i in c] == sorted(lengths[i] for i in c)
        if len(c) > 1 and policy.max_tokens is not None:
            assert max(lengths[i] for i in c) * len(c) <= policy.max_tokens
    assert _cost(lengths, chunks, policy) == _brute_force(lengths, policy)


def test_cpu_policy_splits_mixed_lengths_and_gpu_policy_keeps_one_call():
    lengths = [40, 250, 45, 240, 50, 255, 42, 248]
    cpu = plan_chunks(lengths, ChunkPolicy.for_device("cpu"))
    assert len(cpu) >= 2 and all(max(lengths[i] for i in c) * len(c) <= 1024 for c in cpu)
    assert {lengths[i] for i in cpu[0]} == {40, 42, 45, 50}  # short rows are not padded to 255
    assert len(plan_chunks(lengths, ChunkPolicy.for_device("cuda"))) == 1
    assert len(plan_chunks(lengths, ChunkPolicy.for_device("cuda", max_tokens=1024))) >= 2


def test_row_over_the_cap_gets_a_call_of_its_own():
    assert plan_chunks([5000, 10, 12], ChunkPolicy(overhead_tokens=32, max_tokens=1024)) == [[1, 2], [0]]
    assert plan_chunks([], ChunkPolicy()) == []
