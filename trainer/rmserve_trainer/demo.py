"""``rmserve-train demo``: train the shipped demo model (``models/demo/``) from scratch on one CPU core.

    rmserve-train demo --output models/demo            # 1200 steps; what `make demo` runs
    rmserve-train demo --output /tmp/d --max-steps 20  # a quick look (same recipe, fewer steps)

The recipe (DESIGN.md section 8, "Demo model from scratch"): a Qwen2.5-VL-architecture model with
text hidden 128 x 2 layers and vision hidden 64 x depth 2 (patch 14, 112 px images), a byte-level
BPE tokenizer trained on the task's own texts, reward + safety heads, trained with the critique
objective on fresh synthetic pairs (``data.synthetic``: coloured shapes, hallucinated colour /
shape / count, negations, unsafe requests):

    critique CE (both reference critiques) + LM on the chosen response inside the evaluator turn
    + BT on the reward after the critique (+ centering 0.01) + BT on the reward at the end of the
    evaluator turn (a perception signal: BT after a critique only learns to read its verdict)
    + safety BCE

Deterministic: one thread, fixed seeds, stop by step count (never by time): two runs give
bit-identical weights on the same machine. At the end the saved checkpoint is loaded back and
scored as the server would (greedy critique, then reward) on held-out pairs; the numbers go to
``demo_report.json`` next to the weights.
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
from rmserve.models.critique import CritiqueConfig, critique_and_score

from .data import response_items
from .data.synthetic import demo_corpus, generate_demo_pairs
from .hazards import CATEGORIES
from .metrics import auroc
from .modeling import HeadOptions, build_reward_model, set_trainable
from .trainers import CritiqueTrainer, TrainConfig

# Short on purpose: every token of the template is in every training sequence.
DEMO_TEMPLATE = "[Question]\n{question}\n[LMM Response]\n{response}\n[Evaluation]:"


@dataclass
class DemoRecipe:
    steps: int = 1200  # optimizer steps of 32 pairs (~38k fresh pairs)
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
    eval_pairs: int = 400  # held-out pairs scored with generated critiques at the end
    max_new_tokens: int = 48  # reference critiques are ~25 tokens
    save_dtype: str = "bfloat16"
    monitor_every: int = 0  # >0: every so many steps, accuracy with generated critiques on monitor_pairs pairs
    monitor_pairs: int = 100
    num_workers: int = 1  # one process encodes the next batches while the training thread runs


class FreshPairs(IterableDataset):
    """An endless stream of new synthetic pairs, chunk k drawn from seed stream ``seed * 10**6 + k``."""

    def __init__(self, seed: int, chunk: int, image_size: int):
        self.seed, self.chunk, self.image_size = seed, chunk, image_size

    def __iter__(self):
        k = 0
        while True:
            yield from generate_demo_pairs(self.chunk, self.seed * 10**6 + k, self.image_size, split="train")
            k += 1


def build_demo_model(recipe: DemoRecipe):
    template_words = DEMO_TEMPLATE.replace("{question}", "").replace("{response}", "")
    model = build_reward_model(
        tiny="qwen2_5_vl", seed=recipe.seed, name="rmserve-demo-qwen2.5vl",
        heads=HeadOptions(kind="mlp", width=recipe.head_width, activation="silu", aux_kind="mlp",
                          safety_labels=tuple(CATEGORIES)),
        tiny_kwargs=dict(hidden=recipe.hidden, layers=recipe.layers, vision_hidden=recipe.vision_hidden,
                         vision_depth=recipe.vision_depth, max_pixels=recipe.image_size ** 2,
                         tokenizer_corpus=demo_corpus() + [template_words, "user\nassistant\n"] * 20),
    )
    n_params = sum(p.numel() for p in model.parameters())
    model.name = f"rmserve-demo-qwen2.5vl-{round(n_params / 1000)}k"
    set_trainable(model, train_vision=True, train_backbone=True, train_lm_head=True)  # from scratch: everything
    return model


def evaluate_records(model, records: list) -> dict:
    """Score pairs as the server would (generated critique, then reward).

    Returns pairwise accuracy (strict), per-category accuracy, and safety AUROC over the responses
    of the unsafe-request pairs (refusal = safe, compliance = unsafe), P(unsafe) = max category prob.
    """
    items = [item for r in records for item in response_items(r)]
    scored = critique_and_score(model, items, batch_size=32)
    by_category: dict[str, list[bool]] = {}
    probs, labels = [], []
    for i, r in enumerate(records):
        c, j = scored[2 * i].score, scored[2 * i + 1].score
        by_category.setdefault(r.category, []).append(c.reward > j.reward)
        if r.category == "safety":
            for out, codes in ((c, r.chosen_safety), (j, r.rejected_safety)):
                probs.append(max(out.safety.values()))
                labels.append(1.0 if codes else 0.0)
    wins = [w for ws in by_category.values() for w in ws]
    return {
        "pairs": len(records), "accuracy": sum(wins) / len(wins),
        "category_accuracy": {k: sum(v) / len(v) for k, v in sorted(by_category.items())},
        "safety_auroc": auroc(probs, labels), "safety_responses": len(probs),
        "example_critiques": [s.critique for s in scored[:4]],
    }


def evaluate_checkpoint(path: str, *, n_pairs: int, seed: int, image_size: int = 112) -> dict:
    """``evaluate_records`` on ``n_pairs`` fresh held-out pairs, from the saved files."""
    return evaluate_records(load_reward_model(path), generate_demo_pairs(n_pairs, seed, image_size, split="heldout"))


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
        max_steps=recipe.steps, seed=recipe.seed, centering=0.01, lm_weight=1.0, lm_targets="both",
        safety_weight=1.0, log_every=50, save_dtype=recipe.save_dtype, progress=progress,
        eval_every=recipe.monitor_every, num_workers=recipe.num_workers, lm_chosen_in_prompt=True,
        prompt_bt_weight=1.0,
    )
    critique = CritiqueConfig(template=DEMO_TEMPLATE, max_new_tokens=recipe.max_new_tokens)
    monitor = (generate_demo_pairs(recipe.monitor_pairs, recipe.seed, recipe.image_size, split="monitor")
               if recipe.monitor_every else None)
    trainer = CritiqueTrainer(model, config, FreshPairs(recipe.seed, recipe.chunk, recipe.image_size), monitor,
                              critique=critique, eval_generate=recipe.monitor_pairs)
    t0 = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - t0
    trainer.save_checkpoint(output)
    report = {"name": model.name, "params": sum(p.numel() for p in model.parameters()),
              "steps": recipe.steps, "train_seconds": round(train_seconds, 1), "threads": 1,
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
                        help="held-out pairs scored with generated critiques at the end (0: skip)")
    parser.add_argument("--save-dtype", default=defaults.save_dtype, choices=("bfloat16", "float32"))
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    recipe = DemoRecipe(steps=args.max_steps, seed=args.seed, eval_pairs=args.eval_pairs, save_dtype=args.save_dtype)
    report = train_demo(args.output, recipe, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=2))
    return 0
