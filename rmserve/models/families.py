"""Per-family input handling: prompt tokenization with images, positions, and batch collation.

A family knows how its backbone wants images (Qwen-VL: flat patches + ``image_grid_thw`` and
3D M-RoPE positions; LLaVA-OneVision: anyres patch stacks + ``image_sizes``; text: none) and
how to give every row of a padded batch exactly the positions it would have alone.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidInput
from .pooling import text_position_ids


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

    def tokenize_prompt(self, prompt_text: str, images: list, add_special_tokens: bool) -> tuple[list[int], dict]:
        if images:
            raise InvalidInput("this model is text-only and takes no images", param="images")
        ids = self.tokenizer(prompt_text, add_special_tokens=add_special_tokens)["input_ids"]
        return list(ids), {}

    def item_positions(self, input_ids: list[int], vision: dict) -> dict:
        return {}

    def split_images(self, vision: dict) -> list[torch.Tensor]:
        """This item's pixel tensors, one per image (content keys are hashed from them)."""
        pv = vision.get("pixel_values")
        return [] if pv is None else list(pv)

    def batch_inputs(self, items: list, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        return {"position_ids": text_position_ids(attention_mask)}


class QwenVLFamily(TextFamily):
    """Qwen2-VL / Qwen2.5-VL: positions are 3D M-RoPE ids computed per item, unpadded."""

    multimodal = True

    def __init__(self, backbone, processor):
        super().__init__(backbone, processor.tokenizer)
        self.processor = processor
        cfg = backbone.config
        self.image_token_id = cfg.image_token_id
        self.image_token_ids = (cfg.image_token_id, cfg.vision_start_token_id, getattr(cfg, "vision_end_token_id", -1))

    def tokenize_prompt(self, prompt_text, images, add_special_tokens):
        out = process_images(self.processor, images or None, text=[prompt_text], return_tensors="pt",
                             add_special_tokens=add_special_tokens)
        vision = {}
        if images:
            vision = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
        return out["input_ids"][0].tolist(), vision

    def split_images(self, vision):
        if "pixel_values" not in vision:
            return []
        return list(vision["pixel_values"].split(vision["image_grid_thw"].prod(-1).tolist()))

    def item_positions(self, input_ids, vision):
        ids = torch.tensor([input_ids])
        grid = vision.get("image_grid_thw")
        if grid is None:
            pos = torch.arange(len(input_ids)).view(1, -1).expand(3, -1).clone()
            return {"position_ids": pos, "rope_delta": 0}
        mm_types = (ids == self.image_token_id).int()
        # get_rope_index only reads the config; safe to call from preprocessing threads.
        pos, delta = self.backbone.model.get_rope_index(ids, mm_token_type_ids=mm_types, image_grid_thw=grid)
        return {"position_ids": pos[:, 0], "rope_delta": int(delta.item())}  # (3, L)

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
        return kwargs


class LlavaOnevisionFamily(TextFamily):
    """LLaVA-OneVision: anyres patch stacks padded to a common patch count; 1D positions."""

    multimodal = True

    def __init__(self, backbone, processor):
        super().__init__(backbone, processor.tokenizer)
        self.processor = processor
        self.image_token_id = backbone.config.image_token_id
        self.image_token_ids = (self.image_token_id,)

    def tokenize_prompt(self, prompt_text, images, add_special_tokens):
        out = process_images(self.processor, [images] if images else None, text=[prompt_text],
                             return_tensors="pt", add_special_tokens=add_special_tokens)
        vision = {}
        if images:
            vision = {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"],
                      "num_images": len(images)}
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
        return kwargs


def make_family(name: str, backbone, processor) -> TextFamily:
    if name in ("qwen2_vl", "qwen2_5_vl"):
        return QwenVLFamily(backbone, processor)
    if name == "llava_onevision":
        return LlavaOnevisionFamily(backbone, processor)
    return TextFamily(backbone, processor)
