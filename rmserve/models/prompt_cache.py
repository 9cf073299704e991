"""A bounded LRU of preprocessed prompts: token ids + processor tensors, keyed by prompt text and images.

In GRPO the G requests of a group carry the same prompt and image(s), and each would otherwise run
the image processor (resize, normalise, patchify: ~1.5 ms for 224x224, far more for large images)
and the tokenizer again. That CPU work runs beside the forward on the same cores, so on a small CPU
it slows the model itself (tests and bench numbers in rmserve/models/chunking.py's neighbourhood).
Only prompts with images whose content hashes are known (the server's decoded images) are cached:
text-only prompts tokenize in microseconds. Values are shared read-only; callers copy the dict.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import torch


def _nbytes(vision: dict) -> int:
    return sum(v.numel() * v.element_size() for v in vision.values() if isinstance(v, torch.Tensor))


class PromptCache:
    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[list[int], dict, int]] = OrderedDict()
        self._lock = threading.Lock()  # preprocessing runs in several threads
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> tuple[list[int], dict] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0], entry[1]

    def put(self, key: Hashable, ids: list[int], vision: dict) -> None:
        size = _nbytes(vision) + 8 * len(ids)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            self._entries[key] = (ids, vision, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        with self._lock:
            total = self.hits + self.misses
            return {"entries": len(self._entries), "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                    "hit_ratio": self.hits / total if total else 0.0}


__all__ = ["PromptCache"]
