"""Errors shared by every layer, each mapped once to an HTTP and a gRPC status.

    RMServeError
     ├── InvalidInput        bad request content; names the offending field   (422 / INVALID_ARGUMENT)
     ├── Unauthenticated     missing or wrong API key                          (401 / UNAUTHENTICATED)
     ├── Overloaded          admission queue full; retry later                 (429 / RESOURCE_EXHAUSTED)
     ├── DeadlineExceeded    the request's deadline passed before it ran       (504 / DEADLINE_EXCEEDED)
     ├── NotReady            model not loaded / server draining; retry later   (503 / UNAVAILABLE)
     └── BackendError        the forward pass failed for this request          (500 / INTERNAL)

The transports (REST, gRPC) translate these; nothing below them knows about HTTP.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

Loc = tuple[str | int, ...]  # a field's location in a request: ("items", 3, "images", 0)
Param = str | Loc  # as given to an error: a dotted path, or the location itself


def parse_param(param: Param | None) -> Loc:
    """``"items.3.images.0"`` -> ``("items", 3, "images", 0)``; a location is returned as it is."""
    if param is None:
        return ()
    if isinstance(param, tuple):
        return param
    return tuple(int(part) if part.isdigit() else part for part in param.split(".") if part)


def format_loc(loc: Loc) -> str | None:
    """``("items", 3, "images", 0)`` -> ``"items.3.images.0"``; ``()`` -> None."""
    return ".".join(map(str, loc)) or None


@dataclass(frozen=True)
class FieldMessage:
    """A message that names the field it is about, rendered with the error's *current* location, so an
    error moved to another place in the request (``relocated``, ``within``) still tells the truth."""

    before: str
    after: str
    bare: str  # the message when the error has no location

    def render(self, param: str | None) -> str:
        return f"{self.before}{param}{self.after}" if param else self.bare


class RMServeError(Exception):
    """Base error. Its location is structured: ``loc`` (``("items", 3, "images", 0)``) relative to
    ``item`` when the engine set one (the index of the failing item in its submission), else relative to
    the request. ``param`` is the dotted rendering the wire carries (``items.3.images.0``)."""

    http_status = 500
    grpc_code = "INTERNAL"
    error_type = "internal_error"

    def __init__(
        self,
        message: str | FieldMessage,
        *,
        param: Param | None = None,
        code: str | None = None,
        item: int | None = None,
    ):
        super().__init__(message)
        self._message = message
        self.loc: Loc = parse_param(param)
        self.item = item
        self.code = code

    @property
    def location(self) -> Loc:
        """The full location: under ``("items", item)`` when the error belongs to an engine item."""
        return ("items", self.item, *self.loc) if self.item is not None else self.loc

    @property
    def param(self) -> str | None:
        return format_loc(self.location)

    @property
    def message(self) -> str:
        if isinstance(self._message, FieldMessage):
            return self._message.render(self.param)
        return self._message

    @property
    def led_by_field(self) -> bool:
        """The message starts with the field's name (``items.0.response: ...``): don't prefix it again."""
        return isinstance(self._message, FieldMessage) and not self._message.before and self.param is not None

    def __str__(self) -> str:
        return self.message

    def relocated(self, loc: Loc) -> RMServeError:
        """The same error at ``loc`` in the caller's request (no longer tied to an engine item)."""
        moved = copy.copy(self)
        moved.loc, moved.item = loc, None
        return moved

    def within(self, prefix: Loc) -> RMServeError:
        """The same error located relative to ``prefix`` (``("items", 0)``) when it lies under it."""
        location = self.location
        if location[: len(prefix)] != prefix:
            return self
        return self.relocated(location[len(prefix) :])

    def for_item(self, index: int) -> RMServeError:
        """The same error, belonging to item ``index`` of an engine submission."""
        moved = copy.copy(self)
        moved.item = index
        return moved

    def to_dict(self) -> dict:
        return {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}


class InvalidInput(RMServeError):
    http_status = 422
    grpc_code = "INVALID_ARGUMENT"
    error_type = "invalid_request_error"


class Unauthenticated(RMServeError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    error_type = "authentication_error"
    # The HTTP auth scheme a 401 names (WWW-Authenticate, RFC 9110 section 11.6.1): clients send Bearer keys.
    challenge = "Bearer"


class Overloaded(RMServeError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    error_type = "overloaded_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(RMServeError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    error_type = "deadline_exceeded"


class NotReady(RMServeError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    error_type = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s  # Retry-After / retry-after metadata: try again (elsewhere)


class BackendError(RMServeError):
    http_status = 500
    grpc_code = "INTERNAL"
    error_type = "backend_error"
