"""The demo model's vision warm-up: the vision tower learns to name the pictured shape and colour directly.

Why a separate stage: trained only through the language model (BT on the reward, LM on the answers and
critiques), the demo's from-scratch vision tower learned colour but not shape across drawing styles
(shape hallucinations caught at chance, docs/demo-critique-run1.json): the shape signal reaching it
through a 2-layer LM is weak and noisy. Here it gets a direct label instead, cheaply (the vision tower
alone, no text): a linear probe on the element-wise max over the image's merged vision tokens (the
patch merger's output, what the LM reads) predicts the shape (3 classes) and the colour (6),
cross-entropy on both. Max, not mean: the few tokens on the shape's boundary carry its shape, and
averaging over 16 tokens dilutes them (a mean probe stayed at 39% held-out shape accuracy, max reached
94%; docs/demo-shape-readout.md). The probe is thrown away afterwards; the tower and merger keep what
they learned; the later stages (``rmserve-train demo``) freeze the tower and train the merger with the LM.

Images come from ``data.demo_shapes.draw_shape_image`` (the training drawings) on their own seed
stream ("vision"), never the held-out set's code path. Deterministic for the seed, on one thread.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from .data.demo_shapes import COLOURS, SHAPES, draw_shape_image, stream_seed


@dataclass
class VisionWarmup:
    steps: int = 3000  # optimizer steps of `batch_size` images
    batch_size: int = 32
    lr: float = 3e-3
    warmup_ratio: float = 0.02
    easy_fraction: float = 0.0  # curriculum: this share of the steps sees large shapes only (0: none; with
    # the max probe it did not help)
    easy_min_extent: float = 0.5  # (shape extent >= half the canvas's short side; then 0.2, the full range)
    seed: int = 0
    chunk: int = 4096  # images per seed stream
    num_workers: int = 1  # one process draws and preprocesses the next batches
    log_every: int = 250


class LabelledShapes(IterableDataset):
    """An endless stream of (image, shape index, colour index), chunk k from seed stream ``(seed, k)``;
    the first ``easy_images`` images draw shapes of at least ``easy_min_extent`` of the short side."""

    def __init__(self, seed: int, chunk: int, easy_images: int = 0, easy_min_extent: float = 0.5):
        self.seed, self.chunk, self.easy_images, self.easy_min_extent = seed, chunk, easy_images, easy_min_extent

    def __iter__(self):
        k, i = 0, 0
        while True:
            rng = random.Random(stream_seed(self.seed * 10**6 + k, "vision"))
            for _ in range(self.chunk):
                shape, colour = rng.randrange(len(SHAPES)), rng.randrange(len(COLOURS))
                min_extent = self.easy_min_extent if i < self.easy_images else 0.2
                yield draw_shape_image(COLOURS[colour], SHAPES[shape], rng, min_extent), shape, colour
                i += 1
            k += 1


class ImageCollator:
    """A batch of labelled images -> the vision tower's inputs (as the server's processor makes them) + labels."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, rows):
        images, shapes, colours = zip(*rows, strict=True)
        out = self.image_processor(images=list(images), return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"], torch.tensor(shapes), torch.tensor(colours)


def pooled_image_features(base, pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(images, out_hidden): the element-wise max over each image's merged vision tokens."""
    features = base.get_image_features(pixel_values, grid, return_dict=True).pooler_output
    return torch.stack([f.max(0).values for f in features])


def warm_up_vision(model, warmup: VisionWarmup, *, log=print) -> dict:
    """Train ``model``'s vision tower and patch merger on shape + colour labels; returns the last metrics."""
    base = model.base_model()
    visual = base.visual
    torch.manual_seed(warmup.seed + 7)
    probe = torch.nn.Linear(base.config.text_config.hidden_size, len(SHAPES) + len(COLOURS))
    params = [p for p in visual.parameters()] + list(probe.parameters())
    optimizer = torch.optim.AdamW(params, lr=warmup.lr, weight_decay=0.0)
    warm = max(1, round(warmup.steps * warmup.warmup_ratio))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 0 (as the main stage)
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, warmup.steps - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    easy = round(warmup.easy_fraction * warmup.steps) * warmup.batch_size
    loader = DataLoader(LabelledShapes(warmup.seed, warmup.chunk, easy, warmup.easy_min_extent),
                        batch_size=warmup.batch_size,
                        collate_fn=ImageCollator(model.processor.image_processor), num_workers=warmup.num_workers)
    was_training = visual.training
    visual.train()
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    for step, (pixels, grid, shapes, colours) in enumerate(loader, start=1):
        logits = probe(pooled_image_features(base, pixels, grid))
        shape_loss = F.cross_entropy(logits[:, :len(SHAPES)], shapes)
        colour_loss = F.cross_entropy(logits[:, len(SHAPES):], colours)
        optimizer.zero_grad(set_to_none=True)
        (shape_loss + colour_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        for name, value in (("shape_loss", shape_loss.item()), ("colour_loss", colour_loss.item()),
                            ("shape_acc", (logits[:, :len(SHAPES)].argmax(1) == shapes).float().mean().item()),
                            ("colour_acc", (logits[:, len(SHAPES):].argmax(1) == colours).float().mean().item())):
            window.setdefault(name, []).append(value)
        if step % warmup.log_every == 0 or step == warmup.steps:
            last = {f"vision/{k}": round(sum(v) / len(v), 4) for k, v in window.items()}
            last.update({"vision/step": step, "vision/seconds": round(time.perf_counter() - t0, 1),
                         "vision/cpu_seconds": round(time.process_time() - cpu0, 1)})
            log(last)
            window = {}
        if step >= warmup.steps:
            break
    visual.train(was_training)
    return last


__all__ = ["ImageCollator", "LabelledShapes", "VisionWarmup", "pooled_image_features", "warm_up_vision"]
