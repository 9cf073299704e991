"""One trainer per file, all with ``fit``, ``evaluate`` and ``save_checkpoint`` (shared loop in base.py)."""

from .base import PairTrainer, TrainConfig
from .bt import BTTrainer
from .critique import CritiqueTrainer

__all__ = ["BTTrainer", "CritiqueTrainer", "PairTrainer", "TrainConfig"]
