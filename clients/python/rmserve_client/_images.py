"""Images in every form a caller has them -> file bytes + sha256; and what the server already holds.

Accepted: PIL images (encoded as PNG: lossless, and the same pixels give the same bytes, so the
same sha256), ``bytes``, file paths (``str`` / ``os.PathLike``), ``data:image/...;base64,`` URLs,
``{"sha256": ...}`` references, and Hugging Face ``datasets`` image dicts (``{"bytes", "path"}``).
PIL is not a dependency: a PIL image is recognised by its ``save`` method.

The server keeps decoded images by the sha256 of their bytes (uploaded, or sent inline before), so
the client uploads (or sends) each image once and then refers to it by hash: ``ImageRegistry``
remembers which hashes the server holds (bounded LRU; forgotten again when the server says
``image_not_found``, e.g. after a restart or an eviction).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageData:
    """An image's file bytes and their sha256 (hex)."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> ImageData:
        return cls(bytes(data), hashlib.sha256(data).hexdigest())

    def data_url(self) -> str:
        return f"data:{sniff_mime(self.data)};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class ImageRef:
    """An image the server holds, by sha256."""

    sha256: str


def sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "image/png"  # the server sniffs the real format; the media type only has to be image/*


def load_image(image: Any, *, param: str = "image") -> ImageData | ImageRef:
    """Normalise one image; ``ValueError`` (naming ``param``) for anything unusable."""
    if isinstance(image, ImageData | ImageRef):
        return image
    if isinstance(image, bytes | bytearray | memoryview):
        return ImageData.of(bytes(image))
    if isinstance(image, dict):
        return _from_dict(image, param)
    if isinstance(image, os.PathLike):
        return _read(os.fspath(image), param)
    if isinstance(image, str):
        return _from_str(image, param)
    if hasattr(image, "save") and hasattr(image, "size"):  # PIL.Image.Image, without importing PIL
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return ImageData.of(buf.getvalue())
    raise ValueError(
        f"{param}: unsupported image type {type(image).__name__}; pass a PIL image, bytes, a file path, "
        'a data: URL or {"sha256": ...}'
    )


def _from_dict(image: dict, param: str) -> ImageData | ImageRef:
    if image.get("sha256"):
        return ImageRef(str(image["sha256"]).lower())
    if image.get("bytes"):
        return ImageData.of(image["bytes"])
    if image.get("path"):
        return _read(image["path"], param)
    raise ValueError(f'{param}: an image dict needs "sha256", "bytes" or "path"')


def _from_str(image: str, param: str) -> ImageData:
    if image.startswith("data:"):
        header, sep, payload = image.partition(",")
        if not sep or ";base64" not in header:
            raise ValueError(f"{param}: a data URL must be base64-encoded (data:image/png;base64,...)")
        try:
            return ImageData.of(base64.b64decode(payload, validate=False))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{param}: data URL is not valid base64: {exc}") from None
    if image.startswith(("http://", "https://")):
        raise ValueError(f"{param}: image URLs are not fetched; download the image and pass its bytes or path")
    return _read(image, param)


def _read(path: str, param: str) -> ImageData:
    try:
        with open(path, "rb") as f:
            return ImageData.of(f.read())
    except OSError as exc:
        raise ValueError(f"{param}: cannot read image file {path!r}: {exc.strerror or exc}") from None


class ImageRegistry:
    """The sha256s the server is believed to hold (thread-safe, bounded LRU)."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._known: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, sha256: str) -> bool:
        with self._lock:
            if sha256 in self._known:
                self._known.move_to_end(sha256)
                return True
            return False

    def add(self, sha256: str) -> None:
        with self._lock:
            self._known[sha256] = None
            self._known.move_to_end(sha256)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def forget(self, sha256: str) -> None:
        with self._lock:
            self._known.pop(sha256, None)

    def __len__(self) -> int:
        return len(self._known)
