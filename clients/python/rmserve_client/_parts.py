"""Content parts in ``messages``: images and videos in any turn, in every form a caller has them.

A turn's ``content`` is a string or a list of parts, as the REST API takes them (OpenAI style):

    {"type": "text", "text": "..."}
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}
    {"type": "image", "image": <PIL image | bytes | path | data URL | {"sha256": ...}>}
    {"type": "video_url", "video_url": {"url": <data:video/mp4;base64,... | MP4 bytes | path>, "fps", "max_frames"}}
    {"type": "video", "frames": [<image>, ...], "fps": 2.0}

``load_messages`` puts each image in the REST shape with an ``ImageData`` (``image_url``, sent inline)
or an ``ImageRef`` (``image``, by sha256) in it, which each transport encodes its own way (REST: a
data URL / ``{"sha256"}``, gRPC: bytes / sha256), and videos as MP4 data URLs; ``pb_message``
builds the gRPC ``Message`` (``parts``) from that form.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rmserve_client._images import ImageData, ImageRef, load_image


def _video_url(value: Any, param: str) -> str:
    if isinstance(value, str) and value.startswith("data:"):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str | os.PathLike):
        with open(value, "rb") as f:
            raw = f.read()
    else:
        raise ValueError(f"{param}: a video is MP4 bytes, a file path or a data:video/mp4;base64 URL")
    return "data:video/mp4;base64," + base64.b64encode(raw).decode("ascii")


def _image(value: Any, param: str, cache: dict[int, ImageData | ImageRef]) -> ImageData | ImageRef:
    key = id(value)  # one object repeated (a GRPO group's image) is encoded and hashed once
    if key not in cache:
        cache[key] = load_image(value, param=param)
    return cache[key]


def _image_part(image: ImageData | ImageRef) -> dict[str, Any]:
    if isinstance(image, ImageRef):
        return {"type": "image", "image": image}
    return {"type": "image_url", "image_url": {"url": image}}


def load_part(part: Mapping[str, Any], param: str, cache: dict[int, ImageData | ImageRef]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "image_url":
        return _image_part(_image(part["image_url"]["url"], f"{param}.image_url.url", cache))
    if kind == "image":
        return _image_part(_image(part["image"], f"{param}.image", cache))
    if kind == "video":
        frames = [_image(f, f"{param}.frames.{j}", cache) for j, f in enumerate(part["frames"])]
        return {**part, "frames": frames}
    if kind == "video_url":
        spec = dict(part["video_url"])
        spec["url"] = _video_url(spec.get("url"), f"{param}.video_url.url")
        return {"type": "video_url", "video_url": spec}
    return dict(part)  # text, or a type the server will name in its 422


def load_messages(messages: Sequence[Mapping[str, Any]], param: str,
                  cache: dict[int, ImageData | ImageRef]) -> list[dict[str, Any]]:
    out = []
    for m, message in enumerate(messages):
        message = dict(message)
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [load_part(p, f"{param}.{m}.content.{k}", cache) for k, p in enumerate(content)]
        out.append(message)
    return out


def images_in(messages: Sequence[Mapping[str, Any]] | None) -> list[ImageData | ImageRef]:
    """Every loaded image in the parts, in order (for upload bookkeeping)."""
    found = []
    for message in messages or ():
        for part in message.get("content") if isinstance(message.get("content"), list) else ():
            if part.get("type") == "image":
                found.append(part["image"])
            elif part.get("type") == "image_url":
                found.append(part["image_url"]["url"])
            elif part.get("type") == "video":
                found.extend(part["frames"])
    return found


def pb_message(pb: Any, message: Mapping[str, Any]) -> Any:
    """A (loaded) turn as a ``rmserve.v1.Message``."""
    out = pb.Message(role=message.get("role", ""))
    for name in ("name", "tool_call_id"):
        if message.get(name) is not None:
            setattr(out, name, message[name])
    content = message.get("content")
    if not isinstance(content, list):
        out.content = content or ""
        return out
    for part in content:
        kind = part.get("type")
        if kind == "text":
            out.parts.add(text=part["text"])
        elif kind == "image":
            out.parts.add(image=_pb_image(pb, part["image"]))
        elif kind == "image_url":
            out.parts.add(image=_pb_image(pb, part["image_url"]["url"]))
        elif kind == "video":
            video = out.parts.add().video
            video.frames.frames.extend(_pb_image(pb, f) for f in part["frames"])
            if part.get("fps") is not None:
                video.fps = part["fps"]
        elif kind == "video_url":
            spec = part["video_url"]
            video = out.parts.add().video
            video.data = base64.b64decode(spec["url"].partition(",")[2])
            for name in ("fps", "max_frames"):
                if spec.get(name) is not None:
                    setattr(video, name, spec[name])
        else:
            raise ValueError(f"content part type {kind!r} is not one of text, image_url, image, video_url, video")
    return out


def _pb_image(pb: Any, image: ImageData | ImageRef) -> Any:
    return pb.Image(data=image.data) if isinstance(image, ImageData) else pb.Image(sha256=image.sha256)


__all__ = ["images_in", "load_messages", "pb_message"]
