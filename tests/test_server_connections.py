"""HTTP/1.1 connections are not closed under a request that has reached the server (server/connections.py).

The idle timer's race, made deterministic: connection B has been idle for the keep-alive timeout, the
server's event loop is busy (a long callback runs after its poll for I/O and before B's due timer),
and B's next request lands in the kernel during that callback. uvicorn's own h11 protocol then closes
B with the request unread (the client sees a reset: ``httpx.ReadError``); ``Connection`` sees the
unread bytes and lets the request be read and answered.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from rmserve.server.connections import Connection, H11Connection, HttpToolsConnection
from tests.serving import free_port

KEEP_ALIVE_S = 1


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/block":
        # Busy loop, twice: this callback spans connection B's timer coming due, the next one runs
        # after the loop's following poll for I/O and before that timer, while B's request arrives.
        time.sleep(0.3)
        asyncio.get_running_loop().call_soon(time.sleep, 0.4)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class ServerThread:
    def __init__(self, protocol: type) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, http=protocol, lifespan="off",
                                timeout_keep_alive=KEEP_ALIVE_S, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _request_on_an_expiring_connection(url: str) -> str:
    with httpx.Client(base_url=url) as a, httpx.Client(base_url=url) as b:  # two connections
        assert b.get("/ok").text == "ok"  # B idle from now; its timer is due in KEEP_ALIVE_S
        start = time.monotonic()
        blocker = threading.Thread(target=lambda: a.get("/block"))
        time.sleep(KEEP_ALIVE_S - 0.15)
        blocker.start()  # the loop is busy from ~0.85 s to ~1.15 s, then again to ~1.55 s
        time.sleep(max(0.0, start + KEEP_ALIVE_S + 0.3 - time.monotonic()))
        try:
            return b.get("/ok").text  # ~1.3 s: in the second busy callback, B's timer already due
        except httpx.TransportError as exc:
            return type(exc).__name__
        finally:
            blocker.join()


def test_uvicorn_h11_closes_a_connection_under_its_next_request():
    """The failure, with uvicorn's own protocol (so the fix below is shown to matter)."""
    with ServerThread(H11Protocol) as url:
        outcome = _request_on_an_expiring_connection(url)
    if outcome == "ok":
        pytest.skip("the race did not line up on this run (a slow machine); the fixed case is still checked")
    assert outcome in ("ReadError", "RemoteProtocolError"), outcome


PROTOCOLS = [pytest.param(H11Connection, id="h11"),
             pytest.param(HttpToolsConnection, id="httptools",
                          marks=pytest.mark.skipif(HttpToolsConnection is None, reason="httptools not installed"))]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_answers_a_request_that_arrived_as_its_timer_fired(protocol):
    with ServerThread(protocol) as url:
        assert _request_on_an_expiring_connection(url) == "ok"


def _settled(predicate, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _response(sock: socket.socket) -> bytes:
    """One whole response of ``app`` (its body is ``ok``), however the server split its writes."""
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(1024)
        assert chunk, data
        data += chunk
    return data


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_read_in_part_keeps_its_connection_busy(protocol):
    """The drain closes connections that are not ``busy``: one whose next request the parser has begun
    (headers not complete, nothing left in the kernel) must count as busy, or it is closed under it."""
    thread = ServerThread(protocol)
    with thread as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _response(sock).startswith(b"HTTP/1.1 200")
            connections = thread.server.server_state.connections
            assert _settled(lambda: len(connections) == 1)
            (conn,) = connections
            assert _settled(lambda: not conn.busy()) and not conn.fresh()  # answered, idle
            sock.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Le")  # a next request, in part
            assert _settled(conn.busy)
            time.sleep(0.1)  # the loop has read the bytes into its parser by now: still busy
            assert conn.busy()
            sock.sendall(b"ngth: 2\r\n\r\nhi")
            assert _response(sock).startswith(b"HTTP/1.1 200")
            assert _settled(lambda: not conn.busy())


def test_serve_config_keeps_idle_connections_longer_than_clients():
    """Clients (httpx: 5 s) and proxies (nginx upstream: 60 s) must close idle connections before the server."""
    from rmserve.config import ServerConfig
    from rmserve.server.shutdown import uvicorn_config

    config = uvicorn_config(object(), ServerConfig())
    assert config.http is Connection
    assert Connection is (HttpToolsConnection or H11Connection)  # the C parser whenever it is installed
    assert config.timeout_keep_alive > 60 > httpx.Limits().keepalive_expiry
