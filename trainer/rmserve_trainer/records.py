"""The one in-memory record every dataset reader produces and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image


@dataclass
class PairRecord:
    """A preference pair for one prompt (optionally with images).

    ``prompt`` is a string or a list of chat messages (``{"role", "content"}``, not ending with an
    assistant turn); a turn's content may be a list of parts (``{"type": "text"|"image"|"video"}``,
    rmserve.models.ScoreItem's form): each image / video sits where its part sits. ``images`` are
    loaded PIL images in conversation order (readers resolve paths against ``--image-root``);
    ``videos`` are sampled clips (rmserve.models.types.VideoClip) in conversation order.
    ``*_reason`` are reference critiques (MM-RLHF) used by the critique trainer.
    ``*_safety`` list the hazard categories (e.g. ``["S1"]``) a response falls under; empty = safe.
    ``attributes`` maps response key ("chosen"/"rejected") to named scores (HelpSteer style).
    ``source`` is "file:line" for error messages. ``image_paths`` are the resolved files of ``images``;
    a reader run with ``lazy_images`` leaves ``images`` empty and fills only the paths (the collate
    decodes them per batch, see ``data.base.record_images``).
    """

    id: str
    prompt: str | list[dict]
    chosen: str
    rejected: str
    images: list[Image.Image] = field(default_factory=list)
    chosen_reason: str | None = None
    rejected_reason: str | None = None
    margin: float = 0.0
    category: str = ""
    chosen_safety: list[str] | None = None
    rejected_safety: list[str] | None = None
    attributes: dict[str, dict[str, float]] | None = None
    source: str = ""
    image_paths: list[str] = field(default_factory=list)
    videos: list = field(default_factory=list)  # VideoClip, decoded at read time (no lazy mode for videos)
