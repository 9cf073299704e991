"""Dataset readers (one per format) and the pair collate.

    load_pairs(path, fmt="auto", image_root=..., skip_bad=...) -> (list[PairRecord], ReadReport)

Formats (docs/architecture.md, "Training"): ``pairwise`` (generic, also multi-turn and text-only), ``mmrlhf``
(MM-RLHF dpo_pairs / MM-RLHF-RewardBench), ``vlrewardbench`` (original or converted rows),
``mmrewardbench`` (Multimodal RewardBench). ``auto`` picks from the first line's keys.
"""

from __future__ import annotations

from ..records import PairRecord
from .base import DataError, ReadReport, iter_jsonl, open_image, read_jsonl, record_images
from .collate import IGNORE_INDEX, PairBatch, PairCollator, critique_items, response_items
from .mmrewardbench import parse_mmrewardbench, read_mmrewardbench
from .mmrlhf import parse_mmrlhf, read_mmrlhf
from .pairwise import parse_pairwise, read_pairwise
from .vlrewardbench import parse_vlrewardbench, read_vlrewardbench, vl_rewardbench_category

PARSERS = {
    "pairwise": (parse_pairwise, "id"),
    "mmrlhf": (parse_mmrlhf, "id"),
    "vlrewardbench": (parse_vlrewardbench, "id"),
    "mmrewardbench": (parse_mmrewardbench, "ID"),
}
FORMATS = ("auto", *PARSERS)


def detect_format(path: str) -> str:
    """Guess a file's format from its first JSON object (bad lines are left for the reader to report)."""
    for _, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            continue
        if "Output1" in obj and "Better" in obj:
            return "mmrewardbench"
        if "query" in obj and isinstance(obj.get("response"), list):
            return "vlrewardbench"
        return "pairwise"
    return "pairwise"


def load_pairs(path: str, fmt: str = "auto", *, image_root: str | None = None, skip_bad: bool = False,
               lazy_images: bool = False, limit: int | None = None) -> tuple[list[PairRecord], ReadReport]:
    """Read a JSONL file of preference pairs into PairRecords (errors name file:line and the record id)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; choose one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    parse, id_key = PARSERS[fmt]
    return read_jsonl(path, parse, image_root=image_root, skip_bad=skip_bad, lazy_images=lazy_images,
                      id_key=id_key, limit=limit)


__all__ = [
    "DataError", "FORMATS", "IGNORE_INDEX", "PairBatch", "PairCollator", "ReadReport", "critique_items",
    "detect_format", "load_pairs", "open_image", "read_jsonl", "read_mmrewardbench", "read_mmrlhf",
    "read_pairwise", "read_vlrewardbench", "record_images", "response_items", "vl_rewardbench_category",
]
