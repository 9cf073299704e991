"""``POST /v1/critique``: critique a response, then score it (MM-RLHF), as JSON or server-sent events.

With ``"stream": true`` the answer is ``text/event-stream``: one ``data: {chunk}`` event per piece of
critique text, the last one with ``done: true`` and the reward. Input errors are found before the
first event, so they are ordinary JSON 4xx answers; an error after streaming started is sent as a
final ``event: error`` with ``data: {"error": {...}}``. The client leaving stops generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from rmserve.api import CritiqueChunk, CritiqueRequest, CritiqueResponse
from rmserve.errors import RMServeError
from rmserve.server.rest.deps import ERRORS, Work, answer, client_closed, unless_client_leaves

log = logging.getLogger(__name__)
router = APIRouter()


@router.post(
    "/v1/critique",
    response_model=CritiqueResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream"}},
    summary="Critique a response, then score it (MM-RLHF); streamable",
)
async def critique(body: CritiqueRequest, request: Request, call: Work):
    if not body.stream:
        return await answer(request, call.service.critique(body, deadline=call.deadline))
    stream = call.service.critique_stream(body, deadline=call.deadline)
    first = await unless_client_leaves(request, stream.__anext__())  # input errors raise here, as JSON
    if first is None:
        await stream.aclose()
        return client_closed()
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
