"""The hazard taxonomy (docs/architecture.md, "Safety"): MLCommons hazard categories as Llama Guard 3 uses them.

A model's ``safety`` head names its outputs with these codes (``S1`` ... ``S14``); a head may
cover a subset, or use names of its own (they are then reported with the name unchanged).
S14 (Code Interpreter Abuse) only applies to text-only models.
"""

from __future__ import annotations

HAZARDS: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
TEXT_ONLY = frozenset({"S14"})


def category_name(code: str) -> str:
    """``"S10"`` -> ``"Hate"``; an unknown code comes back unchanged."""
    return HAZARDS.get(code.upper(), code)


def category_code(name_or_code: str) -> str | None:
    """The code for a code or a full name (case-insensitive): ``"hate"`` -> ``"S10"``; None if unknown."""
    key = name_or_code.strip()
    if key.upper() in HAZARDS:
        return key.upper()
    for code, name in HAZARDS.items():
        if name.lower() == key.lower():
            return code
    return None


def parse_guard_output(text: str) -> tuple[bool, list[str]]:
    """A generative guard's verdict: ``"safe"`` -> (False, []); ``"unsafe\\nS1,S10"`` -> (True, ["S1", "S10"])."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or lines[0].lower() != "unsafe":
        return False, []
    codes = []
    for part in ",".join(lines[1:]).split(","):
        code = category_code(part)
        if code and code not in codes:
            codes.append(code)
    return True, codes


__all__ = ["HAZARDS", "TEXT_ONLY", "category_code", "category_name", "parse_guard_output"]
