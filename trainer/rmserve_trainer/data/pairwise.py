"""Generic pairwise JSONL, the trainer's own format (a superset of the MM-RLHF and converted VL-RewardBench rows).

One object per line::

    {"prompt": str | [{"role", "content"}, ...], "images": [path, ...] | "image": path, "video"?: path,
     "chosen": str, "rejected": str, "chosen_reason"?: str, "rejected_reason"?: str, "margin"?: float,
     "id"?: str, "category"?: str, "chosen_safety"?: ["S1", ...], "rejected_safety"?: [...],
     "attributes"?: {"chosen": {name: float}, "rejected": {name: float}}}

``messages`` may stand for ``prompt`` (multi-turn: system, user, assistant and tool turns). A turn's
content may be a list of parts placing images and videos anywhere in the conversation (see
``Fields.conversation``); top-level ``images`` go into the first user turn, and an MM-RLHF ``video``
(one MP4 file) goes in front of the first user turn's text. Image and video paths are relative to
``--image-root`` (default: the JSONL file's folder).
"""

from __future__ import annotations

from ..records import PairRecord
from .base import Fields, ReadReport, read_jsonl


def parse_pairwise(f: Fields) -> PairRecord:
    key = "messages" if f.has("messages") and not f.has("prompt") else "prompt"
    part_images: list[str] = []
    videos: list = []
    if isinstance(f.obj.get(key), list):
        prompt, part_images, videos = f.conversation(key)
    else:
        prompt = f.text(key)
    chosen, rejected = f.text("chosen"), f.text("rejected")
    top_images = f.image_list("images", "image")
    if top_images and part_images:
        f.fail("give images as top-level 'images' or as content parts, not both")
    images, paths = f.load_images(top_images or part_images)
    if f.has("video"):
        if videos:
            f.fail("give a video as the 'video' field or as content parts, not both")
        videos = [f.video(f.obj["video"], "video")]
        prompt = _video_first(prompt)
    return PairRecord(
        id=f.id, prompt=prompt, chosen=chosen, rejected=rejected, images=images, image_paths=paths, videos=videos,
        chosen_reason=f.text("chosen_reason", required=False) or None,
        rejected_reason=f.text("rejected_reason", required=False) or None,
        margin=f.number("margin"), category=f.text("category", required=False) or "",
        chosen_safety=f.safety("chosen_safety"), rejected_safety=f.safety("rejected_safety"),
        attributes=f.attributes(), source=f.source,
    )


def _video_first(prompt: str | list[dict]) -> list[dict]:
    """MM-RLHF video rows: the video in front of the (first) user turn's text, as images go."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    for m in messages:
        if m["role"] == "user":
            content = m["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            m["content"] = [{"type": "video"}, *parts]
            return messages
    messages.insert(0, {"role": "user", "content": [{"type": "video"}]})
    return messages


def read_pairwise(path: str, **kw) -> tuple[list[PairRecord], ReadReport]:
    return read_jsonl(path, parse_pairwise, **kw)
