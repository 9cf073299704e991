"""Steady GRPO load drops nothing (`make test-long`): >= 20,000 requests of the scale-out issue's shape.

The default model, 224x224 PNGs inline, a fresh image every GRPO group (G=8), 64 in flight, small caches
(16 MiB each, so they stay full and evict). Before server/connections.py, 4 of 15,360 such requests ended
with the connection closed and no response (uvicorn's idle timer firing as the client reused the
connection); every request must now be answered, with no transport error and no non-200.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.steady import grpo_load
from rmserve.models import default_model_path
from tests.ops import rmserve_process

SMALL_CACHES = ["--image-cache-mb", "16", "--vision-cache-mb", "16", "--prompt-cache-mb", "16"]


@pytest.mark.long
def test_20000_requests_of_steady_grpo_image_load_without_a_transport_error():
    with rmserve_process(default_model_path(), *SMALL_CACHES, "--max-queue-items", "1024") as server:
        result = asyncio.run(grpo_load(
            [server.url], requests=20_000, concurrency=64, group_size=8, image_size=224, sample_every_s=30,
            on_sample=lambda t, r: print(f"  {t:6.0f} s: {r.ok} ok, {len(r.transport_errors)} transport errors, "
                                         f"{dict(r.statuses)}", flush=True),
        ))
        log = server.log()
    print(f"steady load: {result.requests} requests in {result.seconds:.0f} s ({result.throughput:.1f}/s), "
          f"{result.ok} ok, p50 {result.p(50):.2f} s, p99 {result.p(99):.2f} s, "
          f"{len(result.transport_errors)} transport errors, other statuses {dict(result.statuses)}")
    assert result.requests >= 20_000
    assert not result.transport_errors, result.transport_errors[:10]
    assert result.ok == result.requests, dict(result.statuses)
    assert "Traceback" not in log, log[-3000:]
