"""Hazard categories the safety head predicts (docs/architecture.md, "Safety"): MLCommons hazards as in Llama Guard 3.

Codes (``S1``...) are what records and checkpoints store; names are for people. S14 (code
interpreter abuse) is text-only but kept so label indices match Llama Guard's.
"""

from __future__ import annotations

from rmserve.safety.taxonomy import HAZARDS  # one taxonomy for the server and the trainer

CATEGORIES: list[str] = list(HAZARDS)


def parse_categories(spec: str | list[str] | None) -> list[str]:
    """``"S1,S10"`` or ``["S1", "S10"]`` -> validated codes in the given order; None or "all" -> all 14."""
    if spec is None or spec == "all":
        return list(CATEGORIES)
    codes = [c.strip() for c in (spec.split(",") if isinstance(spec, str) else spec) if c.strip()]
    unknown = [c for c in codes if c not in HAZARDS]
    if unknown:
        raise ValueError(f"unknown hazard categories {unknown}; use codes from {CATEGORIES}")
    if len(set(codes)) != len(codes):
        raise ValueError(f"hazard categories repeat: {codes}")
    return codes
