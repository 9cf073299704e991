"""Critiques of plain drawings like the README's example (docs/demo-shape-readout.md section 6 has the results).

    python scripts/demo_plain_drawings.py models/demo /tmp/other-run

One filled shape per image, centred on a white 112 px canvas like ``examples/red_circle.png``: 6
colours x 3 shapes x 4 sizes (30-90% of the canvas), each with a response naming another colour and
another shape. Counts, per model, the critiques that name the drawn colour and shape (the same
``grounded`` rule as ``rmserve-train demo-eval``) and lists the misread ones. The held-out set
(``demo_heldout``) measures this at scale; this is the README example's own neighbourhood, where one
misreading is what a new user sees first.
"""

from __future__ import annotations

import argparse
import random

import torch
from PIL import Image, ImageDraw
from rmserve_trainer.demo_eval import grounded

from rmserve.models import load_reward_model
from rmserve.models.critique import critique_and_score
from rmserve.models.types import ScoreItem

COLOURS = {"red": (220, 40, 40), "orange": (255, 140, 0), "yellow": (240, 220, 30), "green": (30, 160, 40),
           "blue": (40, 70, 220), "purple": (130, 30, 160)}  # examples/red_circle.png's red is (220, 40, 40)
SHAPES = ("circle", "square", "triangle")
SIZES = (0.3, 0.5, 0.7, 0.9)
CANVAS = 112


def drawing(colour: str, shape: str, size: float) -> Image.Image:
    image = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    draw, c, r = ImageDraw.Draw(image), CANVAS / 2, CANVAS / 2 * size
    if shape == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle([c - r, c - r, c + r, c + r], fill=COLOURS[colour])
    else:
        draw.polygon([(c, c - r), (c + r, c + r), (c - r, c + r)], fill=COLOURS[colour])
    return image


def cases(seed: int = 0) -> list[tuple[str, str, float, str]]:
    """(colour, shape, size, wrong response), deterministic."""
    rng = random.Random(seed)
    out = []
    for colour in COLOURS:
        for shape in SHAPES:
            for size in SIZES:
                wrong_colour = rng.choice([c for c in COLOURS if c != colour])
                wrong_shape = rng.choice([s for s in SHAPES if s != shape])
                out.append((colour, shape, size, f"A {wrong_colour} {wrong_shape}."))
    return out


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoint directories")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as rmserve-train demo-eval: the same greedy critiques on every run
    todo = cases()
    items = [ScoreItem(prompt="What is in the image?", images=[drawing(c, s, z)], response=wrong)
             for c, s, z, wrong in todo]
    for path in args.models:
        results = critique_and_score(load_reward_model(path), items)
        misread = [(c, s, z, r.critique) for (c, s, z, _), r in zip(todo, results, strict=True)
                   if not grounded(r.critique, c, s)]
        print(f"{path}: {len(todo) - len(misread)}/{len(todo)} critiques name the drawn colour and shape")
        for colour, shape, size, critique in misread:
            print(f"  {colour} {shape} at {size:.0%}: {critique}")


if __name__ == "__main__":
    main()
