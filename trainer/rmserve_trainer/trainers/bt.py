"""Bradley-Terry reward-model trainer (BaseReward recipe): the reward head reads prompt + response.

    loss = -log sigmoid(r_c - r_r - margin) + centering * mean((r_c + r_r)^2)
           [+ lm_weight * CE(chosen response)] [+ safety BCE] [+ attribute MSE]

Run it as ``rmserve-train bt`` (see ``rmserve_trainer.cli``), alone or under ``accelerate launch``.
"""

from __future__ import annotations

from ..data import PairCollator, response_items
from .base import PairTrainer, TrainConfig


class BTTrainer(PairTrainer):
    """``fit``, ``evaluate``, ``save_checkpoint`` (from PairTrainer) over prompt + response sequences."""

    name = "bt"

    def make_collator(self) -> PairCollator:
        return PairCollator(self.model, to_items=response_items, **self._collator_kwargs())


__all__ = ["BTTrainer", "TrainConfig"]
