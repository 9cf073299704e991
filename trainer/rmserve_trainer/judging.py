"""Score with a generative judge (GenRM) in process, through rmserve's own service: what the server returns.

A judge's reward is read from generated judgments (rmserve/api/judge.py, rmserve/models/judge_format.py):
prompts rendered from the judge template, judgments generated in chunks on the engine's worker, votes read
and aggregated, pairwise judges run in both orders. ``ServiceJudgeScorer`` does not re-implement any of it:
it starts an ``Engine`` and a ``ScoreService`` around the loaded checkpoint (what ``rmserve serve`` runs) and
sends each request as the wire body a client would send (``scoring.wire_item`` / ``wire_pair``: images as PNG
data URLs), so ``rmserve-train eval`` numbers equal ``/v1/score`` and ``/v1/compare`` on the same items.

    scorer = ServiceJudgeScorer.from_path("runs/judge")
    scorer.compare([(chosen_item, rejected_item)])   # pairwise judge: [P(chosen better)] (both orders, mean)
    scorer.score([item])                              # pointwise judge: [expected score]
"""

from __future__ import annotations

import asyncio

from rmserve.api.pairs import CompareRequest
from rmserve.api.protocol import ScoreRequest
from rmserve.api.service import ScoreService
from rmserve.engine import Engine, EngineConfig
from rmserve.errors import RMServeError
from rmserve.models import ScoreItem, load_reward_model
from rmserve.models.judge_format import JudgeConfig

from .scoring import wire_item, wire_pair


class ServiceJudgeScorer:
    """``score`` (pointwise judges) and ``compare`` (pairwise judges) through an in-process ScoreService.

    Like the other scorers, an item (or pair) the service refuses comes back as None with its reason in
    ``errors``; ``pairwise`` says which of the two methods measures this judge.
    """

    def __init__(self, model, *, batch_size: int = 16):
        config = JudgeConfig.of(model.extra_config)
        if config is None:
            raise ValueError(f"{model.name} has no judge section: score it with LocalScorer")
        self.name = model.name
        self.pairwise = config.mode == "pairwise"
        self.batch_size = batch_size
        self.errors: dict[int, str] = {}
        self.engine = Engine(model, EngineConfig(max_batch_size=batch_size, max_wait_ms=0.0))
        self.engine.start(warmup=False)
        self.service = ScoreService(self.engine)
        self._loop = asyncio.new_event_loop()
        self._image_urls: dict[int, str] = {}

    @classmethod
    def from_path(cls, path: str, *, device: str = "cpu", dtype: str = "float32",
                  batch_size: int = 16) -> ServiceJudgeScorer:
        return cls(load_reward_model(path, device=device, dtype=dtype), batch_size=batch_size)

    def close(self) -> None:
        self.engine.stop(drain=False)
        self._loop.close()

    def _call(self, endpoint, request):
        return self._loop.run_until_complete(endpoint(request))

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        """Each item's reward as ``/v1/score`` gives it (a batch the service refuses is retried item by item)."""
        self.errors = {}
        out: list[float | None] = [None] * len(items)
        for start in range(0, len(items), self.batch_size):
            self._score_rows(list(range(start, min(start + self.batch_size, len(items)))), items, out)
        self._image_urls.clear()
        return out

    def _score_rows(self, rows: list[int], items: list[ScoreItem], out: list[float | None]) -> None:
        try:
            request = ScoreRequest.model_validate({"items": [wire_item(items[i], self._image_urls) for i in rows]})
            result = self._call(self.service.score, request)
        except RMServeError as e:
            if len(rows) == 1:
                self.errors[rows[0]] = e.message
                return
            for i in rows:  # isolate the offending item(s)
                self._score_rows([i], items, out)
            return
        for i, item in zip(rows, result.response.items, strict=True):
            out[i] = float(item.reward)

    def compare(self, pairs: list[tuple[ScoreItem, ScoreItem]]) -> list[float | None]:
        """``prob_a_better`` of ``/v1/compare`` per (first, second) pair: P(first better), both orders averaged."""
        self.errors = {}
        out: list[float | None] = [None] * len(pairs)
        for i, (first, second) in enumerate(pairs):
            try:
                request = CompareRequest.model_validate(wire_pair(first, second, self._image_urls))
                out[i] = float(self._call(self.service.compare, request).prob_a_better)
            except RMServeError as e:
                self.errors[i] = e.message
        self._image_urls.clear()
        return out


__all__ = ["ServiceJudgeScorer"]
