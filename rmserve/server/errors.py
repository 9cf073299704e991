"""HTTP side of the error contract: every failure leaves as ``{"error": {message, type, param, code}}``.

One table maps each error to a status: ``RMServeError`` subclasses carry their own
``http_status`` (429 and 503 add ``Retry-After``); FastAPI's validation errors (wrong types, unknown
fields, malformed JSON) are 422 with ``param`` = the dotted path of the first error; routing
errors keep their status, except FastAPI's 400 for an unparseable body (422 like any bad JSON);
anything unexpected is a 500 without internals in the body.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rmserve.api.protocol import invalid_input_from_errors
from rmserve.errors import RMServeError

log = logging.getLogger(__name__)

_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def rmserve_error_response(exc: RMServeError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)  # Overloaded (429), NotReady (503)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    challenge = getattr(exc, "challenge", None)  # Unauthenticated (401)
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers or None)


async def _on_rmserve_error(request: Request, exc: RMServeError) -> JSONResponse:
    if exc.http_status >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.http_status, exc.message)
    return rmserve_error_response(exc)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return rmserve_error_response(invalid_input_from_errors(list(exc.errors())))


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400:  # FastAPI could not parse the body (e.g. JSON that is not UTF-8): bad input
        return error_response(
            422, f"request body could not be parsed: {exc.detail}", "invalid_request_error", code="json_invalid"
        )
    type_ = _HTTP_TYPES.get(
        exc.status_code, "invalid_request_error" if exc.status_code < 500 else "internal_error"
    )
    code = "body_too_large" if exc.status_code == 413 else None
    return error_response(exc.status_code, str(exc.detail), type_, code=code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RMServeError, _on_rmserve_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
