"""Pure-ASGI middleware, outermost first: request context (id, in-flight, metrics, access log), API keys,
a body limit.

``RequestContextMiddleware`` is outermost so that every response, a 401 or 413 included, is counted,
logged and carries ``x-request-id`` (the client's, if sane, else a new one; see server/logs.py).
While the server drains, responses also carry ``Connection: close``: clients move their keep-alive
connections elsewhere before the listeners close, instead of racing the close.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rmserve.errors import Unauthenticated
from rmserve.server.errors import error_response, rmserve_error_response
from rmserve.server.logs import request_id, request_id_var

if TYPE_CHECKING:
    from rmserve.server.state import AppState

access_log = logging.getLogger("rmserve.access")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, state: AppState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid = request_id(given.decode("latin-1") if given is not None else None)
        token = request_id_var.set(rid)
        state, status = self.state, 500  # if the app raises before responding, the client sees a 500
        start = time.perf_counter()
        counted = state.inflight.begin("http")

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", rid.encode("latin-1")))
                if state.draining:
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            state.inflight.end("http", counted)
            seconds = time.perf_counter() - start
            # The route template (not the raw path) keeps label cardinality bounded.
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            state.metrics.observe_request(endpoint, scope["method"], status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    seconds * 1000,
                    extra={"method": scope["method"], "path": scope["path"], "status": status,
                           "duration_ms": round(seconds * 1000, 2)},
                )
            request_id_var.reset(token)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_body_bytes``: from Content-Length before reading anything, else
    while streaming (chunked uploads), by raising ``BodyTooLarge`` out of ``receive`` so the
    request's own error handling turns it into the standard 413 error body."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            response = error_response(
                413, BodyTooLarge(self.limit).detail, "invalid_request_error", code="body_too_large"
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# Probes and scrapes stay open: orchestrators and Prometheus carry no API key. Everything else,
# the docs and the OpenAPI schema included, needs one (tests/test_ops_auth.py walks the route table).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def api_key_matches(header: str | None, api_keys: Sequence[str]) -> bool:
    """``Authorization: Bearer <key>`` (or the bare key) is one of ``api_keys``.

    Constant time: the given key is compared with every configured key (no early exit on a match),
    as fixed-length sha256 digests, so neither which key matched nor any key's length leaks.
    """
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    given = _digest(token.strip() if scheme.lower() == "bearer" and token else header.strip())
    matched = False
    for key in api_keys:
        matched |= hmac.compare_digest(given, _digest(key))
    return matched


def require_api_key(given: str | None, api_keys: Sequence[str], how: str) -> None:
    """Raise ``Unauthenticated`` unless ``given`` (the request's credential, None: none sent) is one of
    ``api_keys``; ``how`` tells the caller how to send one. REST (``ApiKeyMiddleware``) and gRPC (``CallGate``)
    both call this, and the one error table (rmserve/errors.py) turns it into 401 / UNAUTHENTICATED."""
    if not api_key_matches(given, api_keys):
        message = "missing API key" if given is None else "invalid API key"
        raise Unauthenticated(f"{message}; send {how}", code="invalid_api_key")


class ApiKeyMiddleware:
    """401 in the standard error shape unless the request carries one of the configured API keys
    (``Authorization: Bearer <key>`` or ``x-api-key: <key>``); OPEN_PATHS need none."""

    def __init__(self, app: ASGIApp, api_keys: Sequence[str]):
        self.app = app
        self.api_keys = tuple(api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {key: value for key, value in scope.get("headers", ()) if key in (b"authorization", b"x-api-key")}
        given = headers.get(b"authorization") or headers.get(b"x-api-key")
        try:
            require_api_key(given.decode("latin-1") if given else None, self.api_keys,
                            "`Authorization: Bearer <key>`")
        except Unauthenticated as exc:  # before routing: FastAPI's exception handlers do not see it
            await rmserve_error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)
