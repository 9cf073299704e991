"""bench/cpu_profile.py's readings: per-thread CPU from /proc, and py-spy raw samples folded into request stages."""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time

import pytest

from bench.cpu_profile import stage_shares, thread_cpu, thread_minor_faults, thread_sleeps

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_thread_cpu_charges_the_thread_that_burned_it():
    tid = threading.get_native_id()
    before = thread_cpu(os.getpid())
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass
    after = thread_cpu(os.getpid())
    assert tid in before and after[tid] - before[tid] >= 0.1
    others = sum(after.get(t, 0) - v for t, v in before.items() if t != tid)
    assert others < after[tid] - before[tid]


def test_thread_minor_faults_count_the_pages_this_thread_touched_first():
    tid = threading.get_native_id()
    before = thread_minor_faults(os.getpid())
    fresh = mmap.mmap(-1, 16 << 20)  # new anonymous pages (malloc could hand back memory already mapped)
    for offset in range(0, len(fresh), 4096):
        fresh[offset] = 1  # first touch of each 4 KiB page: a minor fault in this thread
    after = thread_minor_faults(os.getpid())
    fresh.close()
    assert after[tid] - before[tid] >= 1000


def test_thread_sleeps_count_the_times_this_thread_blocked():
    tid = threading.get_native_id()
    before = thread_sleeps(os.getpid())
    for _ in range(50):
        time.sleep(0.0005)  # each sleep blocks the thread: a voluntary context switch
    after = thread_sleeps(os.getpid())
    assert after[tid] - before[tid] >= 50


def test_stage_shares_use_the_innermost_known_frame_and_drop_idle_threads(tmp_path):
    raw = tmp_path / "raw.txt"
    loop = "thread (1): MainThread;run_forever (asyncio/base_events.py:607)"
    raw.write_text("\n".join([
        f"{loop};solve_dependencies (fastapi/dependencies/utils.py:671);validate_json (pydantic/main.py:1) 3",
        f"{loop};cycle (h11/_connection.py:1) 1",
        "thread (2): rmserve-pre_0;encode (rmserve/models/reward_model.py:1);"
        "item_positions (rmserve/models/families.py:1) 2",
        "thread (3): rmserve-worker;score_batch (rmserve/models/reward_model.py:2);"
        "forward (torch/nn/modules/linear.py:1) 4",
        "thread (3): rmserve-worker;_loop (rmserve/engine/engine.py:1);Condition.wait (threading.py:327) 90",
        f"{loop};EpollSelector.select (selectors.py:468) 50",
    ]) + "\n")
    shares = stage_shares(str(raw))
    assert shares == pytest.approx({"forward (model)": 0.4, "JSON parse + pydantic": 0.3, "M-RoPE positions": 0.2,
                                    "HTTP (h11) + ASGI/FastAPI + middleware": 0.1})
