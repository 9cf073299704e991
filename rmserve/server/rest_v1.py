"""REST routes for compare, rank, critique (JSON or server-sent events), safety and image upload.

Thin: each route calls one ``ScoreService`` method and maps the result; errors leave through the
handlers in server/errors.py in the one error shape. Every route takes ``x-request-timeout-ms``
like /v1/score and drops its queued work when the client disconnects.

``POST /v1/critique`` with ``"stream": true`` answers ``text/event-stream``: one ``data: {chunk}``
event per piece of critique text, the last one with ``done: true`` and the reward. Input errors
are found before the first event, so they are ordinary JSON 4xx answers; an error after streaming
started is sent as a final ``event: error`` with ``data: {"error": {...}}``.

``POST /v1/images`` takes the image file as the raw body (any content type but JSON/multipart),
as ``multipart/form-data`` (the first file part), or as JSON ``{"image": "<data URL or base64>"}``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from rmserve.api import (
    CompareRequest,
    CompareResponse,
    CritiqueChunk,
    CritiqueRequest,
    CritiqueResponse,
    ImageUploadRequest,
    ImageUploadResponse,
    RankRequest,
    RankResponse,
    SafetyRequest,
    SafetyResponse,
)
from rmserve.api.protocol import invalid_input_from_errors
from rmserve.api.uploads import decode_upload_json
from rmserve.errors import InvalidInput, RMServeError
from rmserve.server.errors import error_response
from rmserve.server.rest import ERRORS, _service, _state, _unless_client_leaves, request_deadline

log = logging.getLogger(__name__)
router = APIRouter()

Timeout = Annotated[float | None, Header(gt=0, description="Deadline for this request in milliseconds.")]


async def _answer(request: Request, work):
    result = await _unless_client_leaves(request, work)
    if result is None:  # nobody is listening; the status is for access logs and metrics only
        return error_response(499, "client closed the request", "client_closed_request")
    return result


def _deadline(request: Request, timeout_ms: float | None) -> float | None:
    return request_deadline(_state(request), timeout_ms)


@router.post("/v1/compare", response_model=CompareResponse, responses=ERRORS, summary="Compare two responses")
async def compare(body: CompareRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    return await _answer(request, service.compare(body, deadline=_deadline(request, x_request_timeout_ms)))


@router.post("/v1/rank", response_model=RankResponse, responses=ERRORS, summary="Rank N responses (best-of-N, DPO)")
async def rank(body: RankRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    return await _answer(request, service.rank(body, deadline=_deadline(request, x_request_timeout_ms)))


@router.post(
    "/v1/safety", response_model=SafetyResponse, responses=ERRORS, summary="Hazard categories and policy action"
)
async def safety(body: SafetyRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    return await _answer(request, service.safety(body, deadline=_deadline(request, x_request_timeout_ms)))


@router.post(
    "/v1/critique",
    response_model=CritiqueResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream"}},
    summary="Critique a response, then score it (MM-RLHF); streamable",
)
async def critique(body: CritiqueRequest, request: Request, x_request_timeout_ms: Timeout = None):
    service = _service(request)
    deadline = _deadline(request, x_request_timeout_ms)
    if not body.stream:
        return await _answer(request, service.critique(body, deadline=deadline))
    stream = service.critique_stream(body, deadline=deadline)
    first = await _unless_client_leaves(request, stream.__anext__())  # input errors raise here, as JSON
    if first is None:
        await stream.aclose()
        return error_response(499, "client closed the request", "client_closed_request")
    return StreamingResponse(
        _events(first, stream), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


async def _events(first: CritiqueChunk, stream: AsyncIterator[CritiqueChunk]) -> AsyncIterator[str]:
    try:
        yield _event(first)
        async for chunk in stream:
            yield _event(chunk)
    except RMServeError as exc:
        yield f"event: error\ndata: {json.dumps({'error': exc.to_dict()})}\n\n"
    except Exception:
        log.exception("critique stream failed")
        body = {"error": {"message": "internal server error", "type": "internal_error", "param": None, "code": None}}
        yield f"event: error\ndata: {json.dumps(body)}\n\n"
    finally:
        await stream.aclose()  # the client left: stops generation at its next token


def _event(chunk: CritiqueChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"


@router.post(
    "/v1/images",
    response_model=ImageUploadResponse,
    responses=ERRORS,
    summary="Upload an image once; refer to it by sha256 afterwards",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
                "application/json": {"schema": ImageUploadRequest.model_json_schema()},
            },
            "required": True,
        }
    },
)
async def upload_image(request: Request) -> ImageUploadResponse | JSONResponse:
    service = _service(request)
    content_type = request.headers.get("content-type", "").lower()
    body = await request.body()
    if content_type.startswith("application/json"):
        try:
            upload = ImageUploadRequest.model_validate_json(body or b"null")
        except ValidationError as exc:
            raise invalid_input_from_errors(exc.errors()) from None
        data = decode_upload_json(service, upload)
    elif content_type.startswith("multipart/form-data"):
        data = _multipart_file(body, request.headers["content-type"])
    else:
        data = body
    return await service.upload_image(data)


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The first file part (else the first part) of a multipart/form-data body, with the stdlib parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InvalidInput("multipart body has no parts (check the boundary)", param="file", code="invalid_multipart")
    parts = list(message.iter_parts())
    chosen = next((p for p in parts if p.get_filename()), parts[0] if parts else None)
    payload = chosen.get_payload(decode=True) if chosen is not None else None
    if not payload:
        raise InvalidInput("multipart body has no file part", param="file", code="invalid_multipart")
    return payload
