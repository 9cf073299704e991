"""The demo model's held-out set, drawn by a different code path than its training data.

Training images come from ``data.demo_shapes`` (HSV-sampled colours, hand-built polygons, 2-4x
supersampling with BOX/bilinear downsampling). This module shares none of that code: it draws with
PIL's own primitives and names, the way an outsider would draw a test image:

- colours: PIL/CSS named colours (``ImageColor``), two per name: red/firebrick, orange/darkorange,
  yellow/gold, green/limegreen, blue/royalblue, purple/darkviolet;
- shapes: ``ImageDraw.ellipse`` (circle) and ``ImageDraw.regular_polygon`` (square: 4 sides,
  triangle: 3 sides, pointing up);
- backgrounds: white, lightgray, ivory, black, darkslategray, lavender;
- canvases: 80x80, 112x112, 150x150, 224x224, 96x160, 160x96;
- size (the shape's extent over the canvas's short side): small 0.25-0.35, medium 0.4-0.65,
  large 0.7-0.9, full 0.92-1.0; anywhere it fits;
- rendering: aliased (drawn at 1x) or anti-aliased (drawn at 4x, LANCZOS down).

Every factor cycles independently over the records, so each value is covered about equally.
Each record pairs a faithful answer with a hallucinated one (wrong shape, wrong colour, or both):
the held-out report gives accuracy per value of every factor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageDraw

from .records import PairRecord

NAMED_COLOURS = {"red": ("red", "firebrick"), "orange": ("orange", "darkorange"), "yellow": ("yellow", "gold"),
                 "green": ("green", "limegreen"), "blue": ("blue", "royalblue"), "purple": ("purple", "darkviolet")}
SHAPE_NAMES = ("circle", "square", "triangle")
BACKGROUND_NAMES = ("white", "lightgray", "ivory", "black", "darkslategray", "lavender")
CANVASES = ((80, 80), (112, 112), (150, 150), (224, 224), (96, 160), (160, 96))
SIZES = {"small": (0.25, 0.35), "medium": (0.4, 0.65), "large": (0.7, 0.9), "full": (0.92, 1.0)}
RENDERINGS = ("aliased", "antialiased")
HALLUCINATIONS = ("shape", "colour", "both")
# (prompt, answer) forms; the answer names what is claimed.
FORMS = (("What is in the image?", "{A} {colour} {shape}."),
         ("Describe the image.", "The image shows {a} {colour} {shape}."),
         ("What shape is this?", "It is {a} {colour} {shape}."))
SUPERSAMPLE = 4


@dataclass
class HeldoutCase:
    """What was drawn and how: the factors the report breaks accuracy down by."""

    colour: str
    shape: str
    background: str
    canvas: str
    size: str
    rendering: str
    hallucination: str

    def factors(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "background": self.background, "canvas": self.canvas,
                "size": self.size, "rendering": self.rendering, "hallucination": self.hallucination}


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _say(form: str, colour: str, shape: str) -> str:
    return form.format(a=_an(colour), A=_an(colour).capitalize(), colour=colour, shape=shape)


def draw_case(case: HeldoutCase, rng: random.Random) -> Image.Image:
    width, height = (int(v) for v in case.canvas.split("x"))
    k = SUPERSAMPLE if case.rendering == "antialiased" else 1
    lo, hi = SIZES[case.size]
    extent = min(width, height) * rng.uniform(lo, hi)
    x = rng.uniform(extent / 2, width - extent / 2)
    y = rng.uniform(extent / 2, height - extent / 2)
    shade = rng.choice(NAMED_COLOURS[case.colour])
    image = Image.new("RGB", (width * k, height * k), ImageColor.getrgb(case.background))
    draw = ImageDraw.Draw(image)
    fill = ImageColor.getrgb(shade)
    if case.shape == "circle":
        r = extent / 2 * k
        draw.ellipse([x * k - r, y * k - r, x * k + r, y * k + r], fill=fill)
    elif case.shape == "square":  # a square of side `extent` has circumradius extent / sqrt(2)
        draw.regular_polygon((x * k, y * k, extent / 2 * 2 ** 0.5 * k), 4, fill=fill)
    else:  # an equilateral triangle, apex up, as wide as `extent`: circumradius extent / sqrt(3)
        draw.regular_polygon((x * k, y * k, extent / 3 ** 0.5 * k), 3, fill=fill)
    if k > 1:
        image = image.resize((width, height), Image.LANCZOS)
    return image


def heldout_cases(n: int, seed: int = 0) -> list[tuple[HeldoutCase, random.Random]]:
    rng = random.Random(f"rmserve-demo-heldout/{seed}")
    cases = []
    colours = list(NAMED_COLOURS)
    for i in range(n):
        case = HeldoutCase(
            colour=colours[i % 6], shape=SHAPE_NAMES[(i // 6) % 3], background=BACKGROUND_NAMES[rng.randrange(6)],
            canvas="x".join(map(str, CANVASES[rng.randrange(len(CANVASES))])), size=list(SIZES)[(i // 2) % 4],
            rendering=RENDERINGS[(i // 18) % 2], hallucination=HALLUCINATIONS[(i // 36) % 3])
        cases.append((case, rng))
    return cases


def heldout_records(n: int, seed: int = 0) -> list[tuple[HeldoutCase, PairRecord]]:
    """``n`` faithful-vs-hallucinated pairs, deterministic for ``seed``."""
    out = []
    for i, (case, rng) in enumerate(heldout_cases(n, seed)):
        image = draw_case(case, rng)
        wrong_colour = (rng.choice([c for c in NAMED_COLOURS if c != case.colour])
                        if case.hallucination in ("colour", "both") else case.colour)
        wrong_shape = (rng.choice([s for s in SHAPE_NAMES if s != case.shape])
                       if case.hallucination in ("shape", "both") else case.shape)
        prompt, form = FORMS[rng.randrange(len(FORMS))]
        out.append((case, PairRecord(
            id=f"heldout-{seed}-{i:05d}", prompt=prompt, images=[image], chosen=_say(form, case.colour, case.shape),
            rejected=_say(form, wrong_colour, wrong_shape), category=case.hallucination,
            source=f"demo-heldout:{seed}:{i}")))
    return out


__all__ = ["HeldoutCase", "NAMED_COLOURS", "SHAPE_NAMES", "draw_case", "heldout_records"]
