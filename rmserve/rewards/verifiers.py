"""Rule-based answer verifiers for hybrid rewards: does a response's answer match the ground truth?

Pure functions ``verifier(response, ground_truth, *, tolerance) -> bool``, by name in ``VERIFIERS``:

    exact_match    the final answer equals the ground truth after normalisation (case, whitespace,
                   surrounding quotes/``$``, trailing period). The final answer is the text after the
                   last ``####`` (GSM8K), ``answer is`` or ``Answer:`` marker, else the whole response.
    numeric_match  the last number of the final answer is within ``tolerance`` of the ground truth
                   (absolute or relative: ``math.isclose(rel_tol=tol, abs_tol=tol)``); thousands
                   separators, fractions (``3/4``) and percent signs are understood.
    choice_letter  the chosen option letter A-E ("The answer is (C)", "**B.** because ...",
                   ``\\boxed{D}``, a bare "E") equals the ground truth's letter.
    boxed          the last ``\\boxed{...}`` (LaTeX, nested braces allowed) equals the ground truth:
                   numerically within ``tolerance`` when both are numbers, else as normalised LaTeX.

A response with nothing to extract never matches.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from fractions import Fraction

Verifier = Callable[..., bool]
DEFAULT_TOLERANCE = 1e-6

_FINAL_MARKERS = re.compile(r"####|\banswer\s+is\b|\banswer\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?\s*%?")
_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)?\s*[:\-]?\s*(?:option\s*)?[\(\[\*\s]*([A-E])\b", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*\(?([A-E])\)?\s*\}"),
    re.compile(r"\(([A-E])\)"),
    re.compile(r"^[\s\*\(\[]*([A-E])(?:[\.\):\]\*]|\s*$)"),
]


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).strip().casefold()
    text = re.sub(r"\s+", " ", text)
    text = text.strip(" \"'`$*")
    return text.rstrip(".!").strip()


def final_answer(response: str) -> str:
    """The text after the last final-answer marker (``####``, ``answer is``, ``Answer:``), else all of it."""
    matches = list(_FINAL_MARKERS.finditer(response))
    if not matches:
        return response
    tail = response[matches[-1].end() :].strip()
    return tail.lstrip(":").strip() or response


def parse_number(text: str) -> float | None:
    """A number written as ``1,234.5``, ``-3e-2``, ``3/4`` or ``12%`` (-> 0.12); None if it is not one."""
    text = text.strip().strip("$").replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%")
    if not text or not re.fullmatch(r"[-+]?[\d,]*\.?\d*(?:[eE][-+]?\d+)?(?:/\d+)?", text):
        return None
    try:
        if "/" in text:
            num, den = text.split("/")
            value = float(Fraction(num.replace(",", "")) / Fraction(den))
        else:
            value = float(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def last_number(text: str) -> float | None:
    """The last number written in ``text``."""
    for match in reversed([m for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group())]):
        value = parse_number(match.group())
        if value is not None:
            return value
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), with nested braces; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i].strip()
        i += 1
    return None  # unbalanced


def _close(a: float, b: float, tolerance: float) -> bool:
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _latex_normal(text: str) -> str:
    text = _normalize(text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("dfrac", "frac"),
                     ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), ("\\text", "")):
        text = text.replace(old, new)
    return re.sub(r"\s+", "", text)


def exact_match(response: str, ground_truth: str, *, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    answer = _normalize(final_answer(response))
    return bool(answer) and answer == _normalize(ground_truth)


def numeric_match(response: str, ground_truth: str, *, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    truth = parse_number(ground_truth) if parse_number(ground_truth) is not None else last_number(ground_truth)
    boxed_text = last_boxed(response)
    answer = last_number(boxed_text) if boxed_text is not None else None
    if answer is None:
        answer = last_number(final_answer(response))
    return truth is not None and answer is not None and _close(answer, truth, tolerance)


def choice_letter_of(text: str) -> str | None:
    """The option letter (A-E) a response chooses, or None."""
    for pattern in _CHOICE_PATTERNS:
        matches = pattern.findall(text.strip())
        if matches:
            return matches[-1].upper()
    return None


def choice_letter(response: str, ground_truth: str, *, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    truth = choice_letter_of(ground_truth) or ground_truth.strip().upper()[:1]
    answer = choice_letter_of(response)
    return answer is not None and truth in "ABCDE" and answer == truth


def boxed(response: str, ground_truth: str, *, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    answer = last_boxed(response)
    if answer is None:
        return False
    truth = last_boxed(ground_truth) or ground_truth
    a, b = parse_number(answer), parse_number(truth)
    if a is not None and b is not None:
        return _close(a, b, tolerance)
    return _latex_normal(answer) == _latex_normal(truth)


VERIFIERS: dict[str, Verifier] = {
    "exact_match": exact_match,
    "numeric_match": numeric_match,
    "choice_letter": choice_letter,
    "boxed": boxed,
}


def verify(name: str, response: str, ground_truth: str, *, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Run the verifier called ``name``; ValueError for an unknown name."""
    try:
        verifier = VERIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; choose one of {', '.join(VERIFIERS)}") from None
    return verifier(response, ground_truth, tolerance=tolerance)


__all__ = [
    "DEFAULT_TOLERANCE", "VERIFIERS", "boxed", "choice_letter", "choice_letter_of", "exact_match",
    "final_answer", "last_boxed", "last_number", "numeric_match", "parse_number", "verify",
]
