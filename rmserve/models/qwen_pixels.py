"""Qwen2-VL / Qwen2.5-VL image inputs without the processor call's per-call machinery.

``processor(images=..., text=...)`` costs ~3 ms of CPU per 224x224 image on the benchmark model, most of it
outside the pixels: keyword merging and validation, float64 rescaling, a separate normalisation pass and a
float32 patchify copy (profiled in bench/README.md). With one image per request, that is a large share of a
request's serving CPU, and on a GPU serving CPU is what bounds a process's rate. ``QwenPixels`` produces the
same ``pixel_values`` bit for bit, ``image_grid_thw`` and prompt ids (tests/test_models_qwen_pixels.py checks
all three against the processor): it resizes with PIL exactly as the processor does, patchifies the uint8
image, and maps bytes to normalised floats through a 256-entry table per channel computed with the
processor's own arithmetic (float64 rescale, float32 cast, float32 mean/std), so every value is the one the
processor computes.

It covers the processor it was checked against (``Qwen2VLImageProcessorPil`` with resize, rescale,
normalise and RGB conversion on, RGB images); anything else keeps the processor path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

SUPPORTED_PROCESSORS = ("Qwen2VLImageProcessorPil",)
_CHANNEL_OFFSETS = np.array([0, 256, 512], dtype=np.uint16)  # channel c's rows in the flat (3 x 256) table


@dataclass(frozen=True)
class QwenPixels:
    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    resample: int
    table: np.ndarray  # (3, 256) float32: the processor's value for byte v in channel c

    @classmethod
    def from_processor(cls, image_processor) -> QwenPixels | None:
        """The fast path for this image processor, or None where it would not match it exactly."""
        ip = image_processor
        if type(ip).__name__ not in SUPPORTED_PROCESSORS:
            return None
        if not all(getattr(ip, flag, False) for flag in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb")):
            return None
        size = ip.size
        min_pixels, max_pixels = size.get("shortest_edge"), size.get("longest_edge")
        mean, std = np.asarray(ip.image_mean, dtype=np.float32), np.asarray(ip.image_std, dtype=np.float32)
        if not min_pixels or not max_pixels or mean.shape != (3,) or std.shape != (3,):
            return None
        # transformers.image_transforms.rescale then normalize, elementwise: float64 * scale -> float32,
        # then (x - mean) / std in float32. Elementwise IEEE operations give the same bits in a table.
        byte = np.arange(256, dtype=np.uint8)
        rescaled = (byte.astype(np.float64) * ip.rescale_factor).astype(np.float32)
        table = ((rescaled[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)
        return cls(min_pixels=int(min_pixels), max_pixels=int(max_pixels), patch_size=int(ip.patch_size),
                   merge_size=int(ip.merge_size), temporal_patch_size=int(ip.temporal_patch_size),
                   resample=int(ip.resample), table=table)

    def covers(self, images: list) -> bool:
        return all(getattr(image, "mode", None) == "RGB" for image in images)

    def image(self, image) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One RGB PIL image -> (patches x C*T*P*P float32, (t, h, w) grid). ValueError as the processor's."""
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        height, width = smart_resize(image.height, image.width, factor=p * m,
                                     min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        if (width, height) != image.size:
            image = image.resize((width, height), resample=self.resample)
        gh, gw = height // p, width // p
        # Byte v of channel c -> row c*256+v of the flat table: one 1-D take, ~40% faster than indexing
        # the (3, 256) table with a channel index array (0.43 vs 0.75 ms for 224x224 on the bench VM).
        index = np.asarray(image).astype(np.uint16) + _CHANNEL_OFFSETS  # (H, W, 3)
        # The processor's patch order from channel-last bytes: (gh/m, gw/m, m, m, C, p, p).
        index = index.reshape(gh // m, m, p, gw // m, m, p, 3).transpose(0, 3, 1, 4, 6, 2, 5)
        values = self.table.reshape(-1).take(np.ascontiguousarray(index))
        # Still images repeat along the temporal patch axis.
        out = np.empty((*values.shape[:5], t, p, p), dtype=np.float32)
        out[...] = values[..., :, None, :, :]
        return out.reshape(gh * gw, 3 * t * p * p), (1, gh, gw)

    def images(self, images: list) -> dict[str, torch.Tensor]:
        """``pixel_values`` and ``image_grid_thw`` for a prompt's images, as ``processor(...)`` returns them."""
        patches, grids = zip(*(self.image(im) for im in images), strict=True)
        pixels = patches[0] if len(patches) == 1 else np.concatenate(patches, axis=0)  # one image: no copy
        return {"pixel_values": torch.from_numpy(pixels),
                "image_grid_thw": torch.tensor(grids, dtype=torch.long)}

    def expand_placeholders(self, text: str, image_token: str, grid_thw: torch.Tensor) -> str:
        """Each image placeholder repeated once per merged patch, in order (the processor's text rewrite)."""
        first, *rest = text.split(image_token)  # as many placeholders as images: _check_placeholders ran first
        counts = (grid_thw.prod(-1) // (self.merge_size ** 2)).tolist()
        return first + "".join(image_token * count + tail for count, tail in zip(counts, rest, strict=True))


__all__ = ["QwenPixels", "SUPPORTED_PROCESSORS"]
