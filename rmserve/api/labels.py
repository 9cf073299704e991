"""Per-sample labels of RL frameworks that carry images and a ground truth (OpenRLHF ``labels``, slime ``label``).

These frameworks send text only; the one per-sample field they pass through untouched is the dataset's
label column (OpenRLHF ``--data.label_key``, slime ``--label-key``). So a label may be a JSON object,
as an object or as a string holding one (a dataset column of strings is the common case)::

    {"images": ["data:image/png;base64,...", {"sha256": "<of an image uploaded to /v1/images>"}],
     "ground_truth": "42"}

Both keys are optional; other keys are ignored (a label may carry the user's own fields). Any other
label (a plain string, a number) is the ground truth itself, as before. ``""`` and null are no label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rmserve.api.protocol import ImageInput
from rmserve.errors import InvalidInput

_IMAGES = TypeAdapter(list[ImageInput])


@dataclass
class Label:
    ground_truth: str | None = None
    images: list = field(default_factory=list)  # wire images (data URL strings or ImageRef)


def parse_label(value: Any, param: str) -> Label:
    """The ground truth and images of one label; errors name ``<param>.images...``."""
    if value is None or value == "":
        return Label()
    obj = value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            obj = json.loads(value)
        except json.JSONDecodeError:
            obj = value  # a ground truth that merely starts with a brace
    if not isinstance(obj, dict):
        return Label(ground_truth=str(value))
    truth = obj.get("ground_truth")
    images = obj.get("images", [])
    if isinstance(images, str | dict):
        images = [images]
    try:
        wire = _IMAGES.validate_python(images)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("data", "ref"))
        raise InvalidInput(
            f"{param}.images must be a list of data URLs or {{\"sha256\": ...}} references: {first['msg']}",
            param=f"{param}.images" + (f".{where}" if where else ""),
            code="invalid_label",
        ) from None
    return Label(ground_truth=None if truth is None or truth == "" else str(truth), images=wire)


__all__ = ["Label", "parse_label"]
