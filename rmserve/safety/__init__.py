"""Safety: the hazard taxonomy and the per-category policy (pure functions; no I/O, no model)."""

from rmserve.safety.policy import ACTIONS, SafetyDecision, SafetyPolicy, SafetyRule, apply_policy, build_policy
from rmserve.safety.taxonomy import HAZARDS, category_code, category_name, parse_guard_output

__all__ = [
    "ACTIONS",
    "HAZARDS",
    "SafetyDecision",
    "SafetyPolicy",
    "SafetyRule",
    "apply_policy",
    "build_policy",
    "category_code",
    "category_name",
    "parse_guard_output",
]
