"""Wire conversations -> the model library's: content parts to placeholders, media loaded within budgets.

    {"type": "image_url", ...} / {"type": "image", "image": {"sha256"}}   -> {"type": "image"} + an image
    {"type": "video_url", ...} / {"type": "video", "frames": [...]}      -> {"type": "video"} + a VideoClip

Media keep their order in the conversation, so each lands where its part sits. Per item, images +
video frames are capped (``max_visuals``: --max-images-per-item counts frames) and so are their
pixels (``max_pixels``); a ``video_url``'s frames and pixels are known from its headers, so both
checks run before any of its frames is decoded. Errors name the part: ``messages.M.content.K``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rmserve.api.images import DecodedImage, ImageLoader
from rmserve.api.videos import ProbedVideo, VideoLoader
from rmserve.errors import InvalidInput, Loc
from rmserve.models.types import VideoClip

TEMPLATE_FIELDS = ("name", "tool_call_id")  # passed to the chat template as they are


@dataclass(frozen=True)
class ItemBudget:
    max_visuals: int = 32  # images + video frames in one item
    max_pixels: int = 8 * 16_777_216  # their width x height, summed


@dataclass
class MediaPart:
    kind: str  # image | video_url | video
    loc: Loc  # ("messages", M, "content", K), relative to the item
    part: dict


def split_parts(messages: Sequence[dict]) -> tuple[list[dict], list[MediaPart]]:
    """Model-layer messages (media parts become ``{"type": "image"|"video"}``) and the media, in order."""
    out, media = [], []
    for m, message in enumerate(messages):
        turn = {"role": message["role"]}
        turn.update({k: message[k] for k in TEMPLATE_FIELDS if message.get(k) is not None})
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for k, part in enumerate(content):
                kind = part["type"]
                if kind == "text":
                    parts.append({"type": "text", "text": part["text"]})
                    continue
                media.append(MediaPart(kind, ("messages", m, "content", k), part))
                parts.append({"type": "image" if kind in ("image", "image_url") else "video"})
            content = parts
        turn["content"] = content
        out.append(turn)
    return out, media


def declared_visuals(messages: Sequence | None) -> int:
    """Images + frames a conversation declares before any video is probed (``video_url`` counts 1: its
    frame count is only known from its headers). For admission checks before the pool."""
    count = 0
    for message in messages or ():
        content = message["content"] if isinstance(message, dict) else message.content
        for part in content if isinstance(content, list) else ():
            part = part if isinstance(part, dict) else part.model_dump()
            count += len(part["frames"]) if part["type"] == "video" else part["type"] != "text"
    return count


@dataclass
class LoadedConversation:
    messages: list[dict] | None
    images: list[DecodedImage]
    videos: list[VideoClip]


def load_conversation(messages: Sequence[dict] | None, top_images: list[DecodedImage], images: ImageLoader,
                      videos: VideoLoader, budget: ItemBudget, where: Callable[[Loc], Loc]
                      ) -> LoadedConversation:
    """Decode a conversation's media (pool thread). ``top_images``: the item's top-level ``images``, decoded."""
    if messages is None:
        return LoadedConversation(None, top_images, [])
    model_messages, media = split_parts(messages)
    if top_images and any(p.kind in ("image", "image_url") for p in media):
        raise InvalidInput("give images either as top-level `images` or as content parts, not both",
                           param=where(("images",)), code="mixed_image_forms")
    probed: dict[int, ProbedVideo] = {}
    visuals = len(top_images)
    for i, part in enumerate(media):  # headers only: counts before anything is decoded
        if part.kind == "video_url":
            spec = part.part["video_url"]
            probed[i] = videos.probe(spec["url"], fps=spec.get("fps"), max_frames=spec.get("max_frames"),
                                     param=where(part.loc))
        visuals += probed[i].num_frames if i in probed else len(part.part.get("frames") or [None])
        if visuals > budget.max_visuals:
            raise InvalidInput(f"{visuals} images and video frames in one item by this part, over the limit of "
                               f"{budget.max_visuals} (--max-images-per-item counts frames)",
                               param=where(part.loc), code="too_many_images")
    pixels = sum(d.width * d.height for d in top_images) + sum(p.pixels for p in probed.values())
    loaded_images: list[DecodedImage] = list(top_images)
    clips: list[VideoClip] = []
    for part in media:
        if part.kind == "video_url":
            continue
        if part.kind == "video":
            frames = [images.load(f, param=where((*part.loc, "frames", j))) for j, f in enumerate(part.part["frames"])]
            pixels += sum(f.width * f.height for f in frames)
            sizes = {(f.width, f.height) for f in frames}
            if len(sizes) > 1:
                raise InvalidInput(f"a video's frames must all have one size (got {sorted(sizes)})",
                                   param=where((*part.loc, "frames")), code="invalid_video")
            clips.append(VideoClip([f.image for f in frames], fps=float(part.part.get("fps") or 2.0),
                                   key="frames:" + ",".join(f.sha256 for f in frames)))
        else:
            spec = part.part["image_url"]["url"] if part.kind == "image_url" else part.part["image"]
            image = images.load(spec, param=where(part.loc))
            pixels += image.width * image.height
            loaded_images.append(image)
        if pixels > budget.max_pixels:
            raise InvalidInput(f"images and video frames in this item reach {pixels} pixels, over the limit of "
                               f"{budget.max_pixels}", param=where(part.loc), code="too_many_pixels")
    if pixels > budget.max_pixels:
        raise InvalidInput(f"images and video frames in this item reach {pixels} pixels, over the limit of "
                           f"{budget.max_pixels}", param=where(("messages",)), code="too_many_pixels")
    # Videos in conversation order: decoded ones (frames parts) and probed ones interleave.
    order = [i for i, p in enumerate(media) if p.kind in ("video", "video_url")]
    frame_clips = iter(clips)
    clips = [videos.decode(probed[i]) if i in probed else next(frame_clips) for i in order]
    return LoadedConversation(model_messages, loaded_images, clips)


__all__ = ["ItemBudget", "LoadedConversation", "declared_visuals", "load_conversation", "split_parts"]
