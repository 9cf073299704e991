"""MM-RLHF ``dpo_pairs`` and MM-RLHF-RewardBench rows.

    {id, prompt, chosen, rejected, chosen_reason, rejected_reason, image | video}

The reasons are the human-written critiques the critique trainer teacher-forces. Video records
(``video`` instead of ``image``: an MP4 file or a folder of frames) are read as a video in front of the
prompt (see ``pairwise.parse_pairwise``).
Reference copy of the bench (text and image paths only): ``shared/data/mm_reward_bench.jsonl``.
"""

from __future__ import annotations

from ..records import PairRecord
from .base import Fields, ReadReport, read_jsonl
from .pairwise import parse_pairwise


def parse_mmrlhf(f: Fields) -> PairRecord:
    if not f.id:
        f.fail("missing field 'id'")
    record = parse_pairwise(f)
    record.category = record.category or f.id.split("_")[0]
    return record


def read_mmrlhf(path: str, **kw) -> tuple[list[PairRecord], ReadReport]:
    return read_jsonl(path, parse_mmrlhf, **kw)
