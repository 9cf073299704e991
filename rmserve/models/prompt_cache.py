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

from collections.abc import Hashable

import torch

from ..lru import ByteLRU


def _nbytes(vision: dict) -> int:
    return sum(v.numel() * v.element_size() for v in vision.values() if isinstance(v, torch.Tensor))


class PromptCache(ByteLRU[tuple[list[int], dict, "dict | None"]]):
    """Values: (prompt ids, processor tensors, the prompt's positions from ``family.item_positions`` or None)."""

    def put(self, key: Hashable, ids: list[int], vision: dict,  # type: ignore[override]
            positions: dict | None = None) -> None:
        super().put(key, *self.entry(ids, vision, positions))

    @staticmethod
    def entry(ids: list[int], vision: dict,
              positions: dict | None = None) -> tuple[tuple[list[int], dict, dict | None], int]:
        """(value, size in bytes) as stored, for ``get_or_compute``; the stored copies are never handed out."""
        return (list(ids), dict(vision), positions), _nbytes(vision) + _nbytes(positions or {}) + 8 * len(ids)


__all__ = ["PromptCache"]
