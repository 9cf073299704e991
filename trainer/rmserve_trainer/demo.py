"""``rmserve-train demo``: train the shipped demo model (``models/demo/``) from scratch on one CPU core.

    rmserve-train demo --output models/demo            # 2600 steps (~9 min on one idle core)
    rmserve-train demo --output /tmp/d --max-steps 20  # a quick look (same recipe, fewer steps)

The recipe (docs/architecture.md, "Training"): a Qwen2.5-VL-architecture model with
text hidden 128 x 2 layers and vision hidden 64 x depth 2 (patch 14, 112 px images), a byte-level
BPE tokenizer trained on the task's own texts, reward + safety heads, trained on fresh synthetic
pairs of the "demo" difficulty (``data.synthetic``: one large coloured shape, or 1-3 of one kind
for counts; hallucinated colour / shape / count, negations, unsafe requests) on exactly the
sequences ``POST /v1/score`` scores (user turn: image + prompt, assistant turn: the response,
reward head at the last token; ``RewardModel.encode``):

    BT on the reward (+ centering 0.01)
    + LM on the chosen response in that same sequence (coefficient 1.0: what makes the vision
      tower learn shape; BT alone only learns colour)
    + safety BCE

The checkpoint is a plain reward model (no ``"critique"`` section): ``/v1/critique`` answers that
it is not a critique model. Deterministic: one thread, fixed seeds, stop by step count (never by
time): two runs give bit-identical weights on the same machine. At the end the saved checkpoint is
loaded back and scored as the server scores (``model.score`` on the plain items) on fresh held-out
pairs; the numbers go to ``demo_report.json`` next to the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset

from rmserve.models import load_reward_model

from .data import response_items
from .data.synthetic import demo_corpus, generate_demo_pairs
from .hazards import CATEGORIES
from .metrics import auroc
from .modeling import HeadOptions, build_reward_model, set_trainable
from .trainers import BTTrainer, TrainConfig

DIFFICULTY = "demo"  # data.synthetic's one-large-object scenes


@dataclass
class DemoRecipe:
    steps: int = 2600  # optimizer steps of 32 pairs (83k fresh pairs); ~0.21 s each on one idle core
    batch_size: int = 32
    lr: float = 1e-3
    warmup_ratio: float = 0.02
    seed: int = 0
    image_size: int = 112
    hidden: int = 128
    layers: int = 2
    vision_hidden: int = 64
    vision_depth: int = 2
    head_width: int = 64
    chunk: int = 1024  # pairs generated at a time (fresh data, bounded memory)
    lm_weight: float = 1.0  # LM on the chosen response: BT alone does not learn shape (docs/architecture.md)
    safety_weight: float = 1.0
    centering: float = 0.01
    eval_pairs: int = 1000  # fresh held-out pairs scored as served at the end
    save_dtype: str = "bfloat16"
    monitor_every: int = 0  # >0: every so many steps, pairwise accuracy on monitor_pairs pairs (as served)
    monitor_pairs: int = 200
    num_workers: int = 1  # one process encodes the next batches while the training thread runs


class FreshPairs(IterableDataset):
    """An endless stream of new synthetic pairs, chunk k drawn from seed stream ``seed * 10**6 + k``."""

    def __init__(self, seed: int, chunk: int, image_size: int):
        self.seed, self.chunk, self.image_size = seed, chunk, image_size

    def __iter__(self):
        k = 0
        while True:
            yield from generate_demo_pairs(self.chunk, self.seed * 10**6 + k, self.image_size, split="train",
                                           difficulty=DIFFICULTY)
            k += 1


def build_demo_model(recipe: DemoRecipe):
    model = build_reward_model(
        tiny="qwen2_5_vl", seed=recipe.seed, name="rmserve-demo-qwen2.5vl",
        heads=HeadOptions(kind="mlp", width=recipe.head_width, activation="silu", aux_kind="mlp",
                          safety_labels=tuple(CATEGORIES)),
        tiny_kwargs=dict(hidden=recipe.hidden, layers=recipe.layers, vision_hidden=recipe.vision_hidden,
                         vision_depth=recipe.vision_depth, max_pixels=recipe.image_size ** 2,
                         tokenizer_corpus=demo_corpus(DIFFICULTY) + ["user\nassistant\n"] * 20),
    )
    n_params = sum(p.numel() for p in model.parameters())
    model.name = f"rmserve-demo-qwen2.5vl-{round(n_params / 1000)}k"
    set_trainable(model, train_vision=True, train_backbone=True, train_lm_head=True)  # from scratch: everything
    return model


def heldout_pairs(n: int, seed: int, image_size: int = 112) -> list:
    """Fresh pairs of the demo task from the held-out seed stream (never drawn in training)."""
    return generate_demo_pairs(n, seed, image_size, split="heldout", difficulty=DIFFICULTY)


@torch.inference_mode()
def evaluate_records(model, records: list, batch_size: int = 32) -> dict:
    """Score pairs as ``POST /v1/score`` does: ``model.score`` on the plain (image + prompt, response) items.

    Returns pairwise accuracy (strict), per-category accuracy, and safety AUROC over the responses
    of the unsafe-request pairs (refusal = safe, compliance = unsafe), P(unsafe) = max category prob.
    """
    items = [item for r in records for item in response_items(r)]
    scored = model.score(items, batch_size=batch_size)
    by_category: dict[str, list[bool]] = {}
    probs, labels = [], []
    for i, r in enumerate(records):
        c, j = scored[2 * i], scored[2 * i + 1]
        by_category.setdefault(r.category, []).append(c.reward > j.reward)
        if r.category == "safety":
            for out, codes in ((c, r.chosen_safety), (j, r.rejected_safety)):
                probs.append(max(out.safety.values()))
                labels.append(1.0 if codes else 0.0)
    wins = [w for ws in by_category.values() for w in ws]
    return {
        "pairs": len(records), "accuracy": sum(wins) / len(wins),
        "category_accuracy": {k: sum(v) / len(v) for k, v in sorted(by_category.items())},
        "category_pairs": {k: len(v) for k, v in sorted(by_category.items())},
        "safety_auroc": auroc(probs, labels) if probs else None, "safety_responses": len(probs),
    }


def evaluate_checkpoint(path: str, *, n_pairs: int, seed: int, image_size: int = 112) -> dict:
    """``evaluate_records`` on ``n_pairs`` fresh held-out pairs, from the saved files."""
    return evaluate_records(load_reward_model(path), heldout_pairs(n_pairs, seed, image_size))


def train_demo(output: str, recipe: DemoRecipe, *, progress: bool = True) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a different thread count gives different weights
    try:
        return _train_demo(output, recipe, progress)
    finally:
        torch.set_num_threads(threads)


def _train_demo(output: str, recipe: DemoRecipe, progress: bool) -> dict:
    torch.manual_seed(recipe.seed)
    model = build_demo_model(recipe)
    config = TrainConfig(
        output_dir=output, lr=recipe.lr, warmup_ratio=recipe.warmup_ratio, batch_size=recipe.batch_size,
        max_steps=recipe.steps, seed=recipe.seed, centering=recipe.centering, lm_weight=recipe.lm_weight,
        lm_targets="chosen", safety_weight=recipe.safety_weight, log_every=50, save_dtype=recipe.save_dtype,
        progress=progress, eval_every=recipe.monitor_every, num_workers=recipe.num_workers,
    )
    # The monitor stream is its own split: never the training or the held-out pairs.
    monitor = (generate_demo_pairs(recipe.monitor_pairs, recipe.seed, recipe.image_size, split="monitor",
                                   difficulty=DIFFICULTY) if recipe.monitor_every else None)
    trainer = BTTrainer(model, config, FreshPairs(recipe.seed, recipe.chunk, recipe.image_size), monitor)
    t0 = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - t0
    trainer.save_checkpoint(output)
    report = {"name": model.name, "params": sum(p.numel() for p in model.parameters()),
              "steps": recipe.steps, "train_seconds": round(train_seconds, 1), "threads": 1,
              "objective": "BT on the plain (image + prompt, response) sequence + LM on the chosen response "
                           "+ safety BCE; no critique section", "data": f"data.synthetic difficulty={DIFFICULTY!r}",
              "recipe": recipe.__dict__}
    if recipe.eval_pairs:
        report["heldout"] = evaluate_checkpoint(output, n_pairs=recipe.eval_pairs, seed=recipe.seed,
                                                image_size=recipe.image_size)
    with open(os.path.join(output, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoRecipe()
    parser.add_argument("--output", default="models/demo", help="checkpoint directory (default: models/demo)")
    parser.add_argument("--max-steps", type=int, default=defaults.steps, help="optimizer steps of 32 pairs")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-pairs", type=int, default=defaults.eval_pairs,
                        help="fresh held-out pairs scored as served at the end (0: skip)")
    parser.add_argument("--monitor-every", type=int, default=defaults.monitor_every,
                        help="every so many steps, accuracy on monitor pairs (0: never)")
    parser.add_argument("--save-dtype", default=defaults.save_dtype, choices=("bfloat16", "float32"))
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    recipe = DemoRecipe(steps=args.max_steps, seed=args.seed, eval_pairs=args.eval_pairs, save_dtype=args.save_dtype,
                        monitor_every=args.monitor_every)
    report = train_demo(args.output, recipe, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=2))
    return 0
