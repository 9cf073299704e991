"""Deterministic stand-ins for the images (and videos) a benchmark JSONL names, so that evaluation on the
shared benches runs end to end where their media are not on disk (``rmserve-train eval --placeholder-images``).

    from rmserve_trainer.data.placeholders import generate_placeholder_images
    generate_placeholder_images("bench.jsonl", "images/")     # files written; present ones are kept
"""

from __future__ import annotations

import hashlib
import json
import os

from PIL import Image, ImageDraw

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
VIDEO_FRAMES = 2  # frames per placeholder video directory


def _media_paths(row: dict) -> list[tuple[str, bool]]:
    """(relative path, is_video) for every image or video a benchmark row names."""
    out = []
    for key, is_video in (("image", False), ("images", False), ("Image", False), ("video", True)):
        value = row.get(key)
        values = value if isinstance(value, list) else [value]
        out += [(v, is_video) for v in values if isinstance(v, str) and v]
    return out


def placeholder_image(rel_path: str, size: int = 64) -> Image.Image:
    """A deterministic stand-in for a missing image: two colours derived from the path's hash."""
    h = hashlib.sha256(rel_path.encode()).digest()
    image = Image.new("RGB", (size, size), tuple(h[:3]))
    ImageDraw.Draw(image).rectangle([h[6] % (size // 2), h[7] % (size // 2), size - 1 - h[8] % (size // 4),
                                     size - 1 - h[9] % (size // 4)], fill=tuple(h[3:6]))
    return image


def generate_placeholder_images(records_path: str, image_root: str, *, overwrite: bool = False,
                                size: int = 64) -> int:
    """Write a placeholder for every image (and video) a JSONL names and ``image_root`` lacks.

    Images keep their path and format (from the extension; PNG if none). A video path without an
    image extension becomes a directory of ``VIDEO_FRAMES`` frames (``frame_0000.png``, ...), which
    the evaluator reads as a list of images. Returns the number of files written.
    """
    written = 0
    with open(records_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        for rel, is_video in _media_paths(row):
            target = os.path.join(image_root, rel)
            if is_video and not rel.lower().endswith(IMAGE_EXTS):
                files = [(os.path.join(target, f"frame_{k:04d}.png"), f"{rel}#{k}") for k in range(VIDEO_FRAMES)]
            else:
                files = [(target, rel)]
            for file, key in files:
                if os.path.exists(file) and not overwrite:
                    continue
                os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
                image = placeholder_image(key, size)
                fmt = "JPEG" if file.lower().endswith((".jpg", ".jpeg")) else None
                image.save(file, format=fmt or ("PNG" if not file.lower().endswith(IMAGE_EXTS) else None))
                written += 1
    return written


__all__ = ["IMAGE_EXTS", "VIDEO_FRAMES", "generate_placeholder_images", "placeholder_image"]
