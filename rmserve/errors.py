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


class RMServeError(Exception):
    """Base error. ``param`` names the request field at fault (dotted path, e.g. ``items.3.images.0``)."""

    http_status = 500
    grpc_code = "INTERNAL"
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict:
        return {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}


class InvalidInput(RMServeError):
    http_status = 422
    grpc_code = "INVALID_ARGUMENT"
    error_type = "invalid_request_error"

    def with_prefix(self, prefix: str) -> InvalidInput:
        """Return a copy whose ``param`` is nested under ``prefix`` (e.g. ``items.3``)."""
        param = f"{prefix}.{self.param}" if self.param else prefix
        return type(self)(self.message, param=param, code=self.code)


class Unauthenticated(RMServeError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    error_type = "authentication_error"


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
