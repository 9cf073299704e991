"""POST /v1/images: keep an image by content hash so later requests can refer to it.

The store is the server's decoded-image cache (``ImageCache``: keyed by the sha256 of the file
bytes, bounded in decoded bytes, least recently used first out), the same one inline images go
through, so ``{"sha256": ...}`` works in every endpoint afterwards. An evicted image is a 422
``image_not_found`` on use: upload it again. The upload is checked like any inline image
(size, format, pixel count before decoding), so the same limits apply.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rmserve.api.context import ServingContext
from rmserve.api.images import ImageLimits, decode_base64_image, decode_image_bytes
from rmserve.errors import InvalidInput


class ImageUploadRequest(BaseModel):
    """The JSON form of an upload (the raw file bytes as the body work too)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="The image as a `data:image/...;base64,` URL or raw base64.")


class ImageUploadResponse(BaseModel):
    object: Literal["image"] = Field(default="image", description="Always `image`.")
    sha256: str = Field(description='Hex sha256 of the file bytes: send `{"sha256": ...}` as an image from now on.')
    width: int = Field(description="Width in pixels.")
    height: int = Field(description="Height in pixels.")
    bytes: int = Field(description="Size of the uploaded file.")


def decode_upload_json(request: ImageUploadRequest, limits: ImageLimits) -> bytes:
    """The file bytes of a JSON upload (checks the encoded size before decoding)."""
    return decode_base64_image(request.image, limits, param="image")


async def upload_image(ctx: ServingContext, data: bytes) -> ImageUploadResponse:
    """Keep an image (by the sha256 of its bytes) so later requests can send ``{"sha256": ...}``."""
    cache = ctx.images.cache
    if cache is None:
        raise InvalidInput(
            "image uploads need the image cache, which this server runs without (image_cache_mb=0); "
            "send images inline instead",
            param=None,
            code="uploads_disabled",
        )
    if not data:
        raise InvalidInput("the upload is empty; send the image file's bytes", param="image", code="invalid_image")
    digest = hashlib.sha256(data).hexdigest()
    found = cache.get(digest)
    if found is None:
        decode = functools.partial(decode_image_bytes, param="image")
        found = await ctx.models.primary.run_in_pool(decode, data, ctx.images.limits)
        cache.put(found)
        if cache.get(digest) is None:
            raise InvalidInput(
                f"the decoded image ({found.nbytes} bytes) is larger than the whole image cache "
                f"({cache.max_bytes} bytes); send it inline or raise image_cache_mb",
                param="image",
                code="image_too_large",
            )
    return ImageUploadResponse(sha256=digest, width=found.width, height=found.height, bytes=len(data))


__all__ = ["ImageUploadRequest", "ImageUploadResponse", "decode_upload_json", "upload_image"]
