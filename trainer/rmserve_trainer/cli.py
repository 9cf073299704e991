"""``rmserve-train``: train reward models that ``rmserve serve`` loads. Subcommands only wire things together.

    rmserve-train bt --model Qwen2.5-VL-7B-Instruct --train pairs.jsonl --image-root imgs --output runs/bt
    rmserve-train bt --tiny qwen2_5_vl --train pairs.jsonl --max-steps 20 --lr 1e-3 --output /tmp/rm
    rmserve-train critique --model llava-ov-7b --train dpo_pairs.jsonl --format mmrlhf --lora --output runs/crit
    rmserve-train judge --model Qwen2.5-VL-7B-Instruct --train pairs.jsonl --judge-mode pairwise --output runs/judge
    rmserve-train bt ... --safety-categories all --safety-weight 1 --attributes helpfulness,correctness
    rmserve-train demo --output models/demo          # the shipped demo model, from scratch, on 1 CPU core
    accelerate launch --config_file trainer/configs/fsdp.yaml -m rmserve_trainer.cli bt ...   # GPUs

The other subcommands (eval, pairs, convert, synth) live in their own modules, each with
``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .config import TrainConfig
from .flags import add_dataclass_flags, dataclass_from_args

# Subcommands owned by other modules: name -> (module, help). Each has add_arguments(parser) and run(args).
EXTERNAL = {
    "eval": ("rmserve_trainer.eval", "pairwise accuracy of a reward model on a benchmark"),
    "pairs": ("rmserve_trainer.pairs", "build DPO pairs / best-of-N with a reward model"),
    "convert": ("rmserve.models.convert", "convert a reward-model checkpoint into rmserve's format"),
    "synth": ("rmserve_trainer.data.synthetic", "write synthetic demo pairs (pairs.jsonl + images/)"),
    "demo-eval": ("rmserve_trainer.demo_eval", "a checkpoint on the demo's held-out drawings (per-factor accuracy)"),
}


# ---- arguments ------------------------------------------------------------------------------------
def _data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", nargs="+", required=True, metavar="JSONL", help="training pairs (one or more files)")
    g.add_argument("--eval", nargs="*", default=[], metavar="JSONL", help="held-out pairs for eval/* metrics")
    g.add_argument("--format", default="auto", help="pairwise | mmrlhf | vlrewardbench | mmrewardbench | auto")
    g.add_argument("--image-root", default=None, help="image paths are relative to this (default: each file's folder)")
    # --skip-bad is a TrainConfig flag (training group): it also drops records that fail at batch time.
    g.add_argument("--lazy-images", action="store_true", help="check images when reading, decode them per batch")
    g.add_argument("--limit", type=int, default=None, help="read at most this many pairs per file")


def _model_arguments(p: argparse.ArgumentParser, heads: bool = True) -> None:
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an HF backbone directory or an rmserve checkpoint to continue from")
    src.add_argument("--tiny", metavar="FAMILY", help="a tiny random model (tests): qwen2_5_vl, qwen2_vl, "
                     "llava_onevision, qwen2, llama")
    g.add_argument("--name", default=None, help="model name stored in the checkpoint")
    g.add_argument("--dtype", default="float32", help="dtype to load --model in (float32 | bfloat16)")
    g.add_argument("--lora", action="store_true", help="train LoRA adapters (merged into the saved weights)")
    g.add_argument("--lora-r", type=int, default=16)
    g.add_argument("--lora-alpha", type=int, default=32)
    g.add_argument("--lora-dropout", type=float, default=0.05)
    g.add_argument("--train-vision", action="store_true", help="unfreeze the vision tower (frozen by default)")
    if not heads:  # a generative judge has none
        return
    g.add_argument("--head-kind", default="mlp", choices=("mlp", "linear"))
    g.add_argument("--head-width", type=int, default=None, help="MLP width (default: the hidden size)")
    g.add_argument("--head-activation", default="silu", choices=("silu", "tanh", "relu", "gelu"))
    g.add_argument("--head-layers", type=int, default=2, help="Linear layers in an MLP head (BaseReward: 2)")
    g.add_argument("--aux-head-kind", default="linear", choices=("mlp", "linear"), help="safety/attribute heads")
    g.add_argument("--safety-categories", default=None, help="add a safety head: 'all' or codes like S1,S10")
    g.add_argument("--attributes", default=None, help="add an attribute head: comma-separated names")
    g.add_argument("--freeze-backbone", action="store_true", help="train the heads only")


# What rmserve-train's subcommands default to where TrainConfig's library defaults differ. Safety/attribute
# heads exist only when their flags asked for them, so their losses are on; critique trains the LM on its
# critiques and centers the rewards as MM-RLHF does.
COMMAND_DEFAULTS = {
    "bt": {"safety_weight": 1.0, "attribute_weight": 1.0},
    "critique": {"safety_weight": 1.0, "attribute_weight": 1.0, "lm_weight": 1.0, "centering": 0.01},
    "judge": {},
}
# Set by the subcommand, never by a flag: the LM loss of a critique model reads both critiques; a judge's
# loss is the LM loss on its replies alone (trainers/judge.py), so the reward-head weights are off.
COMMAND_FIXED = {"bt": {"lm_targets": "chosen"}, "critique": {"lm_targets": "both"},
                 "judge": {"lm_targets": "both", "lm_weight": 1.0, "reward_weight": 0.0}}


def _train_arguments(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("training")
    add_dataclass_flags(g, TrainConfig, command, COMMAND_DEFAULTS[command])
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (pin it for reproducible runs)")


def _judge_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judge (the checkpoint's \"judge\" section; docs/architecture.md)")
    g.add_argument("--judge-mode", default="pairwise", choices=("pairwise", "pointwise"),
                   help="pairwise: which of A/B is better (both orders trained); pointwise: a score per response")
    g.add_argument("--judge-config", default=None, metavar="JSON",
                   help="a whole judge section (template, answer_prefix, choices, values, ...) instead of the "
                   "mode's default")
    g.add_argument("--judge-template", default=None, metavar="FILE",
                   help="the judge's user message: {prompt} {response_a} {response_b} (pairwise) or {prompt} "
                   "{response} (pointwise)")
    g.add_argument("--reasoning", action="store_true",
                   help="the judge writes a judgment before the answer (trained on chosen_reason/rejected_reason)")
    g.add_argument("--judge-max-new-tokens", type=int, default=256, help="judgment length at serving time")


def judge_section(args) -> dict:
    """The ``judge`` section a ``judge`` command line describes (validated: JudgeConfigError names the field)."""
    import json

    from rmserve.models.judge_format import JudgeConfig

    from .trainers.judge import DEFAULT_JUDGES

    if args.judge_config:
        with open(args.judge_config, encoding="utf-8") as f:
            section = json.load(f)
    else:
        section = dict(DEFAULT_JUDGES[args.judge_mode], reasoning=args.reasoning,
                       max_new_tokens=args.judge_max_new_tokens)
    if args.judge_template:
        with open(args.judge_template, encoding="utf-8") as f:
            section["template"] = f.read()
    return JudgeConfig.from_dict(section).to_dict()


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig a parsed ``bt`` / ``critique`` / ``judge`` command line describes."""
    return dataclass_from_args(TrainConfig, args, args.command, **COMMAND_FIXED[args.command])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmserve-train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("bt", help="Bradley-Terry reward model (BaseReward)")
    _data_arguments(bt)
    _model_arguments(bt)
    _train_arguments(bt, "bt")

    crit = sub.add_parser("critique", help="critique-then-score reward model (MM-RLHF)")
    _data_arguments(crit)
    _model_arguments(crit)
    _train_arguments(crit, "critique")
    crit.add_argument("--template", default=None, help="evaluator prompt file with {question} and {response}")
    crit.add_argument("--max-new-tokens", type=int, default=256, help="critique length at serving time")
    crit.add_argument("--eval-generate", type=int, default=0, help="eval pairs scored with generated critiques")

    judge = sub.add_parser("judge", help="generative judge (GenRM): SFT on judgments rendered from pairs")
    _data_arguments(judge)
    _model_arguments(judge, heads=False)
    _train_arguments(judge, "judge")
    _judge_arguments(judge)

    demo = sub.add_parser("demo", help="train the shipped demo model from scratch on CPU (deterministic)")
    from .demo import add_arguments as demo_arguments

    demo_arguments(demo)

    for name, (module, help_text) in EXTERNAL.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # not written yet
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(external=mod)
    return parser


