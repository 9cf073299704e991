"""The preprocessed-prompt cache: a GRPO group's G requests run the image processor once, scores unchanged."""

from __future__ import annotations

import pytest
import torch

from rmserve.models import ScoreItem
from rmserve.models.prompt_cache import PromptCache
from tests.conftest import random_image


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_cached_prompt_encodes_and_scores_like_a_fresh_one(tiny_models, family):
    model = tiny_models(family)
    image = random_image(56, 42, seed=3)

    def item(response: str, digest: str = "a" * 64) -> ScoreItem:
        return ScoreItem(prompt="What is shown?", response=response, images=[image], image_hashes=[digest])

    fresh = [model.encode(item(f"A red circle, take {k}.")) for k in range(4)]
    model.enable_prompt_cache(64 << 20)
    try:
        cached = [model.encode(item(f"A red circle, take {k}.")) for k in range(4)]
        stats = model.prompt_cache.stats()
        assert stats["misses"] == 1 and stats["hits"] == 3 and stats["bytes"] > 0
        for a, b in zip(fresh, cached, strict=True):
            assert a.input_ids == b.input_ids and a.prefix_len == b.prefix_len and a.image_keys == b.image_keys
            assert a.vision.keys() == b.vision.keys()
            for key, value in a.vision.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, b.vision[key]), key
                else:
                    assert value == b.vision[key], key
        # Other image content (another hash) is another entry, never a wrong hit.
        model.encode(item("A red circle.", digest="b" * 64))
        assert model.prompt_cache.stats()["misses"] == 2
        rewards_fresh = [o.reward for o in model.score_batch(fresh)]
        rewards_cached = [o.reward for o in model.score_batch(cached)]
        assert rewards_fresh == pytest.approx(rewards_cached, abs=1e-6)
    finally:
        model.prompt_cache = None


def test_items_without_content_hashes_are_not_cached(tiny_models):
    model = tiny_models("qwen2_5_vl")
    model.enable_prompt_cache(64 << 20)
    try:
        model.encode(ScoreItem(prompt="Hi", response="there", images=[random_image(28, 28, 1)]))
        model.encode(ScoreItem(prompt="Hi", response="there"))
        assert model.prompt_cache.stats() == {"entries": 0, "bytes": 0, "hits": 0, "misses": 0, "hit_ratio": 0.0}
    finally:
        model.prompt_cache = None


def test_prompt_cache_is_bounded_in_bytes():
    cache = PromptCache(max_bytes=3 * (400 + 8 * 2))
    for k in range(5):
        cache.put(k, [1, 2], {"pixel_values": torch.zeros(100)})  # 400 bytes + 2 ids
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    assert cache.get(0) is None and cache.get(4) is not None
    cache.put("huge", [1], {"pixel_values": torch.zeros(10_000)})  # larger than the whole cache: skipped
    assert cache.get("huge") is None and len(cache) == 3


def test_a_group_preprocessing_at_once_runs_the_processor_once(tiny_models, monkeypatch):
    """The G requests of a group are preprocessed in parallel threads: one runs the processor, the others wait."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_models("qwen2_5_vl")
    image = random_image(56, 42, seed=5)
    runs = []
    real = model.family.tokenize_prompt

    def slow(*args, **kwargs):
        runs.append(1)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(model.family, "tokenize_prompt", slow)
    model.enable_prompt_cache(64 << 20)
    start = threading.Barrier(4)

    def encode(k):
        start.wait()
        return model.encode(ScoreItem(prompt="What is shown?", response=f"take {k}", images=[image],
                                      image_hashes=["c" * 64]))

    try:
        with ThreadPoolExecutor(4) as pool:
            encoded = list(pool.map(encode, range(4)))
        assert len(runs) == 1
        assert model.prompt_cache.stats()["misses"] == 1 and model.prompt_cache.stats()["hits"] == 3
        assert len({e.prefix_len for e in encoded}) == 1 and all(e.vision.keys() == encoded[0].vision.keys()
                                                                 for e in encoded)
    finally:
        model.prompt_cache = None
