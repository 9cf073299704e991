"""``rmserve-train``: train reward models that ``rmserve serve`` loads. Subcommands only wire things together.

    rmserve-train bt --model Qwen2.5-VL-7B-Instruct --train pairs.jsonl --image-root imgs --output runs/bt
    rmserve-train bt --tiny qwen2_5_vl --train pairs.jsonl --max-steps 20 --lr 1e-3 --output /tmp/rm
    rmserve-train critique --model llava-ov-7b --train dpo_pairs.jsonl --format mmrlhf --lora --output runs/crit
    rmserve-train bt ... --safety-categories all --safety-weight 1 --attributes helpfulness,correctness
    rmserve-train demo --output models/demo          # the shipped demo model, from scratch, ~6 min on 1 core
    accelerate launch --config_file trainer/configs/fsdp.yaml -m rmserve_trainer.cli bt ...   # GPUs

The other subcommands (eval, pairs, convert, synth) live in their own modules, each with
``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommands owned by other modules: name -> (module, help). Each has add_arguments(parser) and run(args).
EXTERNAL = {
    "eval": ("rmserve_trainer.eval", "pairwise accuracy of a reward model on a benchmark"),
    "pairs": ("rmserve_trainer.pairs", "build DPO pairs / best-of-N with a reward model"),
    "convert": ("rmserve.models.convert", "convert a reward-model checkpoint into rmserve's format"),
    "synth": ("rmserve_trainer.data.synthetic", "write synthetic demo pairs (pairs.jsonl + images/)"),
    "demo-eval": ("rmserve_trainer.demo_eval", "a checkpoint on the demo's held-out drawings (per-factor accuracy)"),
    "demo-critique": ("rmserve_trainer.demo_critique",
                      "EXPERIMENTAL: a critique + reward demo model on varied drawings (does not learn shape yet)"),
}


# ---- arguments ------------------------------------------------------------------------------------
def _data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", nargs="+", required=True, metavar="JSONL", help="training pairs (one or more files)")
    g.add_argument("--eval", nargs="*", default=[], metavar="JSONL", help="held-out pairs for eval/* metrics")
    g.add_argument("--format", default="auto", help="pairwise | mmrlhf | vlrewardbench | mmrewardbench | auto")
    g.add_argument("--image-root", default=None, help="image paths are relative to this (default: each file's folder)")
    g.add_argument("--skip-bad", action="store_true", help="skip bad records (counted and reported) instead of failing")
    g.add_argument("--lazy-images", action="store_true", help="check images when reading, decode them per batch")
    g.add_argument("--limit", type=int, default=None, help="read at most this many pairs per file")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an HF backbone directory or an rmserve checkpoint to continue from")
    src.add_argument("--tiny", metavar="FAMILY", help="a tiny random model (tests): qwen2_5_vl, qwen2_vl, "
                     "llava_onevision, qwen2, llama")
    g.add_argument("--name", default=None, help="model name stored in the checkpoint")
    g.add_argument("--dtype", default="float32", help="dtype to load --model in (float32 | bfloat16)")
    g.add_argument("--head-kind", default="mlp", choices=("mlp", "linear"))
    g.add_argument("--head-width", type=int, default=None, help="MLP width (default: the hidden size)")
    g.add_argument("--head-activation", default="silu", choices=("silu", "tanh", "relu", "gelu"))
    g.add_argument("--head-layers", type=int, default=2, help="Linear layers in an MLP head (BaseReward: 2)")
    g.add_argument("--aux-head-kind", default="linear", choices=("mlp", "linear"), help="safety/attribute heads")
    g.add_argument("--safety-categories", default=None, help="add a safety head: 'all' or codes like S1,S10")
    g.add_argument("--attributes", default=None, help="add an attribute head: comma-separated names")
    g.add_argument("--lora", action="store_true", help="train LoRA adapters (merged into the saved weights)")
    g.add_argument("--lora-r", type=int, default=16)
    g.add_argument("--lora-alpha", type=int, default=32)
    g.add_argument("--lora-dropout", type=float, default=0.05)
    g.add_argument("--freeze-backbone", action="store_true", help="train the heads only")
    g.add_argument("--train-vision", action="store_true", help="unfreeze the vision tower (frozen by default)")


def _train_arguments(p: argparse.ArgumentParser, *, lm_weight: float, centering: float) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--output", required=True, help="checkpoint directory (rmserve format)")
    g.add_argument("--lr", type=float, default=1e-5)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup-ratio", type=float, default=0.03)
    g.add_argument("--batch-size", type=int, default=8, help="pairs per process per micro-step")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (pin it for reproducible runs)")
    g.add_argument("--reward-weight", type=float, default=1.0, help="BT loss weight (0: train other heads only)")
    g.add_argument("--centering", type=float, default=centering, help="weight of mean((r_c + r_r)^2)")
    g.add_argument("--no-margin", action="store_true", help="ignore the records' margins")
    g.add_argument("--lm-weight", type=float, default=lm_weight, help="LM loss weight")
    g.add_argument("--safety-weight", type=float, default=1.0, help="safety BCE weight (with a safety head)")
    g.add_argument("--attribute-weight", type=float, default=1.0, help="attribute MSE weight (with --attributes)")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--eval-every", type=int, default=0, help="0: evaluate at the end only")
    g.add_argument("--save-every", type=int, default=0, help="0: save at the end only")
    g.add_argument("--save-dtype", default="float32", choices=("float32", "bfloat16"))
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmserve-train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("bt", help="Bradley-Terry reward model (BaseReward)")
    _data_arguments(bt)
    _model_arguments(bt)
    _train_arguments(bt, lm_weight=0.0, centering=0.0)

    crit = sub.add_parser("critique", help="critique-then-score reward model (MM-RLHF)")
    _data_arguments(crit)
    _model_arguments(crit)
    _train_arguments(crit, lm_weight=1.0, centering=0.01)
    crit.add_argument("--template", default=None, help="evaluator prompt file with {question} and {response}")
    crit.add_argument("--max-new-tokens", type=int, default=256, help="critique length at serving time")
    crit.add_argument("--eval-generate", type=int, default=0, help="eval pairs scored with generated critiques")
    crit.add_argument("--prompt-bt-weight", type=float, default=0.0,
                      help="BT also on the reward read at the end of the evaluator turn (before the critique)")
    crit.add_argument("--lm-chosen-response", action="store_true",
                      help="LM loss also on the chosen response inside the evaluator turn (grounds a weak vision)")

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


def build_trainer(args):
    """The trainer a ``bt`` / ``critique`` command line describes (also used by tests and accelerate workers)."""
    import torch

    from .hazards import parse_categories
    from .modeling import HeadOptions, apply_lora, build_reward_model, set_trainable
    from .trainers import BTTrainer, CritiqueTrainer, TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
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
    config = TrainConfig(
        output_dir=args.output, lr=args.lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs, max_steps=args.max_steps,
        max_grad_norm=args.max_grad_norm, precision=args.precision, seed=args.seed, reward_weight=args.reward_weight,
        centering=args.centering, use_margin=not args.no_margin, lm_weight=args.lm_weight,
        lm_targets="both" if critique else "chosen", safety_weight=args.safety_weight,
        attribute_weight=args.attribute_weight, log_every=args.log_every, eval_every=args.eval_every,
        save_every=args.save_every, save_dtype=args.save_dtype, progress=not args.no_progress,
        skip_bad=args.skip_bad, num_workers=args.num_workers,
        lm_chosen_in_prompt=critique and args.lm_chosen_response,
        prompt_bt_weight=args.prompt_bt_weight if critique else 0.0,
    )
    train, evaluation = _read(args.train, args), _read(args.eval, args) if args.eval else None
    if not train:
        raise SystemExit("no training pairs left after reading the data")
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
    if trainer.accelerator.is_main_process:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