# ---- wiring -----------------------------------------------------------------------------------------
def _read(paths: list[str], args) -> list:
    from .data import load_pairs

    records = []
    for path in paths:
        part, report = load_pairs(path, args.format, image_root=args.image_root, skip_bad=args.skip_bad,
                                  lazy_images=args.lazy_images, limit=args.limit)
        print(report.summary(), file=sys.stderr)
        records += part
    return records


def _read_train_eval(args) -> tuple[list, list | None]:
    train, evaluation = _read(args.train, args), _read(args.eval, args) if args.eval else None
    if not train:
        raise SystemExit("no training pairs left after reading the data")
    return train, evaluation


def build_judge_trainer(args):
    """A ``judge`` command line: the backbone (no heads) + the judge section, LM loss on the judgments."""
    from rmserve.models.judge_format import JudgeConfig

    from .modeling import apply_lora, build_judge_model, set_trainable
    from .trainers.judge import JudgeTrainer

    section = judge_section(args)
    model = build_judge_model(model=args.model, tiny=args.tiny, judge=section, seed=args.seed, dtype=args.dtype,
                              name=args.name)
    lora_scaling = None
    if args.lora:
        lora_scaling = apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                                  train_vision=args.train_vision)
    else:
        set_trainable(model, train_vision=args.train_vision, train_lm_head=True)
    train, evaluation = _read_train_eval(args)
    return JudgeTrainer(model, train_config(args), train, evaluation, judge=JudgeConfig.from_dict(section),
                        lora_scaling=lora_scaling)


