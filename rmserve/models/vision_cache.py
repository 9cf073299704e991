"""A bounded LRU of vision-encoder outputs keyed by image content (Qwen-VL families).

An image sent with G responses, or again in a later step, is encoded once. Entries are the
merged patch embeddings the language model consumes for that image (``(tokens, H)``), kept
on the model's device; the bound is in bytes. Only the engine's worker thread touches it.
The Qwen-VL vision tower attends within each image (``cu_seqlens``), so one image's features
do not depend on what else was in its batch: cached and fresh features agree to float noise.
"""

from __future__ import annotations

import torch

from ..lru import ByteLRU


class VisionFeatureCache(ByteLRU[torch.Tensor]):
    def put(self, key: str, value: torch.Tensor) -> None:  # type: ignore[override]
        super().put(key, value, value.numel() * value.element_size())


def encode_images_cached(base_model, cache: VisionFeatureCache, pixel_values: torch.Tensor,
                         image_grid_thw: torch.Tensor, keys: list[str], *, uses: list[int] | None = None,
                         encode: str = "get_image_features") -> tuple[torch.Tensor, ...]:
    """Per-image (or, with ``encode="get_video_features"``, per-video) merged features for a Qwen-VL batch,
    running the vision tower only on misses. Image and video keys never collide: video keys are prefixed.

    Counted per use, like the image and prompt caches (one lookup per request): each image the batch
    encodes is one miss, every other use of an image (``uses[i]`` scored rows use ``keys[i]``; a shared
    prefix's image serves its whole group) is a hit. Counting one lookup per forward row instead made the
    hit rate depend on how a group's requests happened to be batched (all G in one batch: 1 lookup, 0 hits).
    """
    patches_per_image = image_grid_thw.prod(-1).tolist()
    chunks = pixel_values.split(patches_per_image)
    feats: list[torch.Tensor | None] = [cache.peek(k) for k in keys]
    todo: dict[str, int] = {}  # key -> first index needing it (a batch may repeat an image)
    for i, f in enumerate(feats):
        if f is None:
            todo.setdefault(keys[i], i)
    total_uses = sum(uses) if uses else len(keys)
    cache.record(hits=total_uses - len(todo), misses=len(todo))
    if todo:
        idx = list(todo.values())
        out = getattr(base_model, encode)(torch.cat([chunks[i] for i in idx]), image_grid_thw[idx],
                                            return_dict=True)
        fresh = dict(zip(todo, out.pooler_output, strict=True))
        for key, f in fresh.items():
            # A view of the batch's feature tensor would keep the whole batch alive after its siblings are
            # evicted (and the byte count would lie): each entry owns exactly its own storage.
            cache.put(key, f.clone())
        feats = [f if f is not None else fresh[k] for f, k in zip(feats, keys, strict=True)]
    return tuple(feats)  # type: ignore[arg-type]
