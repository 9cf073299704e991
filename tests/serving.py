"""Helpers for server tests: an app with the fake model, an in-process client, a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import uvicorn

from rmserve.config import ServerConfig
from rmserve.server import create_app
from tests.fakes import FakeRewardModel


def make_app(model: FakeRewardModel | None = None, **config):
    config.setdefault("max_wait_ms", 2.0)
    config.setdefault("preprocess_workers", 2)
    return create_app(ServerConfig(**config), model=model or FakeRewardModel())


async def wait_ready(client: httpx.AsyncClient, timeout: float = 10.0, status: int = 200) -> None:
    """Until /readyz answers ``status`` (200: ready; 503: draining after a SIGTERM)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (await client.get("/readyz")).status_code == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"/readyz did not answer {status} within {timeout} s")


@asynccontextmanager
async def asgi_client(app, *, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rmserve.test") as client:
            if ready:
                await wait_ready(client)
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_server(app) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
