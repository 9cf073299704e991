"""REST transports (httpx): one operation name -> one route; JSON in, JSON out, errors -> exceptions.

The pure helpers (``encode_body``, ``headers_for``, ``raise_for_status``, ``iter_events``) are shared
by the sync and async transports, which differ only in the awaits. An httpx transport can be
injected (``httpx.MockTransport`` in tests, no network).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import httpx

from rmserve_client import __version__
from rmserve_client._base import ROUTING_HEADER
from rmserve_client._images import ImageData, ImageRef
from rmserve_client.exceptions import (
    DeadlineExceeded,
    RMServeError,
    TransportError,
    error_for_http,
    error_for_type,
)

ROUTES = {
    "score": ("POST", "/v1/score"),
    "compare": ("POST", "/v1/compare"),
    "rank": ("POST", "/v1/rank"),
    "critique": ("POST", "/v1/critique"),
    "safety": ("POST", "/v1/safety"),
    "upload_image": ("POST", "/v1/images"),
    "models": ("GET", "/v1/models"),
    "get_reward": ("POST", "/get_reward"),  # OpenRLHF's remote-RM shape
}
USER_AGENT = f"rmserve-client/{__version__}"


def _json_default(value: Any) -> Any:
    if isinstance(value, ImageData):
        return value.data_url()
    if isinstance(value, ImageRef):
        return {"sha256": value.sha256}
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def encode_request(op: str, body: Mapping[str, Any] | None) -> tuple[bytes | None, str]:
    """The request body and its content type. Uploads go as the raw file bytes (no base64)."""
    if body is None:
        return None, "application/json"
    if op == "upload_image":
        return body["data"].data, "application/octet-stream"
    return encode_body(body), "application/json"


def encode_body(body: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(body, default=_json_default, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:  # NaN / inf in a number field
        raise RMServeError(f"request is not valid JSON: {exc}") from None


def headers_for(
    api_key: str | None,
    timeout: float | None,
    extra: Mapping[str, str] | None = None,
    content_type: str = "application/json",
    *,
    route: str | None = None,
) -> dict[str, str]:
    headers = {"content-type": content_type, "user-agent": USER_AGENT, **(extra or {})}
    if route:
        headers[ROUTING_HEADER] = route
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if timeout is not None:
        # The server drops work still queued when this passes (so an abandoned call costs no compute).
        headers["x-request-timeout-ms"] = str(max(1, math.floor(timeout * 1000)))
    return headers


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    error: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict):
            error = body.get("error") if isinstance(body.get("error"), dict) else {"message": body.get("detail")}
    except ValueError:
        pass
    message = error.get("message") or response.text[:500] or response.reason_phrase or "request failed"
    cls = error_for_http(response.status_code)
    raise cls(
        str(message),
        status=response.status_code,
        type=error.get("type"),
        param=error.get("param"),
        code=error.get("code"),
        retry_after=retry_after(response.headers.get("retry-after")),
    )


def iter_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events (``data: {...}``, ended by ``data: [DONE]``) or JSON lines -> dicts."""
    for line in lines:
        line = line.strip()
        if not line or line.startswith((":", "event:", "id:", "retry:")):
            continue
        if line.startswith("data:"):
            line = line[5:].strip()
        if line == "[DONE]":
            return
        event = json.loads(line)
        if isinstance(event, dict) and isinstance(event.get("error"), dict):
            err = event["error"]  # a failure after the stream started: `event: error` + the error body
            raise error_for_type(err.get("type"))(
                err.get("message") or "stream failed",
                type=err.get("type"),
                param=err.get("param"),
                code=err.get("code"),
            )
        yield event


def _transport_error(exc: Exception, timeout: float | None) -> RMServeError:
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"no answer within the {timeout:.3g} s timeout" if timeout else "timed out")
    return TransportError(f"{type(exc).__name__}: {exc}")


class HTTPTransport:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,
    ):
        self.api_key = api_key
        self.headers = dict(headers or {})
        self._client = httpx.Client(base_url=url, transport=transport, verify=verify, timeout=None)

    def request(
        self, op: str, body: Mapping[str, Any] | None, *, timeout: float | None, route: str | None = None
    ) -> dict[str, Any]:
        method, path = ROUTES[op]
        content, content_type = encode_request(op, body)
        headers = headers_for(self.api_key, timeout, self.headers, content_type, route=route)
        try:
            response = self._client.request(method, path, content=content, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, timeout) from None
        raise_for_status(response)
        return response.json()

    def stream(
        self, op: str, body: Mapping[str, Any], *, timeout: float | None, route: str | None = None
    ) -> Iterator[dict[str, Any]]:
        method, path = ROUTES[op]
        headers = headers_for(self.api_key, timeout, {**self.headers, "accept": "text/event-stream"}, route=route)
        try:
            with self._client.stream(
                method, path, content=encode_body({**body, "stream": True}), headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_status(response)
                yield from iter_events(response.iter_lines())
        except httpx.HTTPError as exc:
            raise _transport_error(exc, timeout) from None

    def close(self) -> None:
        self._client.close()


class AsyncHTTPTransport:
    """Like HTTPTransport; the httpx.AsyncClient is made in (and kept for) the event loop that uses it,
    since its connections belong to one loop (TRL, for one, runs async reward functions on its own loop)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ):
        self.url = url
        self.api_key = api_key
        self.headers = dict(headers or {})
        self._transport = transport
        self._verify = verify
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.url, transport=self._transport, verify=self._verify, timeout=None
            )
            self._loop = loop
        return self._client

    async def request(
        self, op: str, body: Mapping[str, Any] | None, *, timeout: float | None, route: str | None = None
    ) -> dict[str, Any]:
        method, path = ROUTES[op]
        content, content_type = encode_request(op, body)
        headers = headers_for(self.api_key, timeout, self.headers, content_type, route=route)
        try:
            response = await self._get().request(method, path, content=content, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, timeout) from None
        raise_for_status(response)
        return response.json()

    async def stream(
        self, op: str, body: Mapping[str, Any], *, timeout: float | None, route: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        method, path = ROUTES[op]
        headers = headers_for(self.api_key, timeout, {**self.headers, "accept": "text/event-stream"}, route=route)
        try:
            async with self._get().stream(
                method, path, content=encode_body({**body, "stream": True}), headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_status(response)
                async for line in response.aiter_lines():
                    if line.strip() in ("data: [DONE]", "[DONE]"):
                        return
                    for event in iter_events([line]):
                        yield event
        except httpx.HTTPError as exc:
            raise _transport_error(exc, timeout) from None

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
