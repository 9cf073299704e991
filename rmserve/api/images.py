"""Decode untrusted images safely, and keep decoded images by content hash.

The order of checks is the point: every limit is enforced before the work it protects.
1. the encoded size (base64 text length) before base64-decoding it;
2. the file size after base64;
3. the format and the declared width x height from the header alone (``Image.open`` reads
   only the header) before any pixel is decoded, so a tiny PNG claiming 30000x30000 pixels
   (a decompression bomb) costs microseconds;
4. only then the full decode, with PIL's own bomb check turned into an error as a second guard.

An ``http(s)://`` image is refused (``url_not_allowed``) unless the loader has a fetcher
(``--allow-image-urls``): api/fetch.py then fetches it from public addresses only, within the
same byte limit, and the bytes go through the same checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from rmserve.errors import InvalidInput, Param
from rmserve.lru import ByteLRU

if TYPE_CHECKING:
    from rmserve.api.fetch import ImageFetcher

# Formats worth accepting from clients; PIL's rarer decoders are attack surface we do not need.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.ASCII
)
_WHITESPACE = re.compile(r"\s+")


def is_url(text: str) -> bool:
    """An http(s) URL (case-insensitive scheme), as opposed to inline image data."""
    return text[:8].lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, fully loaded; treat as immutable (it is shared through the cache)
    sha256: str  # of the encoded file bytes
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        # Pillow stores an RGB image in 32-bit pixels (RGBX), not 24-bit: count what it really holds.
        return self.width * self.height * 4


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 16_777_216
    max_bytes: int = 20 * 1024 * 1024


def decode_base64_image(data: str, limits: ImageLimits, *, param: Param | None = None) -> bytes:
    """The file bytes of a ``data:image/...;base64,`` URL or raw base64 text."""
    match = _DATA_URL.match(data)
    if match:
        mime = match.group("mime") or ""
        if not mime.startswith("image/"):
            raise InvalidInput(
                f"data URL has media type {mime or '(none)'!r}; expected image/*",
                param=param,
                code="invalid_image",
            )
        if not match.group("b64"):
            raise InvalidInput(
                "data URL must be base64-encoded (`data:image/png;base64,...`)",
                param=param,
                code="invalid_base64",
            )
        data = data[match.end() :]
    elif is_url(data):
        raise InvalidInput(
            "image URLs are not fetched by this server (the operator can enable them with "
            "--allow-image-urls); send the image inline as a data URL or upload it to /v1/images",
            param=param,
            code="url_not_allowed",
        )
    # base64 is 4 chars per 3 bytes: refuse oversized input before spending time decoding it.
    if len(data) > (limits.max_bytes + 2) // 3 * 4 + 1024:
        raise InvalidInput(
            f"image is larger than {limits.max_bytes} bytes", param=param, code="image_too_large"
        )
    data = _WHITESPACE.sub("", data)
    if not data:
        raise InvalidInput("image data is empty", param=param, code="invalid_base64")
    data += "=" * (-len(data) % 4)  # tolerate stripped padding
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"image is not valid base64: {exc}", param=param, code="invalid_base64") from None
    if len(raw) > limits.max_bytes:
        raise InvalidInput(
            f"image is {len(raw)} bytes, over the limit of {limits.max_bytes}",
            param=param,
            code="image_too_large",
        )
    return raw


def check_image_bytes(raw: bytes, limits: ImageLimits, *, param: Param | None = None) -> bytes:
    """Image file bytes as given (gRPC ``Image.data``): refused when empty, with the code an empty base64
    string gets over REST (the two transports agree), or over the size limit."""
    if not raw:
        raise InvalidInput("image data is empty", param=param, code="invalid_base64")
    if len(raw) > limits.max_bytes:
        raise InvalidInput(
            f"image is {len(raw)} bytes, over the limit of {limits.max_bytes}", param=param, code="image_too_large"
        )
    return raw


def decode_image_bytes(raw: bytes, limits: ImageLimits, *, param: Param | None = None) -> DecodedImage:
    """Decode image file bytes to an RGB image, refusing bombs before decoding pixels."""
    if len(raw) > limits.max_bytes:
        raise InvalidInput(
            f"image is {len(raw)} bytes, over the limit of {limits.max_bytes}",
            param=param,
            code="image_too_large",
        )
    digest = hashlib.sha256(raw).hexdigest()
    with warnings.catch_warnings():
        # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; make both an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS)  # reads the header only
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidInput(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{limits.max_pixels}",
                    param=param,
                    code="image_too_large",
                )
            if width < 1 or height < 1:
                raise InvalidInput("image has no pixels", param=param, code="invalid_image")
            image.load()  # first frame only for animations
            rgb = _to_rgb(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidInput(
                f"image exceeds the decoder's pixel limit (limit {limits.max_pixels})",
                param=param,
                code="image_too_large",
            ) from None
        except UnidentifiedImageError:
            raise InvalidInput(
                f"bytes are not an image in a supported format ({', '.join(ALLOWED_FORMATS)})",
                param=param,
                code="invalid_image",
            ) from None
        except InvalidInput:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt files
            raise InvalidInput(
                f"image could not be decoded: {exc}", param=param, code="invalid_image"
            ) from None
    return DecodedImage(rgb, digest, width, height)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, not whatever colour the encoder left under them.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


class ImageCache(ByteLRU[DecodedImage]):
    """Bounded LRU of decoded images keyed by sha256, sized in decoded bytes.

    Serves two purposes: GRPO groups send the same image G times (decode once), and a client may
    refer to an image it sent before by ``{"sha256": ...}`` instead of sending it again.
    """

    def get(self, sha256: str) -> DecodedImage | None:  # type: ignore[override]
        return super().get(sha256.lower())

    def put(self, image: DecodedImage) -> None:  # type: ignore[override]
        super().put(image.sha256, image, image.nbytes)


class ImageLoader:
    """Turns one wire image (data URL / raw base64 / sha256 reference / local path / http(s) URL when a
    ``fetcher`` is given) into a DecodedImage."""

    def __init__(
        self,
        limits: ImageLimits,
        cache: ImageCache | None = None,
        *,
        base_dir: str | None = None,
        fetcher: ImageFetcher | None = None,
    ):
        self.limits = limits
        self.cache = cache
        self.base_dir = base_dir  # set only for offline scoring: lets items name local files
        self.fetcher = fetcher  # set only with --allow-image-urls (api/fetch.py vets every address)

    def load(self, spec: str | dict | object, *, param: Param) -> DecodedImage:
        sha = getattr(spec, "sha256", None) or (spec.get("sha256") if isinstance(spec, dict) else None)
        if sha is not None:
            found = self.cache.get(sha) if self.cache else None
            if found is None:
                raise InvalidInput(
                    f"no image with sha256 {sha} is held by this server (never uploaded, or evicted "
                    "from the cache since): upload it with POST /v1/images or send it inline",
                    param=param,
                    code="image_not_found",
                )
            return found
        if isinstance(spec, bytes):  # gRPC's Image.data: the file's bytes, no base64 in between
            raw = check_image_bytes(spec, self.limits, param=param)
        elif not isinstance(spec, str):
            raise InvalidInput('image must be a data URL string or a {"sha256": ...} object', param=param)
        else:
            raw = self._read_spec(spec, param)
        if self.cache is None:
            return decode_image_bytes(raw, self.limits, param=param)

        def decode() -> tuple[DecodedImage, int]:
            decoded = decode_image_bytes(raw, self.limits, param=param)
            return decoded, decoded.nbytes

        # A GRPO group's G requests carry the same image and arrive together: one decodes, the others wait for it.
        return self.cache.get_or_compute(hashlib.sha256(raw).hexdigest(), decode)

    def _read_spec(self, spec: str, param: Param) -> bytes:
        """The file bytes a string image names: a local file (offline scoring), a URL, or base64."""
        raw = self._read_local(spec, param) if self.base_dir is not None else None
        if raw is None and self.fetcher is not None and is_url(spec):
            raw = self.fetcher.fetch(spec, param=param)
        if raw is None:
            raw = decode_base64_image(spec, self.limits, param=param)
        return raw

    def _read_local(self, spec: str, param: Param) -> bytes | None:
        if spec.startswith("data:") or len(spec) > 4096:
            return None
        path = spec if os.path.isabs(spec) else os.path.join(self.base_dir or ".", spec)
        if not os.path.isfile(path):
            return None
        if os.path.getsize(path) > self.limits.max_bytes:
            raise InvalidInput(
                f"image file {spec} is over the limit of {self.limits.max_bytes} bytes",
                param=param,
                code="image_too_large",
            )
        with open(path, "rb") as f:
            return f.read()
