"""Conversations as policies produce them: images and videos in any turn, multi-turn with tool turns.

The reference for every family is the HF processor + chat template + the backbone's own forward
(its own M-RoPE / anyres / video feature code), on the same conversation written by hand in HF's
content-part form: our reward must equal the head applied to that forward's last hidden state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rmserve.errors import InvalidInput
from rmserve.models import ScoreItem
from rmserve.models.prefix import find_groups
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.types import VideoClip
from rmserve.models.video_processors import SampledVideoMetadata
from tests.conftest import random_image

MULTIMODAL = ("qwen2_5_vl", "qwen2_vl", "llava_onevision")


def smooth_frame(seed: int, w: int = 56, h: int = 42) -> Image.Image:
    """A gradient with a seeded offset: frames differ from each other but are not noise."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 4 + seed * 37) % 256, (y * 5 + seed * 11) % 256, ((x + y) * 3 + seed * 53) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def clip(seeds, fps: float = 2.0) -> VideoClip:
    return VideoClip(frames=[smooth_frame(s) for s in seeds], fps=fps)


def conversation(images, videos, response="The red circle is to the left."):
    """system, user (text + image), assistant, user (video, text, image), assistant tool call, tool result."""
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "What colour is the shape?"}, {"type": "image"}]},
        {"role": "assistant", "content": "It is red."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And here?"}, {"type": "image"}]},
        {"role": "assistant", "content": "Let me count the objects."},
        {"role": "tool", "content": "3"},
    ]
    return ScoreItem(response=response, messages=messages, images=list(images), videos=list(videos))


def hf_reference(model, item: ScoreItem) -> float:
    """The reward from the HF processor + chat template + the backbone's own forward (no rmserve code path)."""
    proc = model.processor
    hf_messages = [dict(m) for m in item.messages] + [{"role": "assistant", "content": item.response}]
    text = proc.tokenizer.apply_chat_template(hf_messages, tokenize=False).rstrip()
    kwargs = {}
    if item.videos:
        kwargs["videos"] = [np.stack([np.asarray(f) for f in v.frames]) for v in item.videos]
        kwargs["video_metadata"] = [SampledVideoMetadata(v.fps, len(v.frames)) for v in item.videos]
    images = item.images or None
    if model.family_name == "llava_onevision" and images:
        images = [images]
    inputs = proc(text=[text], images=images, return_tensors="pt", **kwargs)
    inputs.pop("video_metadata", None)
    if model.family_name == "llava_onevision":
        inputs.pop("mm_token_type_ids", None)
        if item.videos:  # the HF model takes one (videos, T, C, H, W) tensor: equal frame counts only
            inputs["pixel_values_videos"] = torch.stack(inputs["pixel_values_videos"].tensors)
        if item.images:
            inputs["batch_num_images"] = torch.tensor([len(item.images)])
    with torch.inference_mode():
        hidden = model.base_model()(**inputs, use_cache=False).last_hidden_state[:, -1]
        return model.apply_heads(hidden)["reward"].item()


@pytest.fixture(scope="module", params=MULTIMODAL)
def mm_model(request):
    return build_tiny_reward_model(request.param)


def test_interleaved_conversation_equals_hf_processor_and_forward(mm_model):
    item = conversation([smooth_frame(1), random_image(70, 42, seed=2)], [clip([10, 11, 12, 13, 14])])
    ours = mm_model.score([item])[0].reward
    assert ours == pytest.approx(hf_reference(mm_model, item), abs=1e-5)


def test_several_videos_and_images_in_assistant_turns_equal_hf(mm_model):
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "See:"}, {"type": "image"}]},
        {"role": "user", "content": [{"type": "text", "text": "Compare with"}, {"type": "video"}]},
    ]
    # LLaVA-OV's own forward stacks an item's videos, so its reference needs equal frame counts.
    second = [4, 5, 6] if mm_model.family_name == "llava_onevision" else [4, 5, 6, 7, 8, 9]
    item = ScoreItem(response="They match.", messages=messages, images=[smooth_frame(5)],
                     videos=[clip([1, 2, 3], fps=1.5), clip(second, fps=3.0)])
    assert mm_model.score([item])[0].reward == pytest.approx(hf_reference(mm_model, item), abs=1e-5)


