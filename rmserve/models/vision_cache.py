"""A bounded LRU of vision-encoder outputs keyed by image content (Qwen-VL families).

An image sent with G responses, or again in a later step, is encoded once. Entries are the
merged patch embeddings the language model consumes for that image (``(tokens, H)``), kept
on the model's device; the bound is in bytes. Only the engine's worker thread touches it.
The Qwen-VL vision tower attends within each image (``cu_seqlens``), so one image's features
do not depend on what else was in its batch: cached and fresh features agree to float noise.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class VisionFeatureCache:
    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> torch.Tensor | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.bytes -= self._nbytes(self._entries.pop(key))
        self._entries[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= self._nbytes(old)

    @staticmethod
    def _nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"entries": len(self), "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                "hit_ratio": self.hits / total if total else 0.0}


def encode_images_cached(base_model, cache: VisionFeatureCache, pixel_values: torch.Tensor,
                         image_grid_thw: torch.Tensor, keys: list[str]) -> tuple[torch.Tensor, ...]:
    """Per-image merged features for a Qwen-VL batch, running the vision tower only on misses."""
    patches_per_image = image_grid_thw.prod(-1).tolist()
    chunks = pixel_values.split(patches_per_image)
    feats: list[torch.Tensor | None] = [cache.get(k) for k in keys]
    todo: dict[str, int] = {}  # key -> first index needing it (a batch may repeat an image)
    for i, f in enumerate(feats):
        if f is None:
            todo.setdefault(keys[i], i)
    if todo:
        idx = list(todo.values())
        out = base_model.get_image_features(torch.cat([chunks[i] for i in idx]), image_grid_thw[idx],
                                            return_dict=True)
        fresh = dict(zip(todo, out.pooler_output, strict=True))
        for key, f in fresh.items():
            # A view of the batch's feature tensor would keep the whole batch alive after its siblings are
            # evicted (and the byte count would lie): each entry owns exactly its own storage.
            cache.put(key, f.clone())
        feats = [f if f is not None else fresh[k] for f, k in zip(feats, keys, strict=True)]
    return tuple(feats)  # type: ignore[arg-type]
