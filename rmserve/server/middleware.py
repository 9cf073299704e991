"""Pure-ASGI middleware: request metrics (outermost, so every response is counted), a body limit, API keys."""

from __future__ import annotations

import hmac
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rmserve.server.errors import error_response
from rmserve.server.metrics import Metrics


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before responding, the client sees a 500
        start = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # The route template (not the raw path) keeps label cardinality bounded.
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - start)


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


# Probes and scrapes stay open: orchestrators and Prometheus carry no API key.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"})


def api_key_matches(header: str | None, api_key: str) -> bool:
    """``Authorization: Bearer <key>`` (or the bare key) equals ``api_key``, compared in constant time."""
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    given = token.strip() if scheme.lower() == "bearer" and token else header.strip()
    return hmac.compare_digest(given.encode(), api_key.encode())


class ApiKeyMiddleware:
    """401 in the standard error shape unless the request carries the configured API key
    (``Authorization: Bearer <key>`` or ``x-api-key: <key>``); OPEN_PATHS need none."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {key: value for key, value in scope.get("headers", ()) if key in (b"authorization", b"x-api-key")}
        given = headers.get(b"authorization") or headers.get(b"x-api-key")
        if not api_key_matches(given.decode("latin-1") if given else None, self.api_key):
            message = "missing API key" if given is None else "invalid API key"
            response = error_response(
                401,
                f"{message}; send `Authorization: Bearer <key>`",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
