"""Log lines, as text or one JSON object per line, each carrying the request id of the request it is about.

    configure_logging(level, fmt)     the root handler (stderr); uvicorn's and grpc's loggers go through it
    request_id_var                    the current request's id (rmserve/context.py): set by the REST
                                      middleware and the gRPC interceptor for the whole request (tasks it
                                      starts and its preprocessing-pool jobs inherit it); the engine worker
                                      sets it to the batch's request ids; "-" outside requests
    request_id(given)                 the client's ``x-request-id`` if it is sane, else a new uuid4 hex

A text line: ``2025-01-01 12:00:00,000 INFO rmserve.access [3f2a...]: POST /v1/score 200 12.3ms``.
A JSON line: ``{"ts": ..., "level": "INFO", "logger": "rmserve.access", "message": "...",
"request_id": "3f2a...", "method": "POST", "path": "/v1/score", "status": 200, "duration_ms": 12.3}``:
fields passed with ``extra=`` become keys, an exception becomes ``exc_info`` (its traceback text).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from rmserve.context import request_id_var

# Client-chosen ids are echoed into headers and logs: keep them to a safe alphabet and length.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def request_id(given: str | None = None) -> str:
    """``given`` (a client's x-request-id) if it is 1-128 safe characters, else a fresh id."""
    if given and _SANE_ID.match(given):
        return given
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id (on the handler, so propagated records get it too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get() or "-",
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text", *, stream=None) -> logging.Handler:
    """One stderr handler on the root logger; uvicorn's loggers drop their own handlers and propagate."""
    numeric = logging.DEBUG if level == "trace" else getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler


__all__ = ["JsonFormatter", "RequestIdFilter", "configure_logging", "request_id", "request_id_var"]
