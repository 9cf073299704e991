"""Generic pairwise JSONL, the trainer's own format (a superset of the MM-RLHF and converted VL-RewardBench rows).

One object per line::

    {"prompt": str | [{"role", "content"}, ...], "images": [path, ...] | "image": path,
     "chosen": str, "rejected": str, "chosen_reason"?: str, "rejected_reason"?: str, "margin"?: float,
     "id"?: str, "category"?: str, "chosen_safety"?: ["S1", ...], "rejected_safety"?: [...],
     "attributes"?: {"chosen": {name: float}, "rejected": {name: float}}}

``messages`` may stand for ``prompt`` (multi-turn). Image paths are relative to ``--image-root``
(default: the JSONL file's folder).
"""

from __future__ import annotations

from ..records import PairRecord
from .base import Fields, ReadReport, read_jsonl


def parse_pairwise(f: Fields) -> PairRecord:
    if f.has("video"):
        f.fail("video inputs are not supported (images only); drop the record or pass --skip-bad")
    prompt = f.messages("messages") if f.has("messages") and not f.has("prompt") else f.prompt("prompt")
    chosen, rejected = f.text("chosen"), f.text("rejected")
    images, paths = f.load_images(f.image_list("images", "image"))
    return PairRecord(
        id=f.id, prompt=prompt, chosen=chosen, rejected=rejected, images=images, image_paths=paths,
        chosen_reason=f.text("chosen_reason", required=False) or None,
        rejected_reason=f.text("rejected_reason", required=False) or None,
        margin=f.number("margin"), category=f.text("category", required=False) or "",
        chosen_safety=f.safety("chosen_safety"), rejected_safety=f.safety("rejected_safety"),
        attributes=f.attributes(), source=f.source,
    )


def read_pairwise(path: str, **kw) -> tuple[list[PairRecord], ReadReport]:
    return read_jsonl(path, parse_pairwise, **kw)