def variants(base_images, base_frames):
    """(name, item) pairs that each change one image or frame of the base conversation."""
    a, b = base_images
    frames = list(base_frames)
    yield "changed image in turn 3", conversation([a, smooth_frame(99)], [clip(frames)])
    yield "swapped images", conversation([b, a], [clip(frames)])
    yield "changed frame", conversation([a, b], [clip(frames[:2] + [77] + frames[3:])])
    yield "dropped frame", conversation([a, b], [clip(frames[:-1])])
    yield "reordered frames", conversation([a, b], [clip([frames[1], frames[0]] + frames[2:])])
    dropped = conversation([a], [clip(frames)])
    dropped.messages[3]["content"] = dropped.messages[3]["content"][:2]  # the turn-3 image part removed
    yield "dropped image", dropped


def test_changing_dropping_or_reordering_one_image_or_frame_changes_the_reward(mm_model):
    images, frames = [smooth_frame(1), smooth_frame(2)], [10, 11, 12, 13, 14, 15]
    base = mm_model.score([conversation(images, [clip(frames)])])[0].reward
    for name, item in variants(images, frames):
        reward = mm_model.score([item])[0].reward
        assert abs(reward - base) > 1e-6, name


def test_batches_of_conversations_are_padding_and_neighbour_invariant(mm_model):
    items = [conversation([smooth_frame(i), smooth_frame(i + 20, 42, 28)], [clip(range(i, i + 2 + i % 4))],
                          response="Answer " * (1 + i % 3)) for i in range(5)]
    items += [ScoreItem(prompt="text only " * (i + 1), response="ok") for i in range(2)]
    items += [ScoreItem(response=f"Reply {k}", messages=items[0].messages, images=items[0].images,
                        videos=items[0].videos) for k in range(3)]  # a GRPO group: shared prefix
    encoded = [mm_model.encode(it) for it in items]
    alone = torch.tensor([mm_model.score_batch([e])[0].reward for e in encoded])
    try:
        for side in ("left", "right"):
            mm_model.padding_side = side
            mm_model.share_prefix = True
            mm_model.enable_vision_cache(1 << 24)
            batched = torch.tensor([o.reward for o in mm_model.score_batch(encoded)])
            assert torch.allclose(alone, batched, atol=1e-4, rtol=0), (side, (alone - batched).abs().max())
    finally:
        mm_model.padding_side, mm_model.share_prefix, mm_model.vision_cache = "right", False, None


def test_top_level_images_keep_their_place_in_the_first_user_turn(mm_model):
    """The original form (string content + top-level images) renders exactly as images-first parts."""
    images = [smooth_frame(3), smooth_frame(4)]
    legacy = ScoreItem(response="Two shapes.", images=images, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many?"}])
    explicit = ScoreItem(response="Two shapes.", images=images, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "How many?"}]}])
    prompt_form = ScoreItem(response="Two shapes.", images=images, prompt="How many?")
    explicit_prompt = ScoreItem(response="Two shapes.", images=images, messages=[
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "How many?"}]}])
    assert mm_model.encode(legacy).input_ids == mm_model.encode(explicit).input_ids
    r = [o.reward for o in mm_model.score([legacy, explicit, prompt_form, explicit_prompt])]
    assert r[0] == pytest.approx(r[1], abs=1e-6) and r[2] == pytest.approx(r[3], abs=1e-6)


