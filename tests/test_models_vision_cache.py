"""Vision-feature cache: same rewards as without it, encoder runs once per distinct image, bounded."""

from __future__ import annotations

import pytest
import torch

from rmserve.models import ScoreItem
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.vision_cache import VisionFeatureCache
from tests.conftest import random_image


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
@pytest.mark.parametrize("share_prefix", [False, True])
def test_cached_features_give_the_same_rewards(family, share_prefix):
    model = build_tiny_reward_model(family)
    images = [random_image(56, 42, seed=1), random_image(28, 70, seed=2)]
    items = [ScoreItem(prompt="Describe.", response="A red circle" + " again" * k, images=[images[k % 2]])
             for k in range(6)]
    items.append(ScoreItem(prompt="Two images.", response="Both.", images=images))
    items.append(ScoreItem(prompt="No image.", response="Text only."))
    encoded = [model.encode(it) for it in items]
    reference = torch.tensor([o.reward for o in model.score_batch(encoded)])

    model.enable_vision_cache(1 << 20)
    model.share_prefix = share_prefix
    calls = []
    original = model.base_model().get_image_features

    def counting(pixel_values, grid, **kw):
        calls.append(int(grid.shape[0]))
        return original(pixel_values, grid, **kw)

    model.base_model().get_image_features = counting
    first = torch.tensor([o.reward for o in model.score_batch(encoded)])
    second = torch.tensor([o.reward for o in model.score_batch(encoded)])
    assert torch.allclose(reference, first, atol=1e-5, rtol=0)
    assert torch.allclose(reference, second, atol=1e-5, rtol=0)
    assert sum(calls) == 2, f"each distinct image encoded once, got {calls}"
    # Counted per use of an image (8 a pass: 6 one-image items + one two-image item), however the rows were
    # batched or shared a prefix: 2 encodes = 2 misses, every other use a hit.
    stats = model.vision_cache.stats()
    assert (stats["misses"], stats["hits"]) == (2, 14)


def test_same_pixels_same_key_even_without_wire_hashes(tiny_models):
    model = tiny_models("qwen2_5_vl")
    a = model.encode(ScoreItem(prompt="p", response="r", images=[random_image(56, 56, 3), random_image(28, 28, 4)]))
    b = model.encode(ScoreItem(prompt="q", response="s", images=[random_image(56, 56, 3)]))
    assert len(a.image_keys) == 2 and a.image_keys[0] == b.image_keys[0] != a.image_keys[1]


def test_lru_is_bounded_by_bytes():
    cache = VisionFeatureCache(max_bytes=3 * 400)
    for i in range(10):
        cache.put(str(i), torch.zeros(100))  # 400 bytes each
    assert len(cache) == 3 and cache.bytes == 1200
    assert cache.get("9") is not None and cache.get("0") is None
    cache.put("big", torch.zeros(1000))  # larger than the whole cache: not stored
    assert cache.get("big") is None and cache.bytes <= 1200
