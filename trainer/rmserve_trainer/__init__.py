"""rmserve-trainer: reward-model training that writes checkpoints rmserve serves.

The trainers, datasets and CLI are tracked in the trainer issue.
"""

__version__ = "0.1.0"
