"""Multimodal RewardBench (Yasunaga et al., 2025): ``{ID, Text, Image, Output1, Output2, Better, Category}``.

``Better`` is ``"Output1"`` or ``"Output2"``; ``Category`` (e.g. ``correctness``, ``safety``,
``reasoning``) is kept as the record's category for per-category accuracy.
"""

from __future__ import annotations

from ..records import PairRecord
from .base import Fields, ReadReport, read_jsonl


def parse_mmrewardbench(f: Fields) -> PairRecord:
    if not f.id:
        f.fail("missing field 'ID'")
    prompt = f.text("Text")
    outputs = {"Output1": f.text("Output1"), "Output2": f.text("Output2")}
    better = f.obj.get("Better")
    if better not in outputs:
        f.fail(f"field 'Better' must be 'Output1' or 'Output2', got {better!r}")
    worse = "Output2" if better == "Output1" else "Output1"
    images, paths = f.load_images(f.image_list("Image"))
    return PairRecord(id=f.id, prompt=prompt, chosen=outputs[better], rejected=outputs[worse], images=images,
                      image_paths=paths, category=f.text("Category", required=False) or "", source=f.source)


def read_mmrewardbench(path: str, **kw) -> tuple[list[PairRecord], ReadReport]:
    return read_jsonl(path, parse_mmrewardbench, id_key="ID", **kw)
