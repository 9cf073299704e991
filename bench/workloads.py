"""Deterministic benchmark workloads, as the REST items a trainer sends (one item per request).

    text   text-only single samples: a ~64-token prompt and a 32-256-token response
    image  image single samples: the same, plus the item's own 224x224 image
    grpo   GRPO groups: G responses to one prompt + image, each response its own request
    grpo_text  GRPO groups without the image (text models: the vLLM comparison, bench/vllm_compare.py)

Everything is a pure function of (workload, seed, index): item ``i`` is the same whatever the
request count, so a calibration slice is a prefix of the measured set and every system scores
exactly the same items. Texts are random words whose token counts are read off the model's
own tokenizer (byte-level BPE: a word's tokens do not depend on its neighbours), so lengths are
exact in tokens, not characters.
"""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

WORKLOADS = ("text", "image", "grpo")
TEXT_WORKLOADS = ("text", "grpo_text")  # what a text-only model can score
PROMPT_TOKENS = 52  # prompt text; the chat template adds 12 more: 64 tokens before any image
RESPONSE_TOKENS = (32, 256)  # uniform, inclusive, counting the end-of-turn token the template adds
IMAGE_SIZE = 224

_WORDS = (
    "the a red blue green yellow purple orange black white grey circle square triangle shape shapes "
    "object objects left right above below next to inside small large three two one many answer "
    "question image picture describe detail colour how what is are there helpful assistant think step "
    "by about before answering accurate faithful content response evaluation because could cause "
    "harm people request help cannot with and of in on it this that which where when why count "
    "number larger smaller between corner center edge top bottom middle behind front near far"
).split()
_PUNCT = (".", ",", "?", "!")


@dataclass(frozen=True)
class Workload:
    """Requests grouped as they are sent: a group's requests go out together (singles: groups of 1)."""

    name: str
    groups: list[list[dict]]  # wire items (the ``items[0]`` of each request body)

    @property
    def items(self) -> list[dict]:
        return [item for group in self.groups for item in group]

    @property
    def group_size(self) -> int:
        return len(self.groups[0]) if self.groups else 1

    def bodies(self) -> list[list[bytes]]:
        """JSON request bodies, grouped; built before timing so the client does no encoding work."""
        return [[json.dumps({"items": [item]}).encode() for item in group] for group in self.groups]

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)


class TextGen:
    """Random word texts of an exact token count under ``tokenizer``."""

    def __init__(self, tokenizer):
        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        self.count = count
        self._cost = {w: count(" " + w) for w in _WORDS}  # a word's tokens after a space
        self._first = {w: count(w) for w in _WORDS}

    def text(self, rng: random.Random, n_tokens: int) -> str:
        words = [rng.choice(_WORDS)]
        used = self._first[words[0]]
        while used < n_tokens:
            word = rng.choice(_WORDS)
            if used + self._cost[word] > n_tokens:
                word = min(self._cost, key=lambda w: (self._cost[w], w))  # fill the last token or two
            words.append(word)
            used += self._cost[word]
        return " ".join(words)


def make_image(rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """A few coloured shapes on a coloured background: decodes like a real picture, small as a PNG."""
    def colour() -> tuple[int, int, int]:
        return tuple(rng.randrange(256) for _ in range(3))

    image = Image.new("RGB", (size, size), colour())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randrange(size - 20), rng.randrange(size - 20)
        x1, y1 = rng.randint(x0 + 10, size), rng.randint(y0 + 10, size)
        kind = rng.choice(("ellipse", "rectangle", "polygon"))
        if kind == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=colour())
        elif kind == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=colour())
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour())
    return image


def image_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class WorkloadFactory:
    """Builds workloads for one tokenizer; ``seed`` separates measured, warm-up and soak content."""

    def __init__(self, tokenizer, *, group_size: int = 8, image_size: int = IMAGE_SIZE):
        self.gen = TextGen(tokenizer)
        self.group_size = group_size
        self.image_size = image_size

    def _rng(self, name: str, seed: int, index: int) -> random.Random:
        return random.Random(f"{name}/{seed}/{index}")

    def _response(self, rng: random.Random) -> str:
        # n - 2 word tokens, a punctuation token, and the template's end-of-turn token: n in all.
        return self.gen.text(rng, rng.randint(*RESPONSE_TOKENS) - 2) + rng.choice(_PUNCT)

    def group(self, name: str, seed: int, index: int) -> list[dict]:
        """Group ``index`` of workload ``name``: one item, or ``group_size`` items for grpo."""
        if name not in (*WORKLOADS, *TEXT_WORKLOADS):
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS + TEXT_WORKLOADS[1:])}")
        rng = self._rng(name, seed, index)
        prompt = self.gen.text(rng, PROMPT_TOKENS - 1) + "?"
        base: dict = {"prompt": prompt}
        if name not in TEXT_WORKLOADS:
            base["images"] = [image_data_url(make_image(rng, self.image_size))]
        n = self.group_size if name.startswith("grpo") else 1
        return [{**base, "response": self._response(rng)} for _ in range(n)]

    def build(self, name: str, n_responses: int, *, seed: int = 0, start: int = 0) -> Workload:
        """``n_responses`` responses (rounded up to whole groups), groups ``start, start+1, ...``."""
        per = self.group_size if name.startswith("grpo") else 1
        n_groups = max(1, -(-n_responses // per))
        return Workload(name, [self.group(name, seed, start + i) for i in range(n_groups)])


__all__ = ["TEXT_WORKLOADS", "WORKLOADS", "Workload", "WorkloadFactory", "TextGen", "make_image", "image_data_url"]
