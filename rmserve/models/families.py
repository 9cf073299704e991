"""Per-family input handling: prompt tokenization with images, positions, and batch collation.

A family knows how its backbone wants images (Qwen-VL: flat patches + ``image_grid_thw`` and
3D M-RoPE positions; LLaVA-OneVision: anyres patch stacks + ``image_sizes``; text: none) and
how to give every row of a padded batch exactly the positions it would have alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..errors import InvalidInput
from .pooling import text_position_ids
from .qwen_pixels import QwenPixels
from .video_processors import SampledVideoMetadata


def _check_placeholders(prompt_text: str, token: str, n: int, kind: str) -> None:
    """The rendered prompt must hold one ``token`` per image/video: a template that drops media in some
    role (or a prompt that already holds placeholders) would otherwise misplace or lose them."""
    found = prompt_text.count(token)
    if found != n:
        raise InvalidInput(f"the chat template placed {found} {kind} placeholder(s) for {n} {kind}(s): it does not "
                           f"render {kind}s in every turn they were given in (or the text holds {token!r})",
                           param="messages", code="unsupported_media_position")


def _video_inputs(videos: list) -> dict:
    """Processor keyword arguments for ``videos`` (rmserve.models.types.VideoClip)."""
    if not videos:
        return {}
    arrays = [np.stack([np.asarray(f.convert("RGB")) for f in v.frames]) for v in videos]
    return {"videos": arrays, "video_metadata": [SampledVideoMetadata(v.fps, len(v.frames)) for v in videos]}


def detect_family(config) -> str:
    model_type = getattr(config, "model_type", "")
    if model_type in ("qwen2_vl", "qwen2_5_vl", "llava_onevision"):
        return model_type
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "seq_cls"
    return "causal_lm"


def process_images(processor, images: list, **kwargs):
    """``processor(images=..., **kwargs)``; an image the processor refuses is an ``InvalidInput`` naming it.

    Image processors check shapes the decoder accepted (Qwen-VL: aspect ratio under 200, at least one
    patch), and raise ValueError for the whole call; the client needs to know *which* image, so each
    image is tried alone with the image processor to find it (only on this error path).
    """
    try:
        return processor(images=images, **kwargs)
    except ValueError as exc:
        flat = [im for group in images for im in group] if images and isinstance(images[0], list) else images
        for j, image in enumerate(flat or []):
            try:
                processor.image_processor(images=[image], return_tensors="pt")
            except ValueError as alone:
                raise InvalidInput(
                    f"image {j} ({image.width}x{image.height}) cannot be processed by this model: {alone}",
                    param=f"images.{j}", code="invalid_image",
                ) from None
        raise exc


class TextFamily:
    """Causal LMs and sequence classifiers: 1D positions from the mask."""

    multimodal = False
    image_token_ids: tuple[int, ...] = ()

    def __init__(self, backbone, processor):
        self.backbone = backbone
        self.tokenizer = processor

    def tokenize_prompt(self, prompt_text: str, images: list, add_special_tokens: bool,
                        videos: list = ()) -> tuple[list[int], dict]:
        if images:
            raise InvalidInput("this model is text-only and takes no images", param="images")
        if videos:
            raise InvalidInput("this model is text-only and takes no videos", param="messages",
                               code="videos_not_supported")
        return self._text_ids(prompt_text, add_special_tokens), {}

    def _text_ids(self, prompt_text: str, add_special_tokens: bool) -> list[int]:
        """Prompt text (placeholders already expanded, if any) through the tokenizer alone. A multimodal
        processor does exactly this after its media, and ~0.3 ms of keyword merging and validation per call
        that a text request would otherwise pay (`python -m bench.encode_cost`)."""
        return list(self.tokenizer(prompt_text, add_special_tokens=add_special_tokens)["input_ids"])

    def item_positions(self, input_ids: list[int], vision: dict, prefix: dict | None = None) -> dict:
        """Per-item position inputs (none for 1D families: they come from the batch mask). ``prefix``: this
        method's result for a leading part of ``input_ids`` alone (the prompt), which a family may extend."""
        return {}

    def split_images(self, vision: dict) -> list[torch.Tensor]:
        """This item's pixel tensors, one per image (content keys are hashed from them)."""
        pv = vision.get("pixel_values")
        return [] if pv is None else list(pv)

    def batch_inputs(self, items: list, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        return {"position_ids": text_position_ids(attention_mask)}

    def encoder_inputs(self, base_model, inputs: dict) -> dict:
        """The batch's backbone inputs as the backbone's forward takes them (a hook for per-video encoding)."""
        return inputs


class QwenVLFamily(TextFamily):
    """Qwen2-VL / Qwen2.5-VL: positions are 3D M-RoPE ids computed per item, unpadded."""

    multimodal = True

    def __init__(self, backbone, processor):
        super().__init__(backbone, processor.tokenizer)
        self.processor = processor
        cfg = backbone.config
        self.image_token_id = cfg.image_token_id
        self.video_token_id = cfg.video_token_id
        self.image_token_ids = (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id,
                                getattr(cfg, "vision_end_token_id", -1))
        self._vision_ids = frozenset(self.image_token_ids)
        self.pixels = QwenPixels.from_processor(processor.image_processor)  # None: the processor does it all

    def tokenize_prompt(self, prompt_text, images, add_special_tokens, videos=()):
        _check_placeholders(prompt_text, self.processor.image_token, len(images), "image")
        _check_placeholders(prompt_text, self.processor.video_token, len(videos), "video")
        if not images and not videos:
            return self._text_ids(prompt_text, add_special_tokens), {}
        if not videos and (inputs := self._inputs_without_processor(prompt_text, images, add_special_tokens)):
            return inputs
        out = process_images(self.processor, images or None, text=[prompt_text], return_tensors="pt",
                             add_special_tokens=add_special_tokens, **_video_inputs(list(videos)))
        vision = {}
        if images:
            vision = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
        if videos:
            vision["pixel_values_videos"] = out["pixel_values_videos"]
            vision["video_grid_thw"] = out["video_grid_thw"]
            if "second_per_grid_ts" in out:  # Qwen2.5-VL: temporal positions follow the sampled frame rate
                vision["second_per_grid_ts"] = torch.as_tensor(out["second_per_grid_ts"], dtype=torch.float32)
        return out["input_ids"][0].tolist(), vision

    def _inputs_without_processor(self, prompt_text, images, add_special_tokens) -> tuple[list[int], dict] | None:
        """Ids and pixels from ``QwenPixels`` (the processor's, bit for bit); None where the processor must run:
        images it does not cover, or a shape the processor refuses (its path names the image)."""
        if self.pixels is None or not self.pixels.covers(images):
            return None
        try:
            vision = self.pixels.images(images)
        except ValueError:
            return None
        text = self.pixels.expand_placeholders(prompt_text, self.processor.image_token, vision["image_grid_thw"])
        return self._text_ids(text, add_special_tokens), vision

    def split_images(self, vision):
        if "pixel_values" not in vision:
            return []
        return list(vision["pixel_values"].split(vision["image_grid_thw"].prod(-1).tolist()))

    def item_positions(self, input_ids, vision, prefix=None):
        if prefix is not None:
            extended = self._extend_positions(input_ids, prefix)
            if extended is not None:
                return extended
        ids = torch.tensor([input_ids])
        grid, video_grid = vision.get("image_grid_thw"), vision.get("video_grid_thw")
        if grid is None and video_grid is None:
            pos = torch.arange(len(input_ids)).view(1, -1).expand(3, -1).clone()
            return {"position_ids": pos, "rope_delta": 0}
        mm_types = (ids == self.image_token_id).int() + 2 * (ids == self.video_token_id).int()
        extra = {"second_per_grid_ts": vision["second_per_grid_ts"]} if "second_per_grid_ts" in vision else {}
        # get_rope_index only reads the config; safe to call from preprocessing threads.
        pos, delta = self.backbone.model.get_rope_index(ids, mm_token_type_ids=mm_types, image_grid_thw=grid,
                                                        video_grid_thw=video_grid, **extra)
        return {"position_ids": pos[:, 0], "rope_delta": int(delta.item())}  # (3, L)

    def _extend_positions(self, input_ids: list[int], prefix: dict) -> dict | None:
        """The prompt's positions (``prefix``, computed once per GRPO group and cached) continued over a text-only
        tail: M-RoPE gives text after anything (text, an image, a video) the ids ``max(earlier) + 1, + 2, ...`` in all
        three rows, so the tail needs no walk over the prompt's images (``get_rope_index``: ~0.2 ms per request,
        profiled in bench/README.md), and the delta (``max + 1 - length``) is the prompt's. A tail holding vision
        tokens (None here) goes the whole way."""
        head = prefix["position_ids"]
        start = head.shape[1]
        if start > len(input_ids) or not self._vision_ids.isdisjoint(input_ids[start:]):
            return None
        first = int(head.max()) + 1 if start else 0
        tail = torch.arange(first, first + len(input_ids) - start, dtype=head.dtype).expand(3, -1)
        return {"position_ids": torch.cat([head, tail], dim=1), "rope_delta": prefix["rope_delta"]}

    def batch_inputs(self, items, input_ids, attention_mask):
        batch, length = input_ids.shape
        position_ids = torch.zeros(3, batch, length, dtype=torch.long)
        for row, item in enumerate(items):
            real = attention_mask[row].bool()
            position_ids[:, row, real] = item.vision["position_ids"]
        kwargs: dict[str, Any] = {"position_ids": position_ids}
        with_images = [it.vision for it in items if "pixel_values" in it.vision]
        if with_images:
            kwargs["pixel_values"] = torch.cat([v["pixel_values"] for v in with_images])
            kwargs["image_grid_thw"] = torch.cat([v["image_grid_thw"] for v in with_images])
        with_videos = [it.vision for it in items if "pixel_values_videos" in it.vision]
        if with_videos:  # positions are given, so second_per_grid_ts (a positions input only) stays behind
            kwargs["pixel_values_videos"] = torch.cat([v["pixel_values_videos"] for v in with_videos])
            kwargs["video_grid_thw"] = torch.cat([v["video_grid_thw"] for v in with_videos])
        return kwargs


class LlavaOnevisionFamily(TextFamily):
    """LLaVA-OneVision: anyres patch stacks padded to a common patch count; 1D positions."""

    multimodal = True

    def __init__(self, backbone, processor):
        super().__init__(backbone, processor.tokenizer)
        self.processor = processor
        self.image_token_id = backbone.config.image_token_id
        self.image_token_ids = (self.image_token_id, backbone.config.video_token_id)

    def tokenize_prompt(self, prompt_text, images, add_special_tokens, videos=()):
        _check_placeholders(prompt_text, self.processor.image_token, len(images), "image")
        _check_placeholders(prompt_text, self.processor.video_token, len(videos), "video")
        if not images and not videos:
            return self._text_ids(prompt_text, add_special_tokens), {}
        out = process_images(self.processor, [images] if images else None, text=[prompt_text],
                             return_tensors="pt", add_special_tokens=add_special_tokens, **_video_inputs(list(videos)))
        vision = {}
        if images:
            vision = {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"],
                      "num_images": len(images)}
        if videos:  # (1, T, C, H, W) per video: frame counts differ between videos (see encoder_inputs)
            vision["videos"] = [v.unsqueeze(0) for v in out["pixel_values_videos"].tensors]
        return out["input_ids"][0].tolist(), vision

    def batch_inputs(self, items, input_ids, attention_mask):
        kwargs: dict[str, Any] = {"position_ids": text_position_ids(attention_mask)}
        with_images = [it.vision for it in items if "pixel_values" in it.vision]
        if with_images:
            max_patches = max(v["pixel_values"].shape[1] for v in with_images)
            stacks = []
            for v in with_images:
                pv = v["pixel_values"]  # (n_images, patches, C, H, W)
                if pv.shape[1] < max_patches:
                    # The model slices each stack to its own patch count (from image_sizes), so zeros are never read.
                    pad = pv.new_zeros((pv.shape[0], max_patches - pv.shape[1], *pv.shape[2:]))
                    pv = torch.cat([pv, pad], dim=1)
                stacks.append(pv)
            kwargs["pixel_values"] = torch.cat(stacks)
            kwargs["image_sizes"] = torch.cat([v["image_sizes"] for v in with_images])
            kwargs["batch_num_images"] = torch.tensor([v["num_images"] for v in with_images])
        videos = [clip for it in items for clip in it.vision.get("videos", ())]
        if videos:
            kwargs["pixel_values_videos"] = videos
        return kwargs

    def encoder_inputs(self, base_model, inputs):
        """LLaVA-OV's forward takes one (videos, T, ...) tensor, so every video of a batch would need the same
        frame count: here each video is encoded on its own (the tower sees one frame at a time and pools per
        frame, so this is exactly the per-video result) and the features go in as ``mm_encoder_outputs``."""
        videos = inputs.get("pixel_values_videos")
        if not isinstance(videos, list):
            return inputs
        inputs = dict(inputs)
        del inputs["pixel_values_videos"]
        outputs = {}
        video_feats = [base_model.get_video_features(v, return_dict=True).pooler_output for v in videos]
        outputs["video"] = BaseModelOutputWithPooling(pooler_output=torch.cat(video_feats, dim=1))
        if "pixel_values" in inputs:
            outputs["image"] = base_model.get_image_features(
                inputs.pop("pixel_values"), inputs.pop("image_sizes"), batch_num_images=inputs.pop("batch_num_images"),
                return_dict=True)
        inputs["mm_encoder_outputs"] = outputs
        return inputs


def make_family(name: str, backbone, processor) -> TextFamily:
    if name in ("qwen2_vl", "qwen2_5_vl"):
        return QwenVLFamily(backbone, processor)
    if name == "llava_onevision":
        return LlavaOnevisionFamily(backbone, processor)
    return TextFamily(backbone, processor)
