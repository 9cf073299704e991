"""The padded batch the backbone runs on: ids, mask, the backbone's other inputs and the vision keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    model_inputs: dict  # positions and vision tensors for the backbone
    image_keys: list[str] = field(default_factory=list)  # one content key per image, in batch order
    video_keys: list[str] = field(default_factory=list)  # one content key per video, in batch order
    # How many scored rows use each image / video (a shared prefix's images serve its whole group); empty: 1 each.
    # Only the vision cache's hit/miss counts read them.
    image_uses: list[int] = field(default_factory=list)
    video_uses: list[int] = field(default_factory=list)

    def to(self, device) -> Batch:
        moved = {k: _to(v, device) for k, v in self.model_inputs.items()}
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), moved, self.image_keys,
                     self.video_keys, self.image_uses, self.video_uses)


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):  # per-video tensors
        return [v.to(device) for v in value]
    return value
