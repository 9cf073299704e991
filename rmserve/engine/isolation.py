"""Failure isolation: run a batch, and if it fails, find which item is to blame.

One bad item (a tensor the model chokes on, an input that overflows to NaN) must not fail the
other requests that happen to share its batch. When ``score_batch`` raises, the batch is
bisected and each half re-run, down to single items; an item that still fails alone gets a
``BackendError``. When the batch returns non-finite values, the finite outputs are kept (a
finite result is trustworthy) and only the non-finite items are re-run, bisected the same way:
if an item is finite alone, its NaN came from its neighbours (e.g. a low-precision overflow in
a padded row) and the alone-result is used. Cost: at most ~2n extra forwards for n bad items
in the worst case, zero when nothing fails.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from rmserve.errors import BackendError, RMServeError
from rmserve.models.types import EncodedItem, ScoreOutput

log = logging.getLogger(__name__)

ScoreFn = Callable[[list[EncodedItem]], list[ScoreOutput]]
Outcome = ScoreOutput | RMServeError


def output_is_finite(output: ScoreOutput) -> bool:
    values = [output.reward]
    values += list((output.attributes or {}).values())
    values += list((output.safety or {}).values())
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):  # not a number at all
        return False


def score_isolated(score_batch: ScoreFn, items: Sequence[EncodedItem]) -> list[Outcome]:
    """Score ``items``; each outcome is a ``ScoreOutput`` or the error for that item alone."""
    if not items:
        return []
    try:
        outputs = score_batch(list(items))
        if len(outputs) != len(items):
            raise RuntimeError(f"score_batch returned {len(outputs)} outputs for {len(items)} items")
    except Exception as exc:  # any backend failure is isolated here, never propagated
        if len(items) == 1:
            if isinstance(exc, RMServeError):
                return [exc]
            log.warning("forward failed for a single item: %s: %s", type(exc).__name__, exc)
            message = f"the model failed on this item: {type(exc).__name__}: {exc}"
            return [BackendError(message, code="forward_failed")]
        log.info("forward failed for a batch of %d (%s); bisecting", len(items), type(exc).__name__)
        mid = len(items) // 2
        return score_isolated(score_batch, items[:mid]) + score_isolated(score_batch, items[mid:])

    outcomes: list[Outcome] = list(outputs)
    bad = [i for i, out in enumerate(outputs) if not output_is_finite(out)]
    if not bad:
        return outcomes
    if len(items) == 1:
        return [
            BackendError(
                f"the model produced a non-finite score ({outputs[0].reward!r}) for this item",
                code="non_finite_score",
            )
        ]
    if len(bad) == len(items):  # everything non-finite: split to find the culprit(s)
        mid = len(items) // 2
        return score_isolated(score_batch, items[:mid]) + score_isolated(score_batch, items[mid:])
    for i, outcome in zip(bad, score_isolated(score_batch, [items[i] for i in bad]), strict=True):
        outcomes[i] = outcome
    return outcomes
