"""Scheduling only: admission, dynamic batching across requests, one model worker.

Thinks in ``EncodedItem``s and futures; knows nothing about JSON, HTTP or gRPC.
"""

from rmserve.engine.base import EngineConfig, EngineHealth, ScoringModel
from rmserve.engine.batching import padded_tokens, select_batch
from rmserve.engine.engine import Engine
from rmserve.engine.isolation import output_is_finite, score_isolated
from rmserve.engine.request import EngineResult, Permit
from rmserve.engine.stats import EngineStats, HistogramSnapshot, StatsSnapshot
from rmserve.engine.streaming import StreamCancelled, TokenStream

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineHealth",
    "EngineResult",
    "EngineStats",
    "HistogramSnapshot",
    "Permit",
    "ScoringModel",
    "StatsSnapshot",
    "StreamCancelled",
    "TokenStream",
    "output_is_finite",
    "padded_tokens",
    "score_isolated",
    "select_batch",
]
