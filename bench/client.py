"""The load driver: POST /v1/score, one item per request, a fixed number in flight.

Requests go out in groups: a group's requests are sent together once that many slots are free
(singles are groups of one, so that is a plain concurrency limit; a GRPO group's G responses go
out at the same moment, and groups follow one another as a trainer's rollouts finish). The
clock runs from the first send to the last answer; latency is per request, send to answer.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

HEADERS = {"content-type": "application/json"}


@dataclass
class LoadResult:
    responses: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    rewards: list[float | None] = field(default_factory=list)  # in request order; None = failed
    errors: list[str] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)  # rmserve's x-queue-time-ms header, where sent
    inference_ms: list[float] = field(default_factory=list)  # rmserve's x-inference-time-ms header

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def responses_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict:
        return {
            "responses": self.responses, "ok": self.ok, "errors": len(self.errors), "seconds": self.seconds,
            "responses_per_s": self.responses_per_s, "p50_ms": self.percentile(50), "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99), "max_ms": max(self.latencies_ms, default=None),
            "mean_ms": statistics.fmean(self.latencies_ms) if self.latencies_ms else None,
            "server_queue_ms_mean": statistics.fmean(self.queue_ms) if self.queue_ms else None,
            "server_inference_ms_mean": statistics.fmean(self.inference_ms) if self.inference_ms else None,
            "first_errors": self.errors[:3],
        }


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Slots:
    """A counting semaphore whose ``acquire(k)`` takes k slots at once (a whole group, or nothing)."""

    def __init__(self, n: int):
        self.free = n
        self._cond = asyncio.Condition()

    async def acquire(self, k: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= k)
            self.free -= k

    async def release(self) -> None:
        async with self._cond:
            self.free += 1
            self._cond.notify_all()


# What one request came back with: (reward, {header: value}) on success; a failure raises SendFailed.
Sent = tuple[float, dict[str, str]]


class SendFailed(Exception):
    """A request that got an answer other than a reward (HTTP status / gRPC code and the message)."""


async def drive_with(send, groups: list[list], *, concurrency: int = 64) -> LoadResult:
    """Send every body with ``send(body) -> Sent``; at most ``concurrency`` in flight, each group together.

    The transport-neutral core of the load drivers (REST: ``drive``; gRPC: bench/grpc_client.py)."""
    biggest = max((len(g) for g in groups), default=1)
    if biggest > concurrency:
        raise ValueError(f"a group of {biggest} cannot be sent together with concurrency {concurrency}")
    n = sum(len(g) for g in groups)
    latencies: list[float | None] = [None] * n
    rewards: list[float | None] = [None] * n
    errors: list[str] = []
    queue_ms: list[float] = []
    inference_ms: list[float] = []
    slots = Slots(concurrency)

    async def one(index: int, body) -> None:
        try:
            sent = time.perf_counter()
            reward, headers = await send(body)
            latencies[index] = (time.perf_counter() - sent) * 1000
            rewards[index] = reward
            if "x-queue-time-ms" in headers:
                queue_ms.append(float(headers["x-queue-time-ms"]))
                inference_ms.append(float(headers.get("x-inference-time-ms", "nan")))
        except SendFailed as exc:
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001  (any transport failure is a failed request, counted)
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await slots.release()

    tasks = []
    index = 0
    start = time.perf_counter()
    for group in groups:
        await slots.acquire(len(group))
        for body in group:
            tasks.append(asyncio.create_task(one(index, body)))
            index += 1
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    return LoadResult(responses=n, seconds=seconds, latencies_ms=[x for x in latencies if x is not None],
                      rewards=rewards, errors=errors, queue_ms=queue_ms, inference_ms=inference_ms)


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client: pre-encoded POSTs, Content-Length answers, nothing else.

    httpx spends ~1-3 ms of CPU per request; on a 2-core machine that makes the load generator,
    not the server, the bottleneck of any server faster than ~200 r/s (the no-model floor). This one
    writes a prebuilt header block and parses only the status line, the headers and the body length,
    so the client's cost stays small beside any server's. One connection per request in flight."""

    def __init__(self, base_url: str, timeout_s: float):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: set[asyncio.StreamWriter] = set()

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        self._open.add(conn[1])
        try:
            result = await asyncio.wait_for(self._exchange(conn, path, body), self.timeout_s)
        except BaseException:
            conn[1].close()
            self._open.discard(conn[1])
            raise
        if result[1].get("connection", "").lower() == "close":
            conn[1].close()
            self._open.discard(conn[1])
        else:
            self._idle.append(conn)
        return result

    async def _exchange(self, conn, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = conn
        writer.write(f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise SendFailed(f"HTTP {status} without Content-Length (this client reads no chunked bodies)")
        return status, headers, await reader.readexactly(int(headers["content-length"]))

    async def aclose(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()
        self._idle.clear()


async def drive(base_url: str, groups: list[list[bytes]], *, concurrency: int = 64, path: str = "/v1/score",
                timeout_s: float = 600.0, client: str = "raw") -> LoadResult:
    """POST every JSON body; at most ``concurrency`` requests in flight, each group's requests together.

    ``client``: "raw" (RawHTTP, a light load generator) or "httpx" (a general-purpose client)."""
    if client == "raw":
        raw = RawHTTP(base_url, timeout_s)

        async def send(body: bytes) -> Sent:
            status, headers, content = await raw.post(path, body)
            if status != 200:
                raise SendFailed(f"HTTP {status}: {content[:300].decode(errors='replace')}")
            return json.loads(content)["items"][0]["reward"], headers

        try:
            return await drive_with(send, groups, concurrency=concurrency)
        finally:
            await raw.aclose()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s) as http:

        async def send_httpx(body: bytes) -> Sent:
            response = await http.post(path, content=body, headers=HEADERS)
            if response.status_code != 200:
                raise SendFailed(f"HTTP {response.status_code}: {response.text[:300]}")
            return response.json()["items"][0]["reward"], response.headers

        return await drive_with(send_httpx, groups, concurrency=concurrency)


def split_groups(groups: list[list], size: int) -> list[list]:
    """Groups cut into pieces of at most ``size`` (a group bigger than the concurrency goes out in parts)."""
    return [group[i:i + size] for group in groups for i in range(0, len(group), size)]


__all__ = ["LoadResult", "SendFailed", "drive", "drive_with", "percentile", "split_groups"]
