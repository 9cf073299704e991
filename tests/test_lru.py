"""ByteLRU's single flight: callers that miss the same key at the same time share one computation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rmserve.lru import ByteLRU


def test_concurrent_misses_compute_once_and_count_one_miss():
    cache: ByteLRU[str] = ByteLRU(1 << 20)
    calls = []
    start = threading.Barrier(8)

    def compute():
        calls.append(1)
        time.sleep(0.3)  # long enough that every other caller arrives while it runs
        return "value", 5

    def caller(_):
        start.wait()
        return cache.get_or_compute("k", compute)

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(caller, range(8)))
    assert values == ["value"] * 8
    assert len(calls) == 1
    assert (cache.hits, cache.misses) == (7, 1)
    assert cache.get_or_compute("k", compute) == "value" and len(calls) == 1 and cache.hits == 8


def test_a_failed_computation_is_not_shared_the_waiters_compute_themselves():
    cache: ByteLRU[str] = ByteLRU(1 << 20)
    calls = []
    leader_started = threading.Event()

    def compute():
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            leader_started.set()
            time.sleep(0.2)
            raise ValueError("bad input")
        return "value", 5

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.get_or_compute, "k", compute)
        leader_started.wait(5)
        second = pool.submit(cache.get_or_compute, "k", compute)
        with pytest.raises(ValueError):
            first.result(5)
        assert second.result(5) == "value"
    assert len(calls) == 2 and cache.misses == 2 and cache.hits == 0
    assert not cache._flights  # nothing left waiting


def test_values_larger_than_the_cache_are_still_handed_to_every_waiter():
    cache: ByteLRU[str] = ByteLRU(10)
    start = threading.Barrier(4)

    def compute():
        time.sleep(0.2)
        return "huge", 100  # not stored: over the bound

    def caller(_):
        start.wait()
        return cache.get_or_compute("k", compute)

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(caller, range(4))) == ["huge"] * 4
    assert len(cache) == 0 and cache.bytes == 0 and (cache.hits, cache.misses) == (3, 1)
