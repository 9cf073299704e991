"""The training loop every reward-model trainer shares: accelerate, AdamW + cosine, logging, checkpoints.

A trainer subclass only says how a preference pair becomes two sequences (``make_collator``) and
what it stores with the checkpoint (``checkpoint_extra``); the loss is one weighted sum:

    loss = w_reward * (BT(r_c, r_r, margin) + centering * mean((r_c + r_r)^2))
         + w_lm * CE(LM targets) + w_safety * BCE(safety) + w_attr * MSE(attributes)
         [+ w_prompt_bt * BT(reward read at the end of the prompt)]   (critique: before the critique)

Runs as a plain process or under ``accelerate launch`` (DDP, FSDP, DeepSpeed; see trainer/configs/).
Metrics: ``train/*`` every ``log_every`` optimizer steps, ``eval/*`` every ``eval_every`` and at the
end, printed and appended to ``<output_dir>/metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict

import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from rmserve.models import RewardModel, save_reward_model

from .. import losses
from ..config import TrainConfig
from ..data import PairBatch, PairCollator
from ..metrics import auroc
from ..modeling import TrainModule, merge_lora
from ..records import PairRecord


def make_accelerator(config: TrainConfig):
    """The run's Accelerator. Reads ``accelerate launch`` settings (processes, FSDP/DeepSpeed) from the env."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        # A second run in one process (tests, notebooks) may use another precision; accelerate keeps
        # one global state and would refuse. Under a launcher there is one run per process.
        AcceleratorState._reset_state()
        GradientState._reset_state()
    return Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision="bf16" if config.precision == "bf16" else "no",
        # Each process reads its own share of a stream: batches are PairBatch objects, which the
        # dispatcher (rank 0 reads, then broadcasts tensors) cannot split.
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False),
        # Heads without labels in a batch, or a frozen-in-part tower, leave parameters without grads.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


