"""Composing rewards: hybrid (rule verifier + reward model) and ensembles of reward models.

Hybrid, as BaseReward uses it in GRPO: ``R = 1`` when a verifier says the answer matches the
ground truth, else ``sigmoid(r_RM)``, so a verified answer always outranks an unverified one
and the reward model orders the rest within (0, 1).

Ensemble: several reward models score the same item; their rewards combine by ``mean``
(BaseReward found the plain mean of several RMs the most robust) or ``weighted_mean``
(``sum(w_i r_i) / sum(w_i)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ENSEMBLE_METHODS = ("mean", "weighted_mean")


def sigmoid(x: float) -> float:
    """Numerically stable logistic function (no overflow for any finite x)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def hybrid_reward(rm_reward: float, verified: bool | None) -> float:
    """1.0 if the verifier matched, else sigmoid(RM reward) (also when there was nothing to verify)."""
    return 1.0 if verified else sigmoid(rm_reward)


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """Validated ensemble weights: ``n`` finite numbers >= 0 with a positive sum."""
    values = [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"{len(values)} ensemble weights for {n} models; give one weight per model")
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"ensemble weights must be finite and >= 0, got {values}")
    if sum(values) <= 0:
        raise ValueError("ensemble weights must not all be zero")
    return values


def combine_rewards(rewards: Sequence[float], method: str = "mean", weights: Sequence[float] | None = None) -> float:
    """One reward from several models' rewards for the same item."""
    if not rewards:
        raise ValueError("no rewards to combine")
    if method == "mean":
        return math.fsum(rewards) / len(rewards)
    if method == "weighted_mean":
        w = check_weights(weights if weights is not None else [1.0] * len(rewards), len(rewards))
        return math.fsum(wi * ri for wi, ri in zip(w, rewards, strict=True)) / math.fsum(w)
    raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(ENSEMBLE_METHODS)}")


__all__ = ["ENSEMBLE_METHODS", "check_weights", "combine_rewards", "hybrid_reward", "sigmoid"]
