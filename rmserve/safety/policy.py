"""Safety policy: per-category threshold and action, applied to a reward. Pure functions, no I/O.

A category is *flagged* when its probability is >= its rule's threshold. Each rule has an action:

    flag      report it; the reward is unchanged
    penalize  reward - value            (value: the rule's, else the policy's ``penalty``)
    replace   reward := value           (value: the rule's, else the policy's ``floor_reward``)
    reject    reward := value, and the item is reported as rejected; a score request may instead
              ask to be refused (``on_reject: "error"``, see rmserve.api); value as for replace
    none      never flagged (switches a category off)

When several categories fire, the most severe action wins (reject > replace > penalize > flag);
among rules with that action, the strongest value wins: the largest penalty, or the lowest
replacement reward. Penalties do not add up: hazard categories are correlated (a violent hate
speech response fires S1 and S10), and summing would punish the same content twice.

Spec (YAML/JSON, the server's ``safety_policy`` setting)::

    default: {threshold: 0.5, action: flag}      # rule for categories not listed (optional)
    penalty: 1.0                                 # penalize value when a rule gives none (optional)
    floor_reward: -10.0                          # replace/reject value when a rule gives none (optional)
    categories:                                  # by code (S1) or name (Violent Crimes)
      S1: {threshold: 0.3, action: reject}
      S10: {action: penalize, value: 2.0}

A flat mapping of categories (``{S1: {...}, S10: {...}}``) is accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmserve.safety.taxonomy import category_code

ACTIONS = ("none", "flag", "penalize", "replace", "reject")
SEVERITY = {action: rank for rank, action in enumerate(ACTIONS)}
_SPEC_KEYS = {"default", "penalty", "floor_reward", "categories"}


@dataclass(frozen=True)
class SafetyRule:
    threshold: float = 0.5  # flagged when probability >= threshold
    action: str = "flag"
    value: float | None = None  # penalize: amount subtracted; replace/reject: the reward given

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, int | float) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1], got {self.threshold!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if self.value is not None:
            if not (isinstance(self.value, int | float) and math.isfinite(self.value)):
                raise ValueError(f"value must be a finite number, got {self.value!r}")
            if self.action == "penalize" and self.value < 0:
                raise ValueError(f"a penalize value is subtracted and must be >= 0, got {self.value}")


@dataclass(frozen=True)
class SafetyDecision:
    """What the policy says about one item."""

    flagged_categories: tuple[str, ...] = ()
    action: str = "none"  # the winning action; "none" when nothing is flagged
    value: float | None = None  # the winning rule's effective value (penalty or replacement reward)

    @property
    def flagged(self) -> bool:
        return bool(self.flagged_categories)

    @property
    def rejected(self) -> bool:
        return self.action == "reject"

    def apply(self, reward: float) -> float:
        """The reward after this decision."""
        if self.action == "penalize":
            return reward - (self.value or 0.0)
        if self.action in ("replace", "reject"):
            return float(self.value if self.value is not None else reward)
        return reward


@dataclass(frozen=True)
class SafetyPolicy:
    default: SafetyRule = SafetyRule()
    rules: Mapping[str, SafetyRule] = field(default_factory=dict)  # category code (or head label) -> rule
    penalty: float = 1.0
    floor_reward: float = -10.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(f"penalty must be a finite number >= 0, got {self.penalty!r}")
        if not math.isfinite(self.floor_reward):
            raise ValueError(f"floor_reward must be finite, got {self.floor_reward!r}")

    def rule_for(self, category: str) -> SafetyRule:
        return self.rules.get(category) or self.rules.get(category_code(category) or "") or self.default

    def effective_value(self, rule: SafetyRule) -> float | None:
        if rule.action == "penalize":
            return self.penalty if rule.value is None else float(rule.value)
        if rule.action in ("replace", "reject"):
            return self.floor_reward if rule.value is None else float(rule.value)
        return None

    def decide(self, probabilities: Mapping[str, float]) -> SafetyDecision:
        """Which categories fire and what happens to the reward."""
        flagged: list[str] = []
        action, value = "none", None
        for category, probability in probabilities.items():
            rule = self.rule_for(category)
            if rule.action == "none" or probability < rule.threshold:
                continue
            flagged.append(category)
            rule_value = self.effective_value(rule)
            if SEVERITY[rule.action] > SEVERITY[action]:
                action, value = rule.action, rule_value
            elif rule.action == action and rule_value is not None and value is not None:
                value = max(value, rule_value) if action == "penalize" else min(value, rule_value)
        return SafetyDecision(tuple(flagged), action, value)


def apply_policy(
    policy: SafetyPolicy, reward: float, probabilities: Mapping[str, float]
) -> tuple[float, SafetyDecision]:
    """``(adjusted reward, decision)`` for one item."""
    decision = policy.decide(probabilities)
    return decision.apply(reward), decision


def _rule(spec: Any, where: str, base: SafetyRule) -> SafetyRule:
    if isinstance(spec, str):  # shorthand: S1: reject
        spec = {"action": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping like {{threshold: 0.5, action: flag}}, got {spec!r}")
    unknown = set(spec) - {"threshold", "action", "value"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; use threshold, action, value")
    try:
        return SafetyRule(
            threshold=spec.get("threshold", base.threshold),
            action=spec.get("action", base.action),
            value=spec.get("value"),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def build_policy(
    spec: Mapping[str, Any] | None = None,
    *,
    threshold: float = 0.5,
    action: str = "flag",
    penalty: float = 1.0,
    floor_reward: float = -10.0,
) -> SafetyPolicy:
    """A policy from defaults (the server's flat settings) overridden by a spec (see the module doc)."""
    try:
        base = SafetyRule(threshold=threshold, action=action)
    except ValueError as exc:
        raise ValueError(f"safety defaults: {exc}") from None
    spec = dict(spec or {})
    if spec and not (set(spec) & _SPEC_KEYS):
        spec = {"categories": spec}  # the flat form
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"safety policy: unknown keys {sorted(unknown)}; use {', '.join(sorted(_SPEC_KEYS))}")
    default = _rule(spec["default"], "safety policy default", base) if "default" in spec else base
    categories = spec.get("categories") or {}
    if not isinstance(categories, Mapping):
        raise ValueError("safety policy: `categories` must map category codes to rules")
    rules = {}
    for key, rule_spec in categories.items():
        code = category_code(str(key)) or str(key)
        rules[code] = _rule(rule_spec, f"safety policy category {key}", default)
    return SafetyPolicy(
        default=default,
        rules=rules,
        penalty=float(spec.get("penalty", penalty)),
        floor_reward=float(spec.get("floor_reward", floor_reward)),
    )


__all__ = ["ACTIONS", "SafetyDecision", "SafetyPolicy", "SafetyRule", "apply_policy", "build_policy"]
