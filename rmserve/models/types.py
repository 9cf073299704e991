"""Plain data types that cross the model library's boundary (no torch in the item types' users)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class ScoreItem:
    """One (conversation, response) to score, already decoded from the wire.

    Exactly one of ``prompt`` or ``messages`` is set. ``messages`` are chat turns
    ``{"role": "user"|"assistant"|"system", "content": str}`` ending with a user turn;
    images are placed in the first user turn, in order.
    """

    response: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    images: list[Image.Image] = field(default_factory=list)
    truncate: bool = False  # if the sequence is too long: False -> InvalidInput, True -> drop oldest prompt tokens
    image_hashes: list[str] = field(default_factory=list)  # sha256 of each image's bytes, if known (cache keys)


@dataclass
class EncodedItem:
    """A tokenized item ready for a batch: token ids plus this item's own vision tensors.

    ``vision`` holds per-item tensors keyed as the backbone wants them (e.g. ``pixel_values``
    and ``image_grid_thw`` for Qwen-VL, ``pixel_values`` and ``image_sizes`` for LLaVA-OV).
    ``image_keys`` are content hashes of the images, in order (for caches and prefix sharing).
    """

    input_ids: list[int]
    vision: dict[str, Any] = field(default_factory=dict)
    image_keys: tuple[str, ...] = ()
    truncated: bool = False
    prefix_len: int = 0  # number of leading prompt tokens (shared by every response to the same prompt)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


@dataclass
class ScoreOutput:
    """What the heads say about one item."""

    reward: float
    attributes: dict[str, float] | None = None
    safety: dict[str, float] | None = None  # category -> probability


@dataclass
class ModelInfo:
    """Describes a loaded reward model (for /v1/models and logs)."""

    name: str
    family: str  # qwen2_5_vl | qwen2_vl | llava_onevision | causal_lm | seq_cls
    path: str
    heads: list[str]
    max_length: int
    device: str
    dtype: str
    multimodal: bool
    untrained: bool = False
    attribute_names: list[str] = field(default_factory=list)
    safety_categories: list[str] = field(default_factory=list)
