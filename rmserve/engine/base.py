"""The engine's contracts: what it needs from a model, how it is configured, how it reports health."""

from __future__ import annotations

from dataclasses import dataclass

# The engine's whole contract with a model (torch-free); ItemScheduler only for per-item dispatch.
from rmserve.models.types import ItemScheduler, ScoringModel

DISPATCH_MODES = ("auto", "batch", "per_item")

__all__ = ["DISPATCH_MODES", "schedules_items", "EngineConfig", "EngineHealth", "ItemScheduler", "ScoringModel"]


def schedules_items(model: ScoringModel) -> bool:
    """Whether ``model`` batches across requests itself (implements ``ItemScheduler.submit_item``)."""
    return isinstance(model, ItemScheduler)


@dataclass
class EngineConfig:
    max_batch_size: int = 32
    # Padded token slots per forward (max_len * n). Must be >= the model's max_length, or the
    # longest allowed item could never run; 16k keeps a 2k-token batch of 8 in one forward.
    max_batch_tokens: int = 16384
    # How long the first item of a batch may wait for company while the worker is idle. A few ms
    # is enough to gather RL trainers' concurrent single-item requests; 0 disables waiting.
    max_wait_ms: float = 5.0
    # Items admitted and not finished (queued + preprocessing + computing). Full -> 429.
    max_queue_items: int = 1024
    preprocess_workers: int = 2
    drain_timeout_s: float = 30.0
    # Batch selection keeps items with the same prompt+images prefix together (the model runs that
    # prefix once for all of them) and budgets a group as prefix + responses, not G full sequences.
    share_prefix: bool = False
    # batch: the batcher forms batches and the worker runs each (model.score_batch). per_item: every item
    # goes to the model's own scheduler as it arrives (model.submit_item; the vLLM backend), which batches
    # across requests continuously. auto: per_item for models that schedule items themselves, else batch.
    dispatch: str = "auto"

    def __post_init__(self) -> None:
        checks = [
            (self.max_batch_size >= 1, "max_batch_size must be >= 1"),
            (self.max_batch_tokens >= 1, "max_batch_tokens must be >= 1"),
            (self.max_wait_ms >= 0, "max_wait_ms must be >= 0 (0 = run as soon as the worker is free)"),
            (self.max_queue_items >= 1, "max_queue_items must be >= 1"),
            (self.preprocess_workers >= 1, "preprocess_workers must be >= 1"),
            (self.drain_timeout_s >= 0, "drain_timeout_s must be >= 0"),
            (self.dispatch in DISPATCH_MODES, f"dispatch must be one of {', '.join(DISPATCH_MODES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class EngineHealth:
    healthy: bool  # threads alive (or not started yet); False means the process should be restarted
    accepting: bool  # started, warm and not draining
    queue_depth: int
    in_flight: int
    detail: str = ""
