"""Forward chunks: how one engine batch is cut into forward calls on this device.

The engine's batch is a scheduling unit (who waits together, what a token budget admits); the
forward call is a compute unit, and on a CPU the two want different sizes. Measured on the
34M-parameter benchmark model (fp32, 2 threads, bench/): a forward call costs a fixed ~8 ms
(about 30 tokens' worth) plus ~0.27 ms per padded token up to ~1k tokens, and *more* per token
beyond that (8 x 256 tokens: 617 ms; 4 x 256: 281 ms), so on CPU large padded batches lose
twice: to padding and to the bigger matrices. On a GPU the fixed cost dominates until the
device is full, so one call per batch is right there.

``plan_chunks`` therefore sorts rows by length and splits them into contiguous runs minimising
``sum(padded tokens) + overhead x calls`` under a per-call token cap (an exact O(n^2) DP; n is
a batch, at most a few hundred). Every row is computed exactly as it would be alone (the
fidelity tests hold whatever the split), so this is purely a cost decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkPolicy:
    """Cost model of one forward call, in token-equivalents."""

    overhead_tokens: int = 32  # fixed cost of a call (Python, kernel launches), as tokens of work
    max_tokens: int | None = 1024  # padded tokens per call; None = no cap (one call when overhead is high)

    @classmethod
    def for_device(cls, device: str, max_tokens: int | None = None) -> ChunkPolicy:
        """CPU: ~30-token call overhead, calls capped at 1024 padded tokens (or ``max_tokens``).
        Accelerators: calls are nearly free to widen, so split only above ``max_tokens`` if given."""
        if str(device).startswith("cpu"):
            return cls(overhead_tokens=32, max_tokens=max_tokens or 1024)
        return cls(overhead_tokens=1 << 16, max_tokens=max_tokens)


def plan_chunks(lengths: Sequence[int], policy: ChunkPolicy) -> list[list[int]]:
    """Indices into ``lengths`` grouped into forward calls, each call's rows shortest first.

    Minimises padded tokens (each call pads to its longest row) plus ``policy.overhead_tokens``
    per call, with at most ``policy.max_tokens`` padded tokens per call (a row longer than the
    cap still gets a call of its own).
    """
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    sizes = [lengths[i] for i in order]
    cap = policy.max_tokens
    inf = float("inf")
    best = [0.0] + [inf] * n  # best[j]: cheapest cost of the first j sorted rows
    cut = [0] * (n + 1)  # cut[j]: where the last call of that optimum starts
    for j in range(1, n + 1):
        longest = sizes[j - 1]
        for i in range(j - 1, -1, -1):  # last call = sorted rows i..j-1, padded to `longest`
            padded = longest * (j - i)
            if cap is not None and padded > cap and j - i > 1:
                break  # taking even more rows only adds tokens
            cost = best[i] + padded + policy.overhead_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        chunks.append(order[i:j])
        j = i
    chunks.reverse()
    return chunks


__all__ = ["ChunkPolicy", "plan_chunks"]