def build_trainer(args):
    """The trainer a ``bt`` / ``critique`` / ``judge`` command line describes (tests and accelerate workers too)."""
    import torch

    from .hazards import parse_categories
    from .modeling import HeadOptions, apply_lora, build_reward_model, set_trainable
    from .trainers import BTTrainer, CritiqueTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "judge":
        return build_judge_trainer(args)
    critique = args.command == "critique"
    heads = HeadOptions(
        kind=args.head_kind, width=args.head_width, activation=args.head_activation, layers=args.head_layers,
        aux_kind=args.aux_head_kind,
        safety_labels=tuple(parse_categories(args.safety_categories)) if args.safety_categories else (),
        attribute_names=tuple(a.strip() for a in args.attributes.split(",") if a.strip()) if args.attributes else (),
    )
    model = build_reward_model(model=args.model, tiny=args.tiny, heads=heads, seed=args.seed, dtype=args.dtype,
                               name=args.name)
    train_lm_head = args.lm_weight > 0
    lora_scaling = None
    if args.lora:
        lora_scaling = apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                                  train_vision=args.train_vision)
    else:
        set_trainable(model, train_vision=args.train_vision, train_backbone=not args.freeze_backbone,
                      train_lm_head=train_lm_head and not args.freeze_backbone)
    config = train_config(args)
    train, evaluation = _read_train_eval(args)
    if critique:
        from rmserve.models.critique import CritiqueConfig

        options = {"max_new_tokens": args.max_new_tokens}
        if args.template:
            with open(args.template, encoding="utf-8") as f:
                options["template"] = f.read()
        return CritiqueTrainer(model, config, train, evaluation, critique=CritiqueConfig(**options),
                               eval_generate=args.eval_generate, lora_scaling=lora_scaling)
    return BTTrainer(model, config, train, evaluation, lora_scaling=lora_scaling)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args = build_parser().parse_args(argv)
    if getattr(args, "external", None) is not None:
        return args.external.run(args)
    if args.command == "demo":
        from .demo import run

        return run(args)
    trainer = build_trainer(args)
    trainer.fit()
    path = trainer.save_checkpoint()
    # Under `accelerate launch`, leaving with the process group alive lets a rank's gloo threads be
    # torn down by the interpreter: "terminate called without an active exception", SIGABRT, and the
    # launcher reports a failed run although the checkpoint was written.
    trainer.accelerator.end_training()
    if trainer.accelerator.is_main_process:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
