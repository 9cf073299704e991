"""``POST /v1/images``: upload an image once, refer to it by sha256 afterwards.

The image file comes as the raw body (any content type but JSON/multipart), as
``multipart/form-data`` (the first file part), or as JSON ``{"image": "<data URL or base64>"}``.
"""

from __future__ import annotations

import email.parser
import email.policy

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from rmserve.api import ImageUploadRequest, ImageUploadResponse
from rmserve.api.protocol import invalid_input_from_errors
from rmserve.api.uploads import decode_upload_json
from rmserve.errors import InvalidInput
from rmserve.server.rest.deps import ERRORS, Service

router = APIRouter()


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
async def upload_image(request: Request, service: Service) -> ImageUploadResponse | JSONResponse:
    content_type = request.headers.get("content-type", "").lower()
    body = await request.body()
    if content_type.startswith("application/json"):
        try:
            upload = ImageUploadRequest.model_validate_json(body or b"null")
        except ValidationError as exc:
            raise invalid_input_from_errors(exc.errors()) from None
        data = decode_upload_json(upload, service.images.limits)
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
