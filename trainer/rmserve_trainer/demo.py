"""``rmserve-train demo``: train the shipped demo model (``models/demo/``) from scratch on one CPU core.

    rmserve-train demo --output models/demo                          # the shipped recipe, then the held-out eval
    rmserve-train demo --output /tmp/d --max-steps 20 --vision-steps 20 --readout-steps 20 --refresh-steps 20

A Qwen2.5-VL-architecture model (text hidden 128 x 2 layers, vision hidden 64 x depth 2, patch 14;
every image resized to about 112^2 pixels whatever its size, so a shape filling an 80 px canvas and
one filling a 224 px canvas look alike), a byte-level BPE tokenizer trained on the task's texts, reward
and safety heads, trained on fresh pairs from ``data.demo_shapes`` (one shape per image, drawn many
ways). Four stages:

1. vision warm-up (``demo_vision``): the vision tower and patch merger alone learn to name the
   pictured shape and colour (a linear probe on the max-pooled vision tokens, thrown away after).
   Without it the tower learned colour but not shape across drawings. From here on the tower is frozen
   (its patch merger trains with the LM).
2. main stage: a critique model in the MM-RLHF sense AND a direct reward model, trained together: each
   batch of pairs becomes two batches, one forward each, one backward for both,

    plain:    user: image + prompt                       assistant: response   (what /v1/score reads)
    critique: user: image + template(prompt, response)   assistant: reference critique
                                                         (what /v1/critique generates, then scores)

    loss = BT(plain) + LM(the chosen plain response) + safety BCE(plain)
         + BT(reward read after the critique) + LM(the critiques of both responses)   (+ centering 0.01 each)

3. read-out (``demo_readout``): BT + LM on one short question and "The image shows a red circle." vs
   the same with the shape (mostly) or colour wrong. The main stage alone left the LM near chance on
   shape although the tower knew it; short sequences make thousands of these steps cheap.
4. refresh: the main stage's objective again, at a third of its learning rate, on fresh pairs: the
   read-out alone had broken the critique format and the safety head.

The critique names the pictured shape and colour first ("The image shows a red circle, but the
response says a red square. Score: low."), so /v1/critique's greedy critique is the model's own
reading of the image. Deterministic: one thread, fixed seeds, stop by step count (never by time).
At the end the saved checkpoint is loaded back and evaluated as the server runs it on the held-out
set of ``demo_heldout`` (a different drawing code path) and on held-out pairs of the training
generator (safety); the numbers go to ``demo_report.json`` and ``EVAL.md`` next to the weights.

Measured: models/demo/EVAL.md and docs/demo-shape-readout.md (what each stage bought).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import IterableDataset

from rmserve.models import load_reward_model
from rmserve.models.critique import CritiqueConfig

from .data import PairBatch, PairCollator, critique_items, response_items
from .data.demo_shapes import generate_shape_pairs, shape_corpus
from .demo_eval import evaluate_demo, markdown_report
from .demo_readout import Readout, read_out
from .demo_vision import VisionWarmup, warm_up_vision
from .hazards import CATEGORIES
from .modeling import HeadOptions, build_reward_model, set_trainable
from .trainers.base import PairTrainer, TrainConfig

# Short on purpose: every token of the template is paid for in every critique sequence, trained and served.
DEMO_CRITIQUE_TEMPLATE = "[Question]\n{question}\n[Response]\n{response}\n[Evaluation]:"


@dataclass
class DemoRecipe:
    steps: int = 600  # main-stage optimizer steps of 24 pairs (4 sequences each), after the vision warm-up
    batch_size: int = 24
    lr: float = 1.5e-3
    warmup_ratio: float = 0.03
    seed: int = 0
    max_pixels: int = 112 * 112  # every image is resized (up or down) to about this many pixels
    # The tower's shape accuracy is what limits the critiques' grounding: 1600 steps gave a 93.9-95.6% probe
    # and 82-86% grounded critiques, 4000 a 98.5-99.0% probe and 94% (docs/demo-shape-readout.md section 6).
    vision_steps: int = 4000  # vision warm-up steps of 32 images (demo_vision), ~0.1 s each
    vision_lr: float = 3e-3
    readout_steps: int = 900  # read-out steps of 32 short pairs after the main stage (demo_readout)
    readout_lr: float = 1e-3
    refresh_steps: int = 500  # the main stage's objective again, after the read-out
    refresh_lr: float = 5e-4
    hidden: int = 128
    layers: int = 2
    vision_hidden: int = 64
    vision_depth: int = 2
    head_width: int = 64
    chunk: int = 512  # pairs generated at a time (fresh data, bounded memory)
    lm_weight: float = 1.0
    safety_weight: float = 1.0
    centering: float = 0.01
    # 1.0 left the verdict token leaning to "right" whatever the response said (81% verdicts); 20 taught
    # the comparison (section 5 of docs/demo-shape-readout.md)
    verdict_weight: float = 20.0  # LM weight of the critique's verdict token (data.collate.verdict_weights)
    critique_max_new_tokens: int = 48
    eval_pairs: int = 600  # held-out pairs (demo_heldout) scored as served at the end
    eval_critiques: int = 600  # of those, pairs whose two responses also get generated critiques (the slow part)
    save_dtype: str = "bfloat16"
    num_workers: int = 1  # one process draws and encodes the next batches while the training thread runs


class FreshShapePairs(IterableDataset):
    """An endless stream of new pairs, chunk k drawn from seed stream ``seed * 10**6 + k``."""

    def __init__(self, seed: int, chunk: int):
        self.seed, self.chunk = seed, chunk

    def __iter__(self):
        k = 0
        while True:
            yield from generate_shape_pairs(self.chunk, self.seed * 10**6 + k, split="train")
            k += 1


@dataclass
class DemoCollator:
    """One batch of pairs -> two PairBatches: the plain sequences and the critique sequences.

    Two batches, not one: each is padded to its own longest row (plain rows are about half as long
    as critique rows), and in each the rejected rows carry the chosen rows' images, so the vision
    tower runs on half of them.
    """

    plain: PairCollator
    critique: PairCollator

    @property
    def skipped(self) -> int:
        return self.plain.skipped + self.critique.skipped

    def __call__(self, records) -> tuple[PairBatch, PairBatch]:
        return self.plain(records), self.critique(records)


class DemoTrainer(PairTrainer):
    """BT + LM + safety on the plain batch, plus BT + LM on the critique batch, in one backward."""

    name = "demo"

    def __init__(self, *args, critique: CritiqueConfig, **kw):
        self.critique = critique
        super().__init__(*args, **kw)

    def make_collator(self) -> DemoCollator:
        safety = self._collator_kwargs()["safety_labels"]
        return DemoCollator(PairCollator(self.model, to_items=response_items, lm_targets="chosen",
                                         safety_labels=safety),
                            PairCollator(self.model, to_items=critique_items(self.critique), lm_targets="both",
                                         verdict_weight=self.config.verdict_weight))

    def compute_loss(self, batches: tuple[PairBatch, PairBatch]) -> tuple[torch.Tensor, dict[str, float]]:
        plain, critique = batches
        loss_plain, metrics = super().compute_loss(plain)
        loss_critique, m_critique = super().compute_loss(critique)
        metrics.update({f"{k}_critique": v for k, v in m_critique.items() if k != "loss"})
        metrics["loss"] = metrics["loss"] + m_critique["loss"]
        return loss_plain + loss_critique, metrics

    def checkpoint_extra(self) -> dict:
        return {"critique": self.critique.to_dict()}


def demo_critique_config(recipe: DemoRecipe) -> CritiqueConfig:
    return CritiqueConfig(template=DEMO_CRITIQUE_TEMPLATE, max_new_tokens=recipe.critique_max_new_tokens)


def build_demo_model(recipe: DemoRecipe):
    corpus = shape_corpus() + [DEMO_CRITIQUE_TEMPLATE.format(question="", response="")] * 20
    model = build_reward_model(
        tiny="qwen2_5_vl", seed=recipe.seed, name="rmserve-demo-qwen2.5vl",
        heads=HeadOptions(kind="mlp", width=recipe.head_width, activation="silu", aux_kind="mlp",
                          safety_labels=tuple(CATEGORIES)),
        tiny_kwargs=dict(hidden=recipe.hidden, layers=recipe.layers, vision_hidden=recipe.vision_hidden,
                         vision_depth=recipe.vision_depth, max_pixels=recipe.max_pixels,
                         min_pixels=recipe.max_pixels, tokenizer_corpus=corpus + ["user\nassistant\n"] * 20),
    )
    n_params = sum(p.numel() for p in model.parameters())
    model.name = f"rmserve-demo-qwen2.5vl-{round(n_params / 1000)}k"
    set_trainable(model, train_vision=True, train_backbone=True, train_lm_head=True)  # from scratch: everything
    return model


def train_demo(output: str, recipe: DemoRecipe, *, progress: bool = True) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a different thread count gives different weights
    try:
        return _train_demo(output, recipe, progress)
    finally:
        torch.set_num_threads(threads)


def _main_stage(model, output: str, recipe: DemoRecipe, *, steps: int, lr: float, data_seed: int,
                progress: bool) -> DemoTrainer:
    config = TrainConfig(
        output_dir=output, lr=lr, warmup_ratio=recipe.warmup_ratio, batch_size=recipe.batch_size,
        max_steps=steps, seed=data_seed, centering=recipe.centering, lm_weight=recipe.lm_weight,
        lm_targets="both", verdict_weight=recipe.verdict_weight, safety_weight=recipe.safety_weight, log_every=50,
        save_dtype=recipe.save_dtype, progress=progress, num_workers=recipe.num_workers,
    )
    trainer = DemoTrainer(model, config, FreshShapePairs(data_seed, recipe.chunk),
                          critique=demo_critique_config(recipe))
    trainer.fit()
    return trainer


def _stage_marker(output: str, stage: str) -> None:
    """One line in metrics.jsonl before each stage's rows (every stage counts its steps from 1)."""
    with open(os.path.join(output, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"stage": stage}) + "\n")