def test_groups_differing_only_in_a_later_turns_image_stay_apart_and_caches_hit():
    model = build_tiny_reward_model("qwen2_5_vl")
    first, later_a, later_b = smooth_frame(1), smooth_frame(2), smooth_frame(3)
    group_a = [conversation([first, later_a], [clip([5, 6])], response=f"Reply {k}") for k in range(3)]
    group_b = [conversation([first, later_b], [clip([5, 6])], response=f"Reply {k}") for k in range(3)]
    for it in group_a:
        it.image_hashes = ["first", "later-a"]
        it.videos[0].key = "clip"
    for it in group_b:
        it.image_hashes = ["first", "later-b"]
        it.videos[0].key = "clip"
    items = group_a + group_b
    alone = [model.score([it])[0].reward for it in items]
    assert abs(alone[0] - alone[3]) > 1e-6, "the later image must matter"
    model.share_prefix = True
    model.enable_vision_cache(1 << 24)
    model.enable_prompt_cache(1 << 24)
    encoded = [model.encode(it) for it in items]
    groups, rest = find_groups(encoded)
    assert sorted(map(sorted, groups)) == [[0, 1, 2], [3, 4, 5]] and rest == []
    shared = [o.reward for o in model.score_batch(encoded)]
    assert shared == pytest.approx(alone, abs=1e-4)
    assert model.prompt_cache.stats()["hits"] >= 4  # each group's prompt processed once
    first_pass = model.vision_cache.stats()
    # The two prefixes run in one call: the shared first image and clip are encoded once, not per group.
    assert first_pass["entries"] == 4, first_pass  # first, later-a, later-b, clip
    again = [o.reward for o in model.score_batch([model.encode(it) for it in items])]
    assert again == pytest.approx(alone, abs=1e-4)
    second_pass = model.vision_cache.stats()
    # Counted per use: 6 items x (2 images + 1 clip) = 18 uses a pass, 4 encodes in the first, none in the second.
    assert (first_pass["misses"], first_pass["hits"]) == (4, 14)
    assert second_pass["misses"] == first_pass["misses"] and second_pass["hits"] == first_pass["hits"] + 18


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_two_equal_frames_patchify_like_the_image_processor(family):
    """A video of one frame twice is, patch for patch, the image processor's output for that frame
    (Qwen's image path repeats an image over the temporal patch): checks the temporal patch layout."""
    model = build_tiny_reward_model(family)
    frame = smooth_frame(7, 56, 28)  # already a multiple of 28 within the pixel bounds: no resampling
    image_out = model.processor.image_processor(images=[frame], return_tensors="pt")
    video_out = model.processor.video_processor([np.stack([np.asarray(frame)] * 2)])
    assert video_out["video_grid_thw"].tolist() == image_out["image_grid_thw"].tolist()
    assert torch.allclose(video_out["pixel_values_videos"], image_out["pixel_values"], atol=1e-5)


def test_tool_turns_render_and_unrenderable_roles_name_the_message():
    model = build_tiny_reward_model("qwen2")
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "calc(2+2)"},
                {"role": "tool", "content": "4"}]
    with_tool = model.score([ScoreItem(response="4", messages=messages)])[0].reward
    without = model.score([ScoreItem(response="4", messages=messages[:1])])[0].reward
    assert with_tool != pytest.approx(without, abs=1e-6)
    # A template that refuses tool turns (raise_exception), and one that silently drops them.
    template = model.tokenizer.chat_template
    try:
        model.tokenizer.chat_template = (
            "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
            "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        with pytest.raises(InvalidInput) as err:
            model.encode(ScoreItem(response="4", messages=messages))
        assert err.value.param == "messages.2.role"
        model.tokenizer.chat_template = (
            "{% for m in messages %}{% if m['role'] != 'tool' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
            "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        with pytest.raises(InvalidInput) as err:
            model.encode(ScoreItem(response="4", messages=messages))
        assert err.value.param == "messages.2.role"
    finally:
        model.tokenizer.chat_template = template


@pytest.mark.parametrize("messages, images, videos, param", [
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], 0, 0, "messages.1.role"),
    ([{"role": "narrator", "content": "q"}], 0, 0, "messages.0.role"),
    ([{"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "audio"}]}], 0, 0,
     "messages.0.content.1.type"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], 0, 0, "messages.0.content.0.text"),
    ([{"role": "user", "content": []}], 0, 0, "messages.0.content"),
    ([{"role": "user", "content": [{"type": "image"}]}], 2, 0, "messages"),
    ([{"role": "user", "content": [{"type": "video"}]}], 0, 0, "messages"),
])
def test_malformed_conversations_are_invalid_input_naming_the_field(messages, images, videos, param):
    model = build_tiny_reward_model("qwen2_5_vl")
    item = ScoreItem(response="r", messages=messages, images=[smooth_frame(i) for i in range(images)],
                     videos=[clip([1, 2]) for _ in range(videos)])
    with pytest.raises(InvalidInput) as err:
        model.encode(item)
    assert err.value.param == param


def test_text_only_families_refuse_videos():
    model = build_tiny_reward_model("qwen2")
    item = ScoreItem(response="r", messages=[{"role": "user", "content": [{"type": "video"}]}], videos=[clip([1])])
    with pytest.raises(InvalidInput) as err:
        model.encode(item)
    assert err.value.code == "videos_not_supported"


def test_a_template_without_video_support_is_refused_not_misplaced():
    model = build_tiny_reward_model("qwen2_5_vl")
    model.tokenizer.chat_template = model.tokenizer.chat_template.replace("<|video_pad|>", "")
    item = ScoreItem(response="r", messages=[{"role": "user", "content": [{"type": "video"}]}], videos=[clip([1])])
    with pytest.raises(InvalidInput) as err:
        model.encode(item)
    assert err.value.code == "unsupported_media_position"
