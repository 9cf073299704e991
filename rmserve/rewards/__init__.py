"""Reward composition: answer verifiers, hybrid rule + model rewards, ensembles (pure functions)."""

from rmserve.rewards.composition import ENSEMBLE_METHODS, check_weights, combine_rewards, hybrid_reward, sigmoid
from rmserve.rewards.verifiers import DEFAULT_TOLERANCE, VERIFIERS, verify

__all__ = [
    "DEFAULT_TOLERANCE",
    "ENSEMBLE_METHODS",
    "VERIFIERS",
    "check_weights",
    "combine_rewards",
    "hybrid_reward",
    "sigmoid",
    "verify",
]
