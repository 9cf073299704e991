"""VL-RewardBench: the original rows ``{id, query, response: [a, b], image, human_ranking}`` or the
converted pairwise form ``{id, prompt, chosen, rejected, image}`` (``shared/data/vl_reward_bench.jsonl``).

``category`` is the benchmark's split taken from the id: ``reasoning`` (MathVerse, MMMU-Pro),
``hallucination`` (hallucination pairs, RLAIF-V, RLHF-V, LRV, POVID) or ``general`` (the rest:
WildVision, VLFeedback, jailbreak, ...); macro accuracy averages over these three.
"""

from __future__ import annotations

from ..records import PairRecord
from .base import Fields, ReadReport, read_jsonl
from .pairwise import parse_pairwise

_REASONING = ("mathverse", "mmmu")
_HALLUCINATION = ("hallucination", "rlaif", "rlhf", "lrv", "povid")


def vl_rewardbench_category(record_id: str) -> str:
    rid = record_id.lower()
    if rid.startswith(_REASONING):
        return "reasoning"
    if rid.startswith(_HALLUCINATION):
        return "hallucination"
    return "general"


def parse_vlrewardbench(f: Fields) -> PairRecord:
    if not f.id:
        f.fail("missing field 'id'")
    if not f.has("query"):
        record = parse_pairwise(f)
    else:  # original form: rank 0 is preferred
        responses, ranking = f.obj.get("response"), f.obj.get("human_ranking")
        if not (isinstance(responses, list) and len(responses) == 2 and all(isinstance(r, str) and r.strip()
                                                                             for r in responses)):
            f.fail("field 'response' must be a list of two non-empty strings")
        if not (isinstance(ranking, list) and len(ranking) == 2 and ranking[0] != ranking[1]):
            f.fail("field 'human_ranking' must rank the two responses differently, e.g. [0, 1]")
        best = 0 if ranking[0] < ranking[1] else 1
        images, paths = f.load_images(f.image_list("image", "images"))
        record = PairRecord(id=f.id, prompt=f.text("query"), chosen=responses[best], rejected=responses[1 - best],
                            images=images, image_paths=paths, source=f.source)
    record.category = vl_rewardbench_category(f.id)
    return record


def read_vlrewardbench(path: str, **kw) -> tuple[list[PairRecord], ReadReport]:
    return read_jsonl(path, parse_vlrewardbench, **kw)
