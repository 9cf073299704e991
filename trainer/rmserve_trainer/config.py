"""``TrainConfig``: one training run's settings. Torch-free, so ``rmserve-train --help`` and the flag tests
build the command line (trainer/rmserve_trainer/flags.py derives it from these fields) without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The subcommands that train heads; ``judge`` (a generative judge: no heads, LM loss only) takes none of their flags.
HEADS = ("bt", "critique")


def _opt(default: Any, help: str, **cli) -> Any:
    """A TrainConfig field and its ``rmserve-train`` flag (trainer/rmserve_trainer/flags.py reads ``cli``):
    ``flag`` renames it (None: not a flag), ``choices``, ``commands`` (the subcommands that take it)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """One training run. Every field is also a ``rmserve-train bt | critique | judge`` flag (``--lr`` for ``lr``):
    the flags, their defaults and their help come from here."""

    output_dir: str = field(metadata={"help": "checkpoint directory (rmserve format)", "flag": "--output"})
    # full fine-tuning of a 2-8B backbone; tiny models from scratch want ~1e-3
    lr: float = _opt(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    warmup_ratio: float = _opt(0.03, "share of the optimizer steps in linear warmup (then cosine to 0)")
    batch_size: int = _opt(8, "pairs per process per micro-step")  # 2x sequences
    grad_accum: int = _opt(1, "gradient accumulation steps")
    epochs: float = _opt(1.0, "passes over the training pairs")
    max_steps: int | None = _opt(None, "optimizer steps (overrides --epochs)")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0: no clipping)")
    precision: str = _opt("fp32", "fp32, or bf16 autocast (master weights stay fp32)", choices=("fp32", "bf16"))
    seed: int = _opt(0, "seed of the weights, the data order and dropout")
    reward_weight: float = _opt(1.0, "BT loss weight (0: train other heads only)", commands=HEADS)
    centering: float = _opt(0.0, "weight of mean((r_c + r_r)^2)", commands=HEADS)  # MM-RLHF uses 0.01
    # True: the records' margins are subtracted inside the BT sigmoid
    use_margin: bool = _opt(True, "ignore the records' margins", flag="--no-margin", commands=HEADS)
    lm_weight: float = _opt(0.0, "LM loss weight", commands=HEADS)
    # which responses the LM loss reads: chosen | both (set by the subcommand: critique reads both)
    lm_targets: str = _opt("chosen", "", flag=None)
    lm_chosen_in_prompt: bool = _opt(
        False, "LM loss also on the chosen response inside the evaluator turn (grounds a weak vision)",
        flag="--lm-chosen-response", commands=("critique",))
    prompt_bt_weight: float = _opt(
        0.0, "BT also on the reward read at the end of the evaluator turn (before the critique)",
        commands=("critique",))
    verdict_weight: float = _opt(
        1.0, "LM weight of the verdict token (the first token where a pair's two reference critiques differ)",
        commands=("critique",))
    # 0 here (library callers opt in); rmserve-train defaults both to 1 (cli.COMMAND_DEFAULTS), since there a
    # safety/attribute head exists only when --safety-categories/--attributes asked for one.
    safety_weight: float = _opt(0.0, "safety BCE weight (with a safety head)", commands=HEADS)
    attribute_weight: float = _opt(0.0, "attribute MSE weight (with --attributes)", commands=HEADS)
    log_every: int = _opt(10, "optimizer steps between train/* metrics")
    eval_every: int = _opt(0, "optimizer steps between evaluations (0: evaluate at the end only)")
    save_every: int = _opt(0, "optimizer steps between checkpoints (0: save at the end only)")
    save_dtype: str = _opt("float32", "dtype of the saved backbone (heads stay fp32)",
                           choices=("float32", "bfloat16"))
    progress: bool = _opt(True, "no progress bar")
    # at reading and at batch time: records that fail to encode are dropped and counted
    skip_bad: bool = _opt(False, "skip bad records (counted and reported) instead of failing")
    # encoding off the training thread; batch-time skips then go uncounted
    num_workers: int = _opt(0, "DataLoader worker processes")

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.save_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"save dtype must be float32 or bfloat16, got {self.save_dtype!r}")
        if self.grad_accum < 1 or self.batch_size < 1:
            raise ValueError("batch size and gradient accumulation steps must be >= 1")
