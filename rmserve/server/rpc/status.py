"""Errors as gRPC statuses: the code from the error table (rmserve/errors.py), details naming the field,
and trailing metadata ``rmserve-error-type``, ``rmserve-error-param``, ``rmserve-error-code`` and
``retry-after`` (RESOURCE_EXHAUSTED, UNAVAILABLE)."""

from __future__ import annotations

import math

import grpc
from pydantic import ValidationError

from rmserve.api.protocol import invalid_input_from_errors
from rmserve.errors import RMServeError


def status_code(exc: RMServeError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


def status_details(exc: RMServeError) -> str:
    """The message, led by the field it is about unless it names it already."""
    if exc.param and not exc.led_by_field:
        return f"{exc.param}: {exc.message}"
    return exc.message


def trailing_metadata(exc: RMServeError) -> tuple[tuple[str, str], ...]:
    pairs = [("rmserve-error-type", exc.error_type)]
    if exc.param:
        pairs.append(("rmserve-error-param", exc.param))
    if exc.code:
        pairs.append(("rmserve-error-code", exc.code))
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        pairs.append(("retry-after", str(max(1, math.ceil(retry)))))
    return tuple(pairs)


def as_rmserve_error(exc: Exception) -> RMServeError | None:
    if isinstance(exc, RMServeError):
        return exc
    if isinstance(exc, ValidationError):
        return invalid_input_from_errors(exc.errors())
    return None
