"""Video frame processors for the families whose models take video, without torchvision.

The stock video processors (``Qwen2VLVideoProcessor``, ``LlavaOnevisionVideoProcessor``) import
torchvision at module level, which cannot be imported on our machines. These classes compute
the same tensors from already-sampled frames (rmserve.models.video samples them):

- resize: torchvision's ``resize`` on a uint8 tensor with bicubic + antialias is
  ``F.interpolate(float, mode="bicubic", antialias=True)``, clamped to [0, 255], rounded back to
  uint8; the same here, on the same tensors;
- rescale + normalize fused as HF does it: ``(x - 255 * mean) / (255 * std)`` in float32;
- Qwen-VL: ``smart_resize`` to multiples of ``patch_size * merge_size`` within the pixel bounds,
  then the temporal patching of ``Qwen2VLVideoProcessor.patchify`` (an odd frame count repeats
  the last frame), giving ``pixel_values_videos`` (patches, C*T*P*P) and ``video_grid_thw``;
- LLaVA-OneVision: a fixed ``(height, width)`` resize giving one (T, C, H, W) tensor per video.

They are installed as the HF processor's ``video_processor``, so the HF processor's own code
expands the video placeholder tokens (and, for Qwen2.5-VL, derives ``second_per_grid_ts``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize


@dataclass
class SampledVideoMetadata:
    """What the Qwen2.5-VL processor reads from a video processor's output (``sampled_fps``)."""

    sampled_fps: float
    total_num_frames: int


def _frames_tensor(video) -> torch.Tensor:
    """(T, H, W, C) uint8 frames (array, or list of PIL images) -> (T, C, H, W) uint8 tensor."""
    array = video if isinstance(video, np.ndarray) else np.stack([np.asarray(f.convert("RGB")) for f in video])
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (T, C, H, W) -> uint8 (T, C, height, width), as torchvision's bicubic antialiased resize does it."""
    if frames.shape[-2:] == (height, width):
        return frames
    out = F.interpolate(frames.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def normalize_frames(frames: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return (frames.to(torch.float32) - mean_t) / std_t


class QwenVLFrameProcessor:
    """``pixel_values_videos`` / ``video_grid_thw`` as ``Qwen2VLVideoProcessor`` makes them."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, *, patch_size: int, temporal_patch_size: int, merge_size: int, min_pixels: int,
                 max_pixels: int, image_mean, image_std):
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.merge_size = merge_size
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, factor=self.patch_size * self.merge_size, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)

    def __call__(self, videos, video_metadata=None, **kwargs) -> BatchFeature:
        """``video_metadata``: one ``SampledVideoMetadata`` per video (its ``sampled_fps`` sets Qwen2.5-VL's
        temporal positions); without it 2 fps is assumed, the qwen-vl-utils default."""
        pixel_values, grids, metadata = [], [], []
        fps = [m.sampled_fps for m in video_metadata] if video_metadata is not None else [None] * len(videos)
        for video, rate in zip(videos, fps, strict=True):
            frames = _frames_tensor(video)
            h, w = self.target_size(*frames.shape[-2:])
            patches, grid = self.patchify(normalize_frames(resize_frames(frames, h, w), self.image_mean,
                                                           self.image_std))
            pixel_values.append(patches)
            grids.append(grid)
            metadata.append(SampledVideoMetadata(sampled_fps=float(rate or 2.0), total_num_frames=len(frames)))
        return BatchFeature({"pixel_values_videos": torch.cat(pixel_values), "video_grid_thw": torch.tensor(grids),
                             "video_metadata": metadata})

    def patchify(self, video: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """(T, C, H, W) float -> (grid_t * grid_h * grid_w, C * tp * P * P), ``Qwen2VLVideoProcessor``'s layout."""
        tp, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        if pad := -video.shape[0] % tp:
            video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        t, c, h, w = video.shape
        gt, gh, gw = t // tp, h // p, w // p
        patches = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return patches.reshape(gt * gh * gw, c * tp * p * p), [gt, gh, gw]


class PerVideo:
    """Per-video tensors of different frame counts. Not a list or array, so ``BatchFeature`` leaves it as it is
    instead of failing to stack it; indexing gives one video's (T, C, H, W) tensor, as the processor reads it."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.tensors = tensors

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tensors[index]

    def __len__(self) -> int:
        return len(self.tensors)


class LlavaOnevisionFrameProcessor:
    """``pixel_values_videos`` (videos, T, C, H, W) as ``LlavaOnevisionVideoProcessor`` makes them."""

    model_input_names = ["pixel_values_videos"]

    def __init__(self, *, height: int, width: int, image_mean, image_std):
        self.height, self.width = height, width
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    def __call__(self, videos, video_metadata=None, **kwargs) -> BatchFeature:
        out = [normalize_frames(resize_frames(_frames_tensor(v), self.height, self.width), self.image_mean,
                                self.image_std) for v in videos]
        return BatchFeature({"pixel_values_videos": PerVideo(out)})


def frame_processor_for(model_type: str, image_processor, path: str | None = None):
    """The family's frame processor: from ``video_preprocessor_config.json`` in ``path`` when there is one,
    else from the image processor's settings (what checkpoints without a video config get)."""
    saved: dict = {}
    config_path = os.path.join(path, "video_preprocessor_config.json") if path else None
    if config_path and os.path.exists(config_path):
        with open(config_path) as f:
            saved = json.load(f)
    mean = saved.get("image_mean", image_processor.image_mean)
    std = saved.get("image_std", image_processor.image_std)
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        size = saved.get("size") or {}
        ip = image_processor
        own = ip.size
        return QwenVLFrameProcessor(
            patch_size=saved.get("patch_size", ip.patch_size),
            temporal_patch_size=saved.get("temporal_patch_size", ip.temporal_patch_size),
            merge_size=saved.get("merge_size", ip.merge_size),
            min_pixels=saved.get("min_pixels", size.get("shortest_edge", own.shortest_edge)),
            max_pixels=saved.get("max_pixels", size.get("longest_edge", own.longest_edge)),
            image_mean=mean, image_std=std)
    if model_type == "llava_onevision":
        size = saved.get("size") or {"height": image_processor.size.height, "width": image_processor.size.width}
        return LlavaOnevisionFrameProcessor(height=size["height"], width=size["width"], image_mean=mean,
                                            image_std=std)
    return None
