"""A bounded LRU of preprocessed prompts: token ids + processor tensors, keyed by prompt text and images.

In GRPO the G requests of a group carry the same prompt and image(s), and each would otherwise run
the image processor (resize, normalise, patchify: ~1.5 ms for 224x224, far more for large images)
and the tokenizer again. That CPU work runs beside the forward on the same cores, so on a small CPU
it slows the model itself (tests and bench numbers in rmserve/models/chunking.py's neighbourhood).
Only prompts with images whose content hashes are known (the server's decoded images) are cached:
text-only prompts tokenize in microseconds. Values are shared read-only; callers copy the dict.
An entry also holds the prompt's own M-RoPE positions, which each response's positions extend
(``QwenVLFamily.item_positions(..., prefix=...)``) instead of walking the prompt's images again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import torch

from ..lru import ByteLRU

Entry = tuple[list[int], dict, "dict | None"]  # prompt ids, processor tensors, the prompt's positions


def _nbytes(vision: dict) -> int:
    return sum(v.numel() * v.element_size() for v in vision.values() if isinstance(v, torch.Tensor))


class PromptCache(ByteLRU[tuple[list[int], dict, dict | None]]):
    """Values: (prompt ids, processor tensors, the prompt's positions from ``family.item_positions`` or None)."""

    def __init__(self, max_bytes: int):
        super().__init__(max_bytes)
        self._flight = threading.Lock()
        self._computing: dict[Hashable, threading.Event] = {}

    def put(self, key: Hashable, ids: list[int], vision: dict,  # type: ignore[override]
            positions: dict | None = None) -> None:
        super().put(key, (ids, vision, positions), _nbytes(vision) + _nbytes(positions or {}) + 8 * len(ids))

    def get_or_compute(self, key: Hashable, compute: Callable[[], Entry]) -> Entry:
        """The entry for ``key``, computed (and stored) on a miss by one thread only: a GRPO group's G requests
        arrive together and all missed at once, so each group ran the processor ~1.7 times instead of once
        (measured: 54 misses for 32 groups at 64 in flight). The others wait for that one; if it fails, the next
        one tries itself (and meets the same error). One miss per computation, a hit for every waiter."""
        while True:
            with self._flight:
                with self._lock:
                    found = self._entries.get(key)
                if found is None:
                    event = self._computing.get(key)
                    if event is None:
                        event = self._computing[key] = threading.Event()
                        break
            if found is not None:
                value = self.get(key)  # counts the hit, refreshes recency
                if value is not None:
                    return value
                continue  # evicted in between: look again
            event.wait()
        with self._lock:
            self.misses += 1
        try:
            value = compute()
            self.put(key, *value)
            return value
        finally:
            with self._flight:
                del self._computing[key]
            event.set()


__all__ = ["PromptCache"]
