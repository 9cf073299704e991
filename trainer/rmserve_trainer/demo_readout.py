"""The demo model's read-out stage: the language model learns to read the shape off a frozen vision tower.

Why a stage of its own: after the vision warm-up the tower knows the shape (94% held-out with a probe),
yet 600 steps of the main stage (BT + LM on long critique sequences) left the 2-layer LM's reward and
critiques near chance on shape: it never found the few shape-carrying image tokens
(docs/demo-shape-readout.md). Here it gets the cheapest, most direct signal there is: one short question,
one short answer that names the picture, and a wrong answer that differs only in the facts,

    user: image + "What is in the image?"    chosen:   "The image shows a red circle."
                                             rejected: "The image shows a red square."   (shape wrong, 60%)
                                                       "The image shows a blue circle."  (colour wrong, 20%)
                                                       "The image shows a blue square."  (both, 20%)

BT on the reward + LM on the chosen answer, the tower frozen (its patch merger, the projection into
the LM, trains with the LM). Sequences are short, so a step costs about half a main-stage step
(0.19 s vs 0.39 s in the shipped run's demo_report.json) and a thousand of them fit the time budget.
The answer's words are the critiques' first words ("The image shows a red circle, but the response
says ..."), so what the LM learns to write here is what ``/v1/critique`` writes first.

Images come from ``data.demo_shapes.draw_shape_image`` on their own seed stream ("readout"), never the
held-out set's code path. Deterministic for the seed, on one thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from torch.utils.data import IterableDataset

from .data.demo_shapes import COLOURS, SHAPES, article, draw_shape_image, stream_seed
from .modeling import set_trainable
from .records import PairRecord
from .trainers.base import TrainConfig
from .trainers.bt import BTTrainer

READOUT_PROMPT = "What is in the image?"


@dataclass
class Readout:
    steps: int = 1200  # optimizer steps of `batch_size` pairs
    batch_size: int = 32
    lr: float = 1e-3  # (3e-3 learned later and ended lower in one exploratory run)
    warmup_ratio: float = 0.03
    shape_fraction: float = 0.6  # rejected answers with only the shape wrong; the rest: colour, or both, half each
    centering: float = 0.01
    seed: int = 0
    chunk: int = 1024  # pairs per seed stream
    num_workers: int = 1
    log_every: int = 100


def describe(colour: str, shape: str) -> str:
    return f"The image shows {article(colour)} {colour} {shape}."


def readout_pairs(n: int, seed: int) -> list[PairRecord]:
    """``n`` read-out pairs, deterministic for ``seed``."""
    return list(_pairs(n, seed, Readout().shape_fraction))


def _pairs(n: int, seed: int, shape_fraction: float):
    rng = random.Random(stream_seed(seed, "readout"))
    for i in range(n):
        colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
        kind = rng.random()
        shape_only = kind < shape_fraction
        colour_only = shape_fraction <= kind < (1 + shape_fraction) / 2  # the rest: both wrong
        wrong_shape = shape if colour_only else rng.choice([s for s in SHAPES if s != shape])
        wrong_colour = colour if shape_only else rng.choice([c for c in COLOURS if c != colour])
        yield PairRecord(id=f"readout-{seed}-{i:06d}", prompt=READOUT_PROMPT, chosen=describe(colour, shape),
                         rejected=describe(wrong_colour, wrong_shape), images=[draw_shape_image(colour, shape, rng)],
                         category="describe", source=f"demo-readout:{seed}:{i}")


class ReadoutPairs(IterableDataset):
    """An endless stream of read-out pairs, chunk k from seed stream ``seed * 10**6 + k``."""

    def __init__(self, seed: int, chunk: int, shape_fraction: float):
        self.seed, self.chunk, self.shape_fraction = seed, chunk, shape_fraction

    def __iter__(self):
        k = 0
        while True:
            yield from _pairs(self.chunk, self.seed * 10**6 + k, self.shape_fraction)
            k += 1


def read_out(model, readout: Readout, output_dir: str, *, progress: bool = True) -> dict:
    """Train ``model``'s language model, patch merger and heads (vision tower frozen) on read-out pairs;
    returns the last logged metrics."""
    set_trainable(model, train_vision=False, train_backbone=True, train_lm_head=True)
    config = TrainConfig(output_dir=output_dir, lr=readout.lr, warmup_ratio=readout.warmup_ratio,
                         batch_size=readout.batch_size, max_steps=readout.steps, seed=readout.seed,
                         centering=readout.centering, lm_weight=1.0, lm_targets="chosen", safety_weight=0.0,
                         log_every=readout.log_every, progress=progress, num_workers=readout.num_workers)
    trainer = BTTrainer(model, config, ReadoutPairs(readout.seed, readout.chunk, readout.shape_fraction))
    trainer.name = "readout"
    last = trainer.fit()
    return {k.replace("train/", "readout/"): v for k, v in last.items()}


__all__ = ["READOUT_PROMPT", "Readout", "ReadoutPairs", "describe", "read_out", "readout_pairs"]
