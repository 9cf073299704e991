"""Every error the client raises, one tree for both transports (REST and gRPC):

    RMServeError                 base: .message .status .type .param .code
     ├── InvalidRequest          the request is wrong; .param names the field     422, 400, 413 / INVALID_ARGUMENT
     ├── Unauthenticated         missing or wrong API key                          401, 403 / UNAUTHENTICATED
     ├── Overloaded              queue full; retried, honouring .retry_after       429 / RESOURCE_EXHAUSTED
     ├── DeadlineExceeded        the call's timeout passed (server or client side) 504 / DEADLINE_EXCEEDED
     ├── ServerError             the server failed                                 5xx / INTERNAL, UNKNOWN
     │    ├── Unavailable        loading, draining or restarting; retried          503 / UNAVAILABLE
     │    └── Unsupported        this server lacks the endpoint / RPC              404, 405, 501 / UNIMPLEMENTED
     └── TransportError          no answer: connection refused/reset, TLS, ...; retried

``status`` is the HTTP status (REST) or the gRPC status code name (gRPC); ``type``, ``param`` and
``code`` are the fields of the server's error body (``{"error": {message, type, param, code}}``)
or of its gRPC trailing metadata.
"""

from __future__ import annotations


class RMServeError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | str | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k in ("status", "param", "code") if (v := getattr(self, k)) is not None)
        return f"{type(self).__name__}({self.message!r}{', ' + fields if fields else ''})"


class InvalidRequest(RMServeError):
    """Bad input: fix the field named by ``param`` (e.g. ``items.0.images.1``) and try again."""


class Unauthenticated(RMServeError):
    """Pass ``api_key=`` (or set RMSERVE_API_KEY) to match the server's key."""


class Overloaded(RMServeError):
    """The server's queue is full. The client retries with backoff; ``retry_after`` is the server's hint."""


class DeadlineExceeded(RMServeError):
    """The call took longer than its ``timeout``; the server dropped any work still queued for it."""


class ServerError(RMServeError):
    """The server failed on this request (a bug, or the model failed on an item)."""


class Unavailable(ServerError):
    """The server is not ready (model loading, draining); retried like Overloaded."""


class Unsupported(ServerError):
    """The server does not offer this operation (an older server, or a transport without it)."""


class TransportError(RMServeError):
    """No answer from the server (connection refused or reset, DNS, TLS). Retried."""


RETRYABLE = (Overloaded, Unavailable, TransportError)

_BY_HTTP = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Unauthenticated,
    404: Unsupported,
    405: Unsupported,
    413: InvalidRequest,
    422: InvalidRequest,
    429: Overloaded,
    501: Unsupported,
    503: Unavailable,
    504: DeadlineExceeded,
}

_BY_GRPC = {
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "FAILED_PRECONDITION": InvalidRequest,
    "NOT_FOUND": InvalidRequest,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": Unauthenticated,
    "RESOURCE_EXHAUSTED": Overloaded,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "CANCELLED": TransportError,
    "UNAVAILABLE": Unavailable,
    "UNIMPLEMENTED": Unsupported,
}

_BY_TYPE = {
    "invalid_request_error": InvalidRequest,
    "authentication_error": Unauthenticated,
    "overloaded_error": Overloaded,
    "deadline_exceeded": DeadlineExceeded,
    "unavailable": Unavailable,
}


def error_for_http(status: int) -> type[RMServeError]:
    if status in _BY_HTTP:
        return _BY_HTTP[status]
    return InvalidRequest if 400 <= status < 500 else ServerError


def error_for_grpc(code_name: str) -> type[RMServeError]:
    return _BY_GRPC.get(code_name, ServerError)


def error_for_type(error_type: str | None) -> type[RMServeError]:
    """For per-item errors that carry only the error body's ``type`` (ScoreStream results)."""
    return _BY_TYPE.get(error_type or "", ServerError)
