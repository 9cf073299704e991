"""The in-process ceiling: the same items, pre-tokenized, length-sorted, at the best batch size.

No server, no HTTP, no queue: ``model.encode`` runs before the clock starts, items are sorted by
length (least padding) and cut into batches of ``batch_size``, and only ``model.score_batch``
is timed. That is as fast as this model goes on this machine with plain padded batches; a
server that reaches ~80% of it wastes little. With ``share=True`` (GRPO) a batch holds whole
groups (sorted by length) and ``model.share_prefix`` runs each group's prompt + image once.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from rmserve.api.images import ImageLimits, decode_base64_image, decode_image_bytes
from rmserve.models.types import EncodedItem, ScoreItem

from .workloads import Workload


@dataclass
class CeilingRun:
    batch_size: int
    share: bool
    responses: int
    seconds: float
    batch_ms: list[float] = field(default_factory=list)  # one entry per batch
    full_batch_ms: list[float] = field(default_factory=list)  # batches of exactly batch_size items
    rewards: list[float] = field(default_factory=list)  # in workload order

    @property
    def responses_per_s(self) -> float:
        return self.responses / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_batch_ms(self) -> float:
        """Mean compute of one full batch (all batches if none is full)."""
        times = self.full_batch_ms or self.batch_ms
        return statistics.fmean(times) if times else 0.0


def to_score_item(wire: dict) -> ScoreItem:
    """A wire item as the server decodes it (images keyed by the sha256 of their bytes)."""
    limits = ImageLimits()
    decoded = [decode_image_bytes(decode_base64_image(url, limits), limits) for url in wire.get("images", [])]
    return ScoreItem(prompt=wire["prompt"], response=wire["response"], images=[d.image for d in decoded],
                     image_hashes=[d.sha256 for d in decoded])


def encode_workload(model, workload: Workload) -> list[list[EncodedItem]]:
    """Encoded items, grouped like the workload (done once, outside any timing)."""
    return [[model.encode(to_score_item(item)) for item in group] for group in workload.groups]


def _batches(groups: list[list[EncodedItem]], batch_size: int, share: bool) -> list[list[int]]:
    """Batches as flat item indices. Unshared: items sorted by length, ``batch_size`` at a time.
    Shared: whole groups sorted by their longest item, ``batch_size // G`` groups at a time."""
    if not share:
        flat = [it for g in groups for it in g]
        order = sorted(range(len(flat)), key=lambda i: (flat[i].num_tokens, i))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    starts, n = [], 0
    for g in groups:
        starts.append(n)
        n += len(g)
    per_batch = max(1, batch_size // max(len(g) for g in groups))
    order = sorted(range(len(groups)), key=lambda gi: (max(it.num_tokens for it in groups[gi]), gi))
    out = []
    for i in range(0, len(order), per_batch):
        out.append([starts[gi] + j for gi in order[i:i + per_batch] for j in range(len(groups[gi]))])
    return out


def run_ceiling(model, groups: list[list[EncodedItem]], batch_size: int, *, share: bool = False,
                warmup: bool = True, batches: list[list[int]] | None = None) -> CeilingRun:
    """Time ``score_batch`` over all items at ``batch_size``; rewards come back in workload order.

    ``batches``: flat item indices per batch, instead of the length-sorted ones (bench/composition.py)."""
    flat = [it for g in groups for it in g]
    batches = batches or _batches(groups, batch_size, share)
    previous = model.share_prefix
    model.share_prefix = share
    try:
        if warmup:  # first calls at new shapes pay one-off allocator / kernel-selection costs
            model.score_batch([flat[i] for i in batches[len(batches) // 2]])
        run = CeilingRun(batch_size=batch_size, share=share, responses=len(flat), seconds=0.0)
        rewards: dict[int, float] = {}
        for idx in batches:
            start = time.perf_counter()
            outputs = model.score_batch([flat[i] for i in idx])
            ms = (time.perf_counter() - start) * 1000
            run.seconds += ms / 1000
            run.batch_ms.append(ms)
            if len(idx) == batch_size:
                run.full_batch_ms.append(ms)
            rewards.update((i, out.reward) for i, out in zip(idx, outputs, strict=True))
        run.rewards = [rewards[i] for i in range(len(flat))]
        return run
    finally:
        model.share_prefix = previous


def sweep(model, groups: list[list[EncodedItem]], batch_sizes: list[int], *,
          share: bool = False) -> dict[int, CeilingRun]:
    """One run per batch size (for sharing, sizes below one group are skipped)."""
    group_size = max(len(g) for g in groups)
    sizes = [bs for bs in batch_sizes if not share or bs >= group_size] or [group_size]
    return {bs: run_ceiling(model, groups, bs, share=share) for bs in sizes}


__all__ = ["CeilingRun", "encode_workload", "run_ceiling", "sweep", "to_score_item"]
