"""Steady GRPO load with fresh images, over plain httpx (so every transport error is seen, not retried).

The shape of the scale-out issue's runs: G responses per prompt, one per request, a fresh WxH PNG per
group sent inline (base64), ``concurrency`` requests in flight (``concurrency / G`` groups at a time,
each sending its G requests at once). ``targets`` are base URLs; a group goes to one of them (round
robin by group), with ``x-rmserve-group`` set unless ``routing_key`` is off. Used by
tests/test_steady_load.py (>= 20,000 requests, zero transport errors), ``make soak`` (bench/soak.py)
and the replica benchmark (bench/replicas.py).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from PIL import Image
from rmserve_client._base import ROUTING_HEADER
from rmserve_client._base import routing_key as key_of
from rmserve_client._images import load_image


def fresh_png(size: int, seed: int) -> bytes:
    """A noise image (does not compress: ~3 bytes a pixel, like a photo); a new one for every seed."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class LoadResult:
    ok: int = 0
    statuses: Counter = field(default_factory=Counter)  # non-200 answers by status
    transport_errors: list[str] = field(default_factory=list)  # no answer at all (what must never happen)
    latencies_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (elapsed s, responses so far)

    @property
    def requests(self) -> int:
        return self.ok + sum(self.statuses.values()) + len(self.transport_errors)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def grpo_load(
    targets: Sequence[str],
    *,
    requests: int | None = None,
    seconds: float | None = None,
    concurrency: int = 64,
    group_size: int = 8,
    image_size: int = 224,
    seed: int = 0,
    routing_key: bool = True,
    sample_every_s: float = 5.0,
    on_sample: Callable[[float, LoadResult], None] | None = None,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send GRPO groups until ``requests`` were sent or ``seconds`` passed (whichever is given first)."""
    if requests is None and seconds is None:
        raise ValueError("give requests or seconds")
    result = LoadResult()
    groups_at_once = max(1, concurrency // group_size)
    next_group = 0
    start = time.perf_counter()

    def more() -> bool:
        if requests is not None and next_group * group_size >= requests:
            return False
        return seconds is None or time.perf_counter() - start < seconds

    clients = [httpx.AsyncClient(base_url=t, timeout=timeout_s) for t in targets]  # httpx's default pool

    async def one(client: httpx.AsyncClient, body: bytes, headers: dict) -> None:
        sent = time.perf_counter()
        try:
            r = await client.post("/v1/score", content=body, headers=headers)
        except httpx.HTTPError as exc:
            result.transport_errors.append(f"{type(exc).__name__}: {exc!r}")
            return
        if r.status_code == 200:
            result.ok += 1
            result.latencies_s.append(time.perf_counter() - sent)
        else:
            result.statuses[r.status_code] += 1

    async def group_worker() -> None:
        nonlocal next_group
        while more():
            g, next_group = next_group, next_group + 1
            png = await asyncio.to_thread(fresh_png, image_size, seed * 1_000_003 + g)
            image = "data:image/png;base64," + base64.b64encode(png).decode()
            prompt = f"Group {g}: what is in the image? Answer in one sentence."
            headers = {"content-type": "application/json"}
            if routing_key:  # what rmserve-client sends: a hash of the prompt side
                headers[ROUTING_HEADER] = key_of({"items": [{"prompt": prompt, "images": [load_image(png)]}]})
            client = clients[g % len(clients)]
            items = [{"prompt": prompt, "images": [image], "response": f"Response {i} of group {g}."}
                     for i in range(group_size)]
            bodies = [json.dumps({"items": [item]}, separators=(",", ":")).encode() for item in items]
            await asyncio.gather(*(one(client, body, headers) for body in bodies))

    async def sampler() -> None:
        while True:
            await asyncio.sleep(sample_every_s)
            result.timeline.append((time.perf_counter() - start, result.ok))
            if on_sample is not None:
                on_sample(time.perf_counter() - start, result)

    sampling = asyncio.create_task(sampler())
    try:
        await asyncio.gather(*(group_worker() for _ in range(groups_at_once)))
    finally:
        sampling.cancel()
        result.seconds = time.perf_counter() - start
        result.timeline.append((result.seconds, result.ok))
        for client in clients:
            await client.aclose()
    return result
