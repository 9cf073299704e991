"""HTTP/1.1 connections that are never closed under a request the server has received.

A server closes a keep-alive connection in two places: its idle timer, and shutdown. Both used to race
a client's next request (issue: scale-out, items 5 and 6):

- **Idle timer.** uvicorn closes a connection ``timeout_keep_alive`` seconds after its last response.
  Its default (5 s) equals httpx's idle expiry (5 s), so a client could pick a connection from its
  pool and send on it just as the server closed it: the request is lost without a response
  (``httpx.ReadError``), a few per ten thousand under steady GRPO load. The fix is the usual one for
  keep-alive: the server waits longer than any client or proxy in front of it (``--keep-alive-timeout-s``,
  75 s: httpx 5 s, nginx's upstream ``keepalive_timeout`` 60 s, HAProxy's pool purge 5 s), so the
  client side closes idle connections first. ``Connection`` also never closes on the timer while bytes
  of a next request are waiting to be read.
- **Shutdown.** uvicorn's shutdown closed the listening socket (connections still in the kernel's
  accept queue are reset) and every connection without a request in progress, including those whose
  request had arrived but was not parsed yet: a burst followed by SIGTERM lost most of the burst.
  ``close_listeners`` accepts what is queued before the socket goes; ``busy`` tells the drain
  (server/shutdown.py) which connections still owe an answer, and ``fresh`` which were opened for a
  request that has not arrived yet (a client connects, then sends: the drain waits a moment for it).

What is left is the race no HTTP/1.1 server can close: a request still on the wire when an idle
connection is closed. Clients retry those (scoring is idempotent; the rmserve client does).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import struct
import termios
from collections.abc import Callable, Iterable

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the C parser (a dependency, but a platform without its wheel still serves, on h11)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None

log = logging.getLogger("rmserve.connections")


def unread_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes received by the kernel on this connection that the server has not read yet (FIONREAD)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):  # already closed
        return 0


class _AnswersWhatArrived:
    """What both protocols add: ``busy``, ``fresh``, and an idle timer that yields to a request."""

    transport: asyncio.Transport | None
    cycle: object

    def _next_request_started(self) -> bool:
        """Part of a next request has been read into the parser (or a whole one is queued behind this one)."""
        raise NotImplementedError

    def busy(self) -> bool:
        """A request on it is being read or answered, or bytes of one are waiting (in the parser or the kernel)."""
        if self.transport is None or self.transport.is_closing():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return True
        if self._next_request_started():
            return True
        return unread_bytes(self.transport) > 0

    def fresh(self) -> bool:
        """Open, and no request has arrived on it yet (clients connect, then send: one is coming)."""
        return self.cycle is None and self.transport is not None and not self.transport.is_closing()

    def timeout_keep_alive_handler(self) -> None:
        if self.busy():  # the next request is here: data_received takes it (and re-arms the timer later)
            self.timeout_keep_alive_task = None
            return
        super().timeout_keep_alive_handler()  # type: ignore[misc]


class H11Connection(_AnswersWhatArrived, H11Protocol):
    """uvicorn's pure-Python h11 protocol (used when httptools is not installed)."""

    def _next_request_started(self) -> bool:
        return bool(self.conn.trailing_data[0])  # parsed on the next data_received


HttpToolsConnection: type[asyncio.Protocol] | None = None
if HttpToolsProtocol is not None:

    class HttpToolsConnection(_AnswersWhatArrived, HttpToolsProtocol):
        """uvicorn's httptools protocol: with the C parser the event loop spends ~17% less CPU per request than
        on h11 (bench/README.md, "The C HTTP parser")."""

        _receiving = False  # a request's first bytes were parsed, its headers are not complete yet

        def on_message_begin(self) -> None:
            self._receiving = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._receiving = False  # from here its cycle (current or pipelined) says it is in progress
            super().on_headers_complete()

        def _next_request_started(self) -> bool:
            return self._receiving or bool(self.pipeline)


Connection: type[asyncio.Protocol] = HttpToolsConnection or H11Connection


def busy(connection: object) -> bool:
    """``Connection.busy`` for any uvicorn protocol; one without the check counts as busy while it is in a request."""
    check = getattr(connection, "busy", None)
    if check is not None:
        return bool(check())
    cycle = getattr(connection, "cycle", None)
    return cycle is not None and not cycle.response_complete


def fresh(connection: object) -> bool:
    """``Connection.fresh`` for any uvicorn protocol (false for one without the check)."""
    check = getattr(connection, "fresh", None)
    return bool(check()) if check is not None else False


async def close_listeners(
    servers: Iterable[asyncio.Server], protocol: Callable[[], asyncio.Protocol], *, ssl: object = None,
    timeout_s: float = 5.0,
) -> int:
    """Stop listening without resetting connections the kernel has already accepted.

    Closing a listening socket resets the connections in its accept queue, requests included. So each
    socket is held open by a duplicate while asyncio stops serving it, the queue is emptied into
    ``protocol`` connections (they are answered like any other: while draining, 503 + Connection: close),
    and only then is the socket closed. Returns how many queued connections were taken in; ``timeout_s``
    bounds their TLS handshakes.
    """
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    for server in servers:
        for listener in server.sockets:
            held.append(socket.socket(fileno=os.dup(listener.fileno())))
        server.close()
    accepted = []
    for sock in held:
        sock.setblocking(False)
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the socket is gone: nothing queued to take in
                break
            accepted.append(loop.connect_accepted_socket(protocol, conn, ssl=ssl))
        sock.close()
    if accepted:
        done, pending = await asyncio.wait([asyncio.ensure_future(a) for a in accepted], timeout=max(0.1, timeout_s))
        for task in pending:
            task.cancel()
        failed = [t for t in done if t.exception() is not None] + list(pending)
        if failed:
            log.warning("%d of %d queued connections could not be taken in", len(failed), len(accepted))
    return len(accepted)


def close_idle(connections: Iterable[asyncio.Protocol]) -> int:
    """Close every connection that owes no answer (``busy`` is false); returns how many were closed."""
    closed = 0
    for connection in list(connections):
        transport = getattr(connection, "transport", None)
        if transport is None or transport.is_closing() or busy(connection):
            continue
        try:
            connection.shutdown()  # uvicorn's: closes a connection between requests
        except Exception:  # h11 refusing the close event: the transport goes anyway
            transport.close()
        closed += 1
    return closed


__all__ = ["Connection", "H11Connection", "HttpToolsConnection", "busy", "close_idle", "close_listeners", "fresh",
           "unread_bytes"]
