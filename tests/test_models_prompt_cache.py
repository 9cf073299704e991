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


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_positions_extended_from_the_cached_prompt_equal_get_rope_index(tiny_models, family):
    """A cached prompt's M-RoPE positions, continued over the response, are exactly the positions of the whole
    sequence: images at the start, in the middle and at the very end of the prompt (a response right after an image)."""
    model = tiny_models(family)
    images = [random_image(56, 42, seed=1), random_image(28, 56, seed=2)]
    turns = [
        [{"type": "image"}, {"type": "text", "text": "What is this?"}],
        [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "text", "text": "with"}, {"type": "image"}],
    ]
    for parts in turns:
        n = sum(p["type"] == "image" for p in parts)
        item = ScoreItem(response="r", messages=[{"role": "user", "content": parts}], images=images[:n],
                         image_hashes=[f"{k}" * 64 for k in range(n)])
        prompt_ids, vision, _ = model.encode_prompt(item)
        prefix = model.family.item_positions(prompt_ids, vision)
        for tail in ([7, 8, 9], [], list(range(10, 40))):
            ids = prompt_ids + tail
            fast = model.family.item_positions(ids, vision, prefix)
            full = model.family.item_positions(ids, vision)
            assert fast["position_ids"].dtype == full["position_ids"].dtype
            assert torch.equal(fast["position_ids"], full["position_ids"]) and fast["rope_delta"] == full["rope_delta"]
    # A tail holding vision tokens is not plain text: never extended (item_positions walks the whole sequence).
    for token in model.family.image_token_ids:
        assert model.family._extend_positions(prompt_ids + [5, token], prefix) is None


def test_a_group_arriving_at_once_runs_the_processor_once(tiny_models, monkeypatch):
    """G requests of a group miss the cache together; one thread preprocesses, the others wait for its entry."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_models("qwen2_5_vl")
    image = random_image(56, 42, seed=5)
    calls = []
    real = model.family.tokenize_prompt

    def slow_tokenize_prompt(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # every other request arrives while this one is being preprocessed
        return real(*args, **kwargs)

    monkeypatch.setattr(model.family, "tokenize_prompt", slow_tokenize_prompt)
    items = [ScoreItem(prompt="Which shape?", response=f"Answer {k}.", images=[image], image_hashes=["c" * 64])
             for k in range(6)]
    start = threading.Barrier(len(items))

    def encode(item):
        start.wait()
        return model.encode(item)

    model.enable_prompt_cache(64 << 20)
    try:
        with ThreadPoolExecutor(len(items)) as pool:
            encoded = list(pool.map(encode, items))
        stats = model.prompt_cache.stats()
    finally:
        model.prompt_cache = None
    assert len(calls) == 1 and stats["misses"] == 1 and stats["hits"] == len(items) - 1
    alone = [model.encode(item) for item in items]  # no cache: each preprocessed on its own
    for a, b in zip(alone, encoded, strict=True):
        assert a.input_ids == b.input_ids and torch.equal(a.vision["position_ids"], b.vision["position_ids"])
        assert torch.equal(a.vision["pixel_values"], b.vision["pixel_values"])


def test_a_failed_preprocessing_leaves_no_entry_and_the_next_request_tries_again():
    cache = PromptCache(max_bytes=1 << 20)

    def fail():
        raise ValueError("bad image")

    with pytest.raises(ValueError):
        cache.get_or_compute("k", fail)
    assert cache.get_or_compute("k", lambda: PromptCache.entry([1], {}, None)) == ([1], {}, None)
    assert cache.stats()["misses"] == 2 and cache.get_or_compute("k", fail) == ([1], {}, None)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
@pytest.mark.parametrize("templated", [True, False])
def test_text_only_prompts_skip_the_processor_with_the_same_ids(tiny_models, family, templated):
    """A multimodal family tokenizes a prompt without media with its tokenizer alone (no processor call):
    the ids are the processor's, special tokens in the text included."""
    family_ = tiny_models(family).family
    prompts = ["What is shown?", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
               "  spaces, émojis 🙂 and\nnewlines\t", "a" * 300]
    for prompt in prompts:
        ids, vision = family_.tokenize_prompt(prompt, [], add_special_tokens=not templated)
        expected = family_.processor(text=[prompt], return_tensors="pt", add_special_tokens=not templated)
        assert ids == expected["input_ids"][0].tolist() and vision == {}, prompt
