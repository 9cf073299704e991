"""Graceful shutdown on SIGTERM / SIGINT: readiness off first, then drain, then close, then exit 0.

    first signal    1. readiness off: /readyz 503, gRPC health NOT_SERVING; new work is refused with
                       503 + Retry-After (gRPC UNAVAILABLE + retry-after), never dropped; responses carry
                       `Connection: close`
                    2. listeners stay open for ``shutdown_delay_s`` (load balancers see the readiness change)
                    3. work admitted before the signal finishes, up to ``drain_timeout_s``
                    4. the listeners close; connections the kernel had already queued are taken in
                       first, and every request that reached the server is answered (admitted: its
                       reward; later: 503) before its connection closes (server/connections.py)
                    5. idle connections close; the app's lifespan stops gRPC and the engines. Only
                       work still running when the budget is spent is cut off (its connection or
                       call is closed; a warning names what was left)
                    6. the process exits 0
    second signal   exit now (uvicorn's force_exit)

Why not uvicorn's own handling: it closes the listening sockets at the first signal (readiness never
reads 503, load balancers see refused connections), waits for connections up to a graceful timeout
and only then runs the lifespan shutdown (a second drain budget: up to twice ``drain_timeout_s`` in
all; gRPC, stopped in the lifespan, kept reporting SERVING meanwhile), and re-raises the signal after
a clean shutdown, so the exit status was 143. ``Server`` keeps uvicorn's loop and replaces only its
signal capture.

``InFlight`` (server/inflight.py) counts the admitted work step 3 waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Generator

import uvicorn

from rmserve.server.connections import Connection, busy, close_idle, close_listeners, fresh
from rmserve.server.inflight import InFlight
from rmserve.server.state import AppState

log = logging.getLogger("rmserve.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_S = 0.02
# A connection opened before the listeners closed whose request has not arrived yet: how long the
# drain waits for that request (to answer it) before closing the connection anyway.
FIRST_REQUEST_GRACE_S = 2.0


async def drain(state: AppState, *, delay_s: float, timeout_s: float) -> bool:
    """Readiness off and new work refused, wait ``delay_s``, then for admitted work (up to ``timeout_s``).

    Returns whether everything admitted finished in time.
    """
    await state.begin_drain(delay_s + timeout_s)
    if delay_s:
        await asyncio.sleep(delay_s)
    while not state.idle():
        if time.monotonic() >= (state.drain_deadline or 0.0):
            log.warning("drain budget spent with work in flight: %s", state.describe_work())
            return False
        await asyncio.sleep(POLL_S)
    return True


class Server(uvicorn.Server):
    """uvicorn's server with rmserve's signal handling (the module docstring has the sequence)."""

    def __init__(self, config: uvicorn.Config, state: AppState):
        super().__init__(config)
        self.state = state
        self._draining: asyncio.Task | None = None
        self.signals: list[int] = []  # received, for tests and logs

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.handle_signal, sig)
        try:
            yield
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    def handle_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if self._draining is not None or self.should_exit:
            log.warning("second %s: exiting now", signal.Signals(sig).name)
            self.should_exit = self.force_exit = True
            return
        config = self.state.config
        log.info(
            "%s: readiness off, draining (delay %.1fs, budget %.1fs)",
            signal.Signals(sig).name, config.shutdown_delay_s, config.drain_timeout_s,
        )
        self._draining = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        config = self.state.config
        try:
            await drain(self.state, delay_s=config.shutdown_delay_s, timeout_s=config.drain_timeout_s)
        except Exception:  # never leave the process up because the drain itself failed
            log.exception("drain failed; shutting down")
        try:
            await self._close_connections()
        except Exception:
            log.exception("closing connections failed; shutting down")
        # uvicorn's own wait for open connections gets only what is left of the budget.
        self.config.timeout_graceful_shutdown = max(0.1, self.state.drain_left())
        self.should_exit = True

    async def _close_connections(self) -> None:
        """Steps 4-5: stop listening without dropping queued connections, answer what reached the server,
        then close the idle connections (uvicorn's shutdown would close those with unread requests)."""
        def protocol() -> asyncio.Protocol:
            return self.config.http_protocol_class(
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state
            )

        taken = await close_listeners(
            getattr(self, "servers", ()), protocol, ssl=self.config.ssl, timeout_s=self.state.drain_left()
        )
        if taken:
            log.info("took in %d queued connections before closing the listeners", taken)
        first_request_by = time.monotonic() + FIRST_REQUEST_GRACE_S
        while True:
            connections = self.server_state.connections
            waiting_for = [c for c in connections if busy(c) or (fresh(c) and time.monotonic() < first_request_by)]
            if not waiting_for:
                break
            if self.state.drain_left() <= 0:
                log.warning("drain budget spent with requests being answered on %d connections", len(waiting_for))
                return
            await asyncio.sleep(POLL_S)
        close_idle(self.server_state.connections)  # no await since the check: nothing arrived in between


def uvicorn_config(app, config) -> uvicorn.Config:
    """uvicorn settings for a ``ServerConfig``: TLS, no access log of its own (ours has request ids),
    logging left as ``configure_logging`` set it, h11 connections that are not closed under a request
    and an idle timeout longer than clients' and proxies' (server/connections.py)."""
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        log_config=None,
        access_log=False,
        ssl_certfile=config.tls_cert,
        ssl_keyfile=config.tls_key,
        timeout_graceful_shutdown=max(0.1, config.drain_timeout_s),
        http=Connection,
        timeout_keep_alive=config.keep_alive_timeout_s,
    )


def serve(app, config) -> int:
    """Run ``app`` (from ``create_app(config)``) until a signal has drained it; the exit status."""
    server = Server(uvicorn_config(app, config), app.state.rmserve)
    server.run()
    if not server.started:  # could not bind, or the lifespan failed at startup
        return 1
    return 0


__all__ = ["InFlight", "Server", "drain", "serve", "uvicorn_config"]