class PairTrainer:
    """Base trainer: ``fit``, ``evaluate``, ``save_checkpoint``. Subclasses set ``make_collator``."""

    name = "pairs"

    def __init__(self, model: RewardModel, config: TrainConfig, train: list[PairRecord] | IterableDataset,
                 eval_records: list[PairRecord] | None = None, *, lora_scaling: float | None = None,
                 accelerator=None):
        from accelerate.utils import set_seed
        from transformers import get_cosine_schedule_with_warmup

        self.config = config
        self.model = model
        self.lora_scaling = lora_scaling  # set when the backbone carries LoRA adapters (merged at save time)
        self.accelerator = accelerator or make_accelerator(config)
        set_seed(config.seed)
        self.collator = self.make_collator()
        if isinstance(train, IterableDataset):  # a stream (e.g. fresh synthetic pairs): no epochs, no shuffle
            if not config.max_steps:
                raise ValueError("training on a stream needs max_steps")
            train_loader = DataLoader(train, batch_size=config.batch_size, collate_fn=self.collator,
                                      num_workers=config.num_workers)
        else:
            generator = torch.Generator().manual_seed(config.seed)
            train_loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, generator=generator,
                                      collate_fn=self.collator, num_workers=config.num_workers)
        eval_loader = (DataLoader(eval_records, batch_size=config.batch_size, collate_fn=self.collator,
                                  num_workers=config.num_workers) if eval_records else None)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        module = TrainModule(model)
        module, self.optimizer, self.train_loader = self.accelerator.prepare(module, optimizer, train_loader)
        self.module = module
        self.eval_loader = self.accelerator.prepare(eval_loader) if eval_loader is not None else None
        if config.max_steps:
            self.total_steps = config.max_steps
        else:
            self.total_steps = max(1, math.ceil(len(self.train_loader) / config.grad_accum * config.epochs))
        # Not prepared: accelerate would step it once per process per optimizer step.
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(config.warmup_ratio * self.total_steps), self.total_steps)
        self.step = 0
        self.log_path = os.path.join(config.output_dir, "metrics.jsonl")
        if self.accelerator.is_main_process:
            os.makedirs(config.output_dir, exist_ok=True)

    # ---- what a subclass decides --------------------------------------------------------------------
    def make_collator(self) -> PairCollator:
        raise NotImplementedError

    def checkpoint_extra(self) -> dict:
        """Sections added to the checkpoint's rmserve.json (``RewardModel.extra_config``)."""
        return {}

    def _collator_kwargs(self) -> dict:
        specs = self.model.head_specs
        return {
            "safety_labels": tuple(specs["safety"].labels) if "safety" in specs and self.config.safety_weight else (),
            "attribute_names": (tuple(specs["attributes"].labels)
                                if "attributes" in specs and self.config.attribute_weight else ()),
            "lm_targets": self.config.lm_targets if self.config.lm_weight else "none",
            "skip_bad": self.config.skip_bad,
            "lm_chosen_in_prompt": self.config.lm_chosen_in_prompt and bool(self.config.lm_weight),
            "verdict_weight": self.config.verdict_weight,
        }

    # ---- the loss ----------------------------------------------------------------------------------
    def compute_loss(self, pb: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        out = self.module(pb.batch, lm_labels=pb.lm_labels, paired_images=True, lm_weights=pb.lm_weights,
                          reward_at=pb.prompt_end if cfg.prompt_bt_weight else None)
        chosen, rejected = pb.chosen(out["reward"]), pb.rejected(out["reward"])  # (B,), (B,)
        bt = losses.bradley_terry(chosen, rejected, pb.margin if cfg.use_margin else None)
        loss = cfg.reward_weight * bt
        metrics = {"bt": bt.item(), "acc": (chosen > rejected).float().mean().item()}
        if cfg.centering:
            center = losses.reward_centering(chosen, rejected)
            loss = loss + cfg.reward_weight * cfg.centering * center
            metrics["center"] = center.item()
        if cfg.prompt_bt_weight:
            before = losses.bradley_terry(pb.chosen(out["reward_at"]), pb.rejected(out["reward_at"]))
            loss = loss + cfg.prompt_bt_weight * before
            metrics["bt_prompt"] = before.item()
            metrics["acc_prompt"] = (pb.chosen(out["reward_at"]) > pb.rejected(out["reward_at"])).float().mean().item()
        if pb.lm_labels is not None:
            loss = loss + cfg.lm_weight * out["lm_loss"]
            metrics["lm"] = out["lm_loss"].item()
        if pb.safety is not None:
            bce = losses.safety_bce(out["safety"], pb.safety, pb.safety_mask)
            loss = loss + cfg.safety_weight * bce
            metrics["safety"] = bce.item()
        if pb.attributes is not None:
            mse = losses.attribute_mse(out["attributes"], pb.attributes, pb.attributes_mask)
            loss = loss + cfg.attribute_weight * mse
            metrics["attributes"] = mse.item()
        metrics["loss"] = loss.item()
        return loss, metrics

    # ---- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train for ``total_steps`` optimizer steps; returns the last train and eval metrics."""
        acc, cfg = self.accelerator, self.config
        self.module.train()
        bar = tqdm(total=self.total_steps, desc=f"{self.name}", disable=not (cfg.progress and acc.is_main_process),
                   dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        t0 = time.perf_counter()
        while self.step < self.total_steps:
            for pb in self.train_loader:
                with acc.accumulate(self.module):
                    loss, metrics = self.compute_loss(pb)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                for k, v in metrics.items():
                    window.setdefault(k, []).append(v)
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    last = {f"train/{k}": v for k, v in self._mean_across_processes(window).items()}
                    last.update({"train/lr": self.scheduler.get_last_lr()[0],
                                 "train/seconds": round(time.perf_counter() - t0, 1)})
                    bar.set_postfix(loss=f"{last['train/loss']:.4f}", acc=f"{last['train/acc']:.3f}")
                    self.log(last)
                    window = {}
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
                    self.log(self.evaluate())
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint(os.path.join(cfg.output_dir, f"checkpoint-{self.step}"))
                if self.step >= self.total_steps:
                    break
        bar.close()
        final = dict(last)
        if self.eval_loader is not None:
            evaluation = self.evaluate()
            self.log(evaluation)
            final.update(evaluation)
        if self.collator.skipped:
            self.log({"data/skipped_at_batch_time": self.collator.skipped})
        return final

    def _mean_across_processes(self, window: dict[str, list[float]]) -> dict[str, float]:
        names = sorted(window)
        local = torch.tensor([sum(window[k]) / len(window[k]) for k in names], device=self.accelerator.device)
        mean = self.accelerator.reduce(local, reduction="mean")
        return dict(zip(names, mean.tolist(), strict=True))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Pairwise accuracy (strict), BT loss, and when labelled: safety AUROC/BCE, attribute MSE, LM loss."""
        if self.eval_loader is None:
            return {}
        acc = self.accelerator
        was_training = self.module.training
        self.module.eval()
        chosen, rejected, margin, lm, safety, attr = [], [], [], [], [], []
        for pb in self.eval_loader:
            out = self.module(pb.batch, lm_labels=pb.lm_labels, paired_images=True)
            # Everything gathered is per pair (first dim B) so gather_for_metrics can drop padding duplicates.
            chosen.append(acc.gather_for_metrics(pb.chosen(out["reward"])))
            rejected.append(acc.gather_for_metrics(pb.rejected(out["reward"])))
            margin.append(acc.gather_for_metrics(pb.margin))
            if pb.lm_labels is not None:
                lm.append(acc.gather(out["lm_loss"].reshape(1)))
            if pb.safety is not None:
                prob = torch.sigmoid(out["safety"]).max(-1).values  # (2B,) P(unsafe) = the likeliest hazard
                label = pb.safety.max(-1).values  # (2B,)
                per_pair = torch.stack([pb.chosen(prob), pb.rejected(prob), pb.chosen(label), pb.rejected(label),
                                        pb.chosen(pb.safety_mask), pb.rejected(pb.safety_mask)], dim=1)  # (B, 6)
                safety.append(acc.gather_for_metrics(per_pair))
            if pb.attributes is not None:
                err = (out["attributes"] - pb.attributes) ** 2 * pb.attributes_mask  # (2B, K)
                given = pb.attributes_mask
                per_pair = torch.stack([pb.chosen(err).sum(-1) + pb.rejected(err).sum(-1),
                                        pb.chosen(given).sum(-1) + pb.rejected(given).sum(-1)], dim=1)  # (B, 2)
                attr.append(acc.gather_for_metrics(per_pair))
        chosen, rejected, margin = torch.cat(chosen), torch.cat(rejected), torch.cat(margin)
        result = {
            "eval/acc": (chosen > rejected).float().mean().item(),
            "eval/loss": losses.bradley_terry(chosen, rejected, margin if self.config.use_margin else None).item(),
            "eval/reward_mean": torch.cat([chosen, rejected]).mean().item(),
            "eval/pairs": len(chosen),
        }
        if lm:
            result["eval/lm"] = torch.cat(lm).mean().item()
        if safety:
            s = torch.cat(safety)
            probs, labels, mask = s[:, 0:2].flatten(), s[:, 2:4].flatten(), s[:, 4:6].flatten().bool()
            result["eval/safety_auroc"] = auroc(probs[mask].tolist(), labels[mask].tolist())
        if attr:
            a = torch.cat(attr).sum(0)
            result["eval/attributes_mse"] = (a[0] / a[1].clamp(min=1)).item()
        if was_training:
            self.module.train()
        return result

    # ---- output ------------------------------------------------------------------------------------
    def log(self, metrics: dict) -> None:
        if not metrics or not self.accelerator.is_main_process:
            return
        row = {"step": self.step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}}
        tqdm.write(" ".join(f"{k}={v}" for k, v in row.items()))
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save_checkpoint(self, path: str | None = None) -> str:
        """Write an rmserve checkpoint (LoRA merged, backbone in ``save_dtype``); every process must call it."""
        acc = self.accelerator
        path = path or self.config.output_dir
        acc.wait_for_everyone()
        state = acc.get_state_dict(self.module)  # full weights on the main process, whatever the sharding
        if acc.is_main_process:
            state = {k.removeprefix("rm."): v for k, v in state.items()}
            if self.lora_scaling is not None:
                state = merge_lora(state, self.lora_scaling)
            save_dtype = getattr(torch, self.config.save_dtype)
            state = {k: v.to(save_dtype) if k.startswith("backbone.") and v.is_floating_point() else v
                     for k, v in state.items()}
            self.model.extra_config.update(self.checkpoint_extra())
            save_reward_model(self.model, path, state_dict=state)
            with open(os.path.join(path, "trainer_state.json"), "w") as f:
                json.dump({"trainer": self.name, "step": self.step, "config": asdict(self.config)}, f, indent=2)
        acc.wait_for_everyone()
        return path