def _train_demo(output: str, recipe: DemoRecipe, progress: bool) -> dict:
    torch.manual_seed(recipe.seed)
    cpu0 = time.process_time()
    model = build_demo_model(recipe)
    os.makedirs(output, exist_ok=True)
    if os.path.exists(os.path.join(output, "metrics.jsonl")):
        os.remove(os.path.join(output, "metrics.jsonl"))  # this run's log, not appended to the last one's
    seconds: dict[str, float] = {}
    vision = {}
    if recipe.vision_steps:
        t0 = time.perf_counter()
        vision = warm_up_vision(model, VisionWarmup(steps=recipe.vision_steps, lr=recipe.vision_lr, seed=recipe.seed),
                                log=(lambda m: print(json.dumps(m), flush=True)) if progress else (lambda m: None))
        seconds["vision_warmup"] = round(time.perf_counter() - t0, 1)
    # From here on the tower (not its patch merger, which projects into the LM and trains with it) stays
    # as the warm-up left it: trained further through the LM, its shape signal faded
    # (docs/demo-shape-readout.md, section 2).
    set_trainable(model, train_vision=False, train_backbone=True, train_lm_head=True)
    _stage_marker(output, "main")
    t0 = time.perf_counter()
    trainer = _main_stage(model, output, recipe, steps=recipe.steps, lr=recipe.lr, data_seed=recipe.seed,
                          progress=progress)
    seconds["main"] = round(time.perf_counter() - t0, 1)
    readout = {}
    if recipe.readout_steps:
        _stage_marker(output, "readout")
        t0 = time.perf_counter()
        readout = read_out(model, Readout(steps=recipe.readout_steps, lr=recipe.readout_lr, seed=recipe.seed,
                                          num_workers=recipe.num_workers), output, progress=progress)
        seconds["readout"] = round(time.perf_counter() - t0, 1)
    if recipe.refresh_steps:
        # The read-out stage trains one short answer only: the critique format and the safety head drift
        # (greedy critiques collapsed to "."; safety AUROC 0.42). A short main stage on fresh pairs brings
        # them back without losing the shape (docs/demo-shape-readout.md, section 3).
        _stage_marker(output, "refresh")
        t0 = time.perf_counter()
        trainer = _main_stage(model, output, recipe, steps=recipe.refresh_steps, lr=recipe.refresh_lr,
                              data_seed=recipe.seed + 1, progress=progress)
        seconds["refresh"] = round(time.perf_counter() - t0, 1)
    trainer.save_checkpoint(output)
    # CPU time, not wall time, is what the machine's other load cannot inflate: the training process, and
    # the data processes (drawing, encoding) that ran beside it on the second core.
    cpu = {"main_process": round(time.process_time() - cpu0, 1),
           "data_processes": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                                   + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime, 1)}
    report = {"name": model.name, "params": sum(p.numel() for p in model.parameters()),
              "steps": recipe.steps, "train_seconds": round(sum(seconds.values()), 1), "stage_seconds": seconds,
              "threads": 1, "cpu_seconds": cpu, "vision_warmup": vision, "readout": readout,
              "objective": "vision warm-up (shape + colour CE on the max-pooled vision tokens); then, tower frozen, "
                           "BT on the plain (image + prompt, response) sequence and on the reward read after the "
                           "reference critique + LM on both critiques and the chosen response + safety BCE; a "
                           "read-out stage (BT + LM on 'The image shows a <colour> <shape>.'); the first objective "
                           "again, briefly",
              "data": "data.demo_shapes (one shape per image, varied drawing)", "recipe": asdict(recipe)}
    if recipe.eval_pairs:
        t0 = time.perf_counter()
        report.update(evaluate_demo(load_reward_model(output), n_pairs=recipe.eval_pairs,
                                    n_critiques=recipe.eval_critiques, seed=recipe.seed))
        report["eval_seconds"] = round(time.perf_counter() - t0, 1)
    with open(os.path.join(output, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    if recipe.eval_pairs:
        with open(os.path.join(output, "EVAL.md"), "w") as f:
            f.write(markdown_report(report, title=f"{model.name} on the held-out drawings"))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoRecipe()
    parser.add_argument("--output", default="models/demo", help="checkpoint directory (default: models/demo)")
    parser.add_argument("--max-steps", type=int, default=defaults.steps,
                        help=f"optimizer steps of {defaults.batch_size} pairs")
    parser.add_argument("--vision-steps", type=int, default=defaults.vision_steps,
                        help="vision warm-up steps of 32 labelled images before (0: none)")
    parser.add_argument("--readout-steps", type=int, default=defaults.readout_steps,
                        help="read-out steps of 32 short pairs after the main stage (0: none)")
    parser.add_argument("--refresh-steps", type=int, default=defaults.refresh_steps,
                        help="main-stage steps again after the read-out (0: none)")
    parser.add_argument("--verdict-weight", type=float, default=defaults.verdict_weight,
                        help="LM weight of the critiques' verdict token in the main stage and the refresh")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-pairs", type=int, default=defaults.eval_pairs,
                        help="held-out pairs scored as served at the end (0: skip the evaluation)")
    parser.add_argument("--eval-critiques", type=int, default=defaults.eval_critiques,
                        help="of those, pairs also critiqued (greedy generation: the slow part)")
    parser.add_argument("--save-dtype", default=defaults.save_dtype, choices=("bfloat16", "float32"))
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    recipe = DemoRecipe(steps=args.max_steps, vision_steps=args.vision_steps, readout_steps=args.readout_steps,
                        refresh_steps=args.refresh_steps, verdict_weight=args.verdict_weight, seed=args.seed,
                        eval_pairs=args.eval_pairs, eval_critiques=args.eval_critiques, save_dtype=args.save_dtype)
    report = train_demo(args.output, recipe, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=2))
    return 0
