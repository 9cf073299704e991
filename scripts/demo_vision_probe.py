"""How fast the demo's vision tower learns shape, per probe (docs/demo-shape-readout.md has the results).

    python scripts/demo_vision_probe.py --pool max --steps 1500          # the demo's tower, max-pool probe
    python scripts/demo_vision_probe.py --pool dense --dense-after 1200  # max, then per-token labels too
    python scripts/demo_vision_probe.py --cnn --steps 600                # a small CNN, global average pool

Trains the vision tower of ``build_demo_model`` (or a CNN) on ``data.demo_shapes`` drawings with a
linear probe on its merged tokens (shape, 3 classes + colour, 6), and every 100 steps prints the shape
accuracy on 360 ``demo_heldout`` images (another drawing code path), per size band. One thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "trainer"), os.path.join(ROOT, "clients", "python")]

from rmserve_trainer.demo import DemoRecipe, build_demo_model  # noqa: E402
from rmserve_trainer.demo_heldout import SHAPE_NAMES, draw_case, heldout_cases  # noqa: E402
from rmserve_trainer.demo_vision import ImageCollator, LabelledShapes  # noqa: E402

SIZES = ("small", "medium", "large", "full")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", choices=("mean", "max", "attn", "dense"), default="max")
    p.add_argument("--dense-after", type=int, default=0, help="dense: per-token labels from this step on")
    p.add_argument("--dense-weight", type=float, default=0.3)
    p.add_argument("--cnn", action="store_true", help="a small CNN (global average pool) instead of the tower")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-depth", type=int, default=2)
    return p.parse_args()


class TowerProbe(torch.nn.Module):
    """The demo model's vision tower + merger, and a linear probe over its merged tokens."""

    def __init__(self, args: argparse.Namespace):
        super().__init__()
        model = build_demo_model(DemoRecipe(vision_hidden=args.vision_hidden, vision_depth=args.vision_depth))
        self.base = model.base_model()
        self.visual = self.base.visual
        self.image_processor = model.processor.image_processor
        hidden = self.base.config.text_config.hidden_size
        torch.manual_seed(7)
        self.probe = torch.nn.Linear(hidden, 9)
        self.query = torch.nn.Linear(hidden, 1)
        self.pool, self.dense_after, self.dense_weight = args.pool, args.dense_after, args.dense_weight

    def inputs(self, images):
        out = self.image_processor(images=list(images), return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def tokens(self, pixels, grid) -> list[torch.Tensor]:
        return list(self.base.get_image_features(pixels, grid, return_dict=True).pooler_output)

    def logits(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        if self.pool == "mean":
            pooled = [t.mean(0) for t in tokens]
        elif self.pool == "attn":
            pooled = [(torch.softmax(self.query(t).squeeze(-1), 0)[:, None] * t).sum(0) for t in tokens]
        else:  # max, dense
            pooled = [t.max(0).values for t in tokens]
        return self.probe(torch.stack(pooled))

    def loss(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, grid, shapes, colours = batch
        tokens = self.tokens(pixels, grid)
        logits = self.logits(tokens)
        loss = F.cross_entropy(logits[:, :3], shapes) + F.cross_entropy(logits[:, 3:], colours)
        if self.pool == "dense" and step > self.dense_after:
            per_token = self.probe(torch.cat(tokens))
            n = torch.tensor([t.shape[0] for t in tokens])
            loss = loss + self.dense_weight * (F.cross_entropy(per_token[:, :3], shapes.repeat_interleave(n))
                                               + F.cross_entropy(per_token[:, 3:], colours.repeat_interleave(n)))
        return loss, logits

    def predict(self, images) -> torch.Tensor:
        return self.logits(self.tokens(*self.inputs(images)))[:, :3].argmax(1)


class CnnProbe(torch.nn.Module):
    """A baseline: three strided convolutions, global average pool, linear; images resized to 112x112."""

    def __init__(self, args: argparse.Namespace):
        super().__init__()
        torch.manual_seed(7)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, 2, 2), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(32, 9))

    @staticmethod
    def inputs(images) -> torch.Tensor:
        arrays = [np.asarray(i.convert("RGB").resize((112, 112)), dtype=np.float32) / 255 for i in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def loss(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, shapes, colours = batch
        logits = self.net(self.inputs(images))
        return F.cross_entropy(logits[:, :3], shapes) + F.cross_entropy(logits[:, 3:], colours), logits

    def predict(self, images) -> torch.Tensor:
        return self.net(self.inputs(images))[:, :3].argmax(1)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    model = CnnProbe(args) if args.cnn else TowerProbe(args)
    stream = iter(LabelledShapes(0, 4096))
    collate = None if args.cnn else ImageCollator(model.image_processor)
    cases = heldout_cases(360, seed=0)
    heldout = [draw_case(case, rng) for case, rng in cases]
    truth = torch.tensor([SHAPE_NAMES.index(case.shape) for case, _ in cases])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warm = max(1, round(args.steps * 0.02))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warm if s < warm else 0.5 * (
        1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm))))
    t0, window = time.time(), []
    for step in range(1, args.steps + 1):
        rows = [next(stream) for _ in range(args.batch_size)]
        if collate is None:
            images, shapes, colours = zip(*rows, strict=True)
            batch = (images, torch.tensor(shapes), torch.tensor(colours))
        else:
            batch = collate(rows)
        loss, logits = model.loss(batch, step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        window.append((logits[:, :3].argmax(1) == batch[-2]).float().mean().item())
        if step % 100 == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                right = model.predict(heldout) == truth
            model.train()
            by_size = {s: round(right[[i for i, (c, _) in enumerate(cases) if c.size == s]].float().mean().item(), 3)
                       for s in SIZES}
            print(json.dumps({"step": step, "train_shape": round(sum(window) / len(window), 3),
                              "heldout_shape": round(right.float().mean().item(), 3), "by_size": by_size,
                              "seconds": round(time.time() - t0)}), flush=True)
            window = []


if __name__ == "__main__":
    main()
