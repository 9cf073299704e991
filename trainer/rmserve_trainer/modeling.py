"""Building the model to train: where it starts from, which heads, which weights train, LoRA in and out.

    --tiny FAMILY | --model HF_DIR | --model RMSERVE_CKPT  -> RewardModel with the requested heads
    freeze the vision tower (default) / LoRA on the language model's linear layers (optional)
    TrainModule: one forward -> head outputs (+ LM loss on labelled tokens), what accelerate wraps
    merge_lora: LoRA weights folded into the base weights, so checkpoints are plain rmserve ones
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from rmserve.models import HeadSpec, RewardModel, load_reward_model
from rmserve.models.checkpoint import CONFIG_NAME, load_backbone
from rmserve.models.heads import Head
from rmserve.models.pooling import pool_last
from rmserve.models.tiny import build_tiny_backbone

from .losses import lm_cross_entropy

# Linear layers LoRA adapts: attention and MLP projections of the language model (never the vision tower).
LORA_TARGETS = (r"^(?!.*(visual|vision_tower|vision_model))"
                r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")


@dataclass
class HeadOptions:
    """Head shapes from the command line. Safety/attribute heads exist only when given labels."""

    kind: str = "mlp"  # reward head: BaseReward found a 2-layer MLP with SiLU best
    width: int | None = None  # None -> the backbone's hidden size
    activation: str = "silu"
    layers: int = 2
    aux_kind: str = "linear"  # safety and attribute heads
    safety_labels: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()

    def specs(self) -> dict[str, HeadSpec]:
        specs = {"reward": HeadSpec(kind=self.kind, width=self.width, activation=self.activation, layers=self.layers)}
        aux = {"kind": self.aux_kind, "width": self.width, "activation": self.activation, "layers": self.layers}
        if self.safety_labels:
            specs["safety"] = HeadSpec(labels=list(self.safety_labels), **aux)
        if self.attribute_names:
            specs["attributes"] = HeadSpec(labels=list(self.attribute_names), **aux)
        return specs


def build_reward_model(*, model: str | None = None, tiny: str | None = None, heads: HeadOptions, seed: int = 0,
                       dtype: str = "float32", name: str | None = None, tiny_kwargs: dict | None = None,
                       ) -> RewardModel:
    """The starting point of a run. An rmserve checkpoint keeps its heads; heads it lacks are added fresh."""
    if (model is None) == (tiny is None):
        raise ValueError("give exactly one of --model (a directory) or --tiny FAMILY")
    specs = heads.specs()
    if tiny is not None:
        backbone, processor = build_tiny_backbone(tiny, seed=seed, **(tiny_kwargs or {}))
        torch.manual_seed(seed + 1)
        rm = RewardModel.from_backbone(backbone, processor, heads=specs, name=name or f"tiny-{tiny}")
    elif os.path.exists(os.path.join(model, CONFIG_NAME)):
        rm = load_reward_model(model, dtype=dtype)
        torch.manual_seed(seed + 1)
        for role, spec in specs.items():
            if role not in rm.head_specs:
                rm.head_specs[role] = spec
                rm.heads[role] = Head(spec, rm.hidden_size).float()
            elif role != "reward" and list(rm.head_specs[role].labels) != list(spec.labels):
                raise ValueError(f"{model} has a {role!r} head over {rm.head_specs[role].labels}, "
                                 f"not the requested {list(spec.labels)}")
    else:
        backbone, processor, family = load_backbone(model, dtype=dtype)
        torch.manual_seed(seed + 1)
        rm = RewardModel.from_backbone(backbone, processor, heads=specs, family=family,
                                       name=name or os.path.basename(os.path.normpath(model)))
    rm.untrained = False
    if name:
        rm.name = name
    return rm


def build_judge_model(*, model: str | None = None, tiny: str | None = None, judge: dict, seed: int = 0,
                      dtype: str = "float32", name: str | None = None, tiny_kwargs: dict | None = None,
                      ) -> RewardModel:
    """A generative judge to fine-tune: a backbone that can generate, no heads, the ``judge`` section.

    From ``--tiny``, an HF causal LM / VLM directory, or an rmserve checkpoint (a judge to continue, or a
    scalar / critique model whose backbone becomes the judge; its heads are dropped).
    """
    if (model is None) == (tiny is None):
        raise ValueError("give exactly one of --model (a directory) or --tiny FAMILY")
    max_length = None
    if tiny is not None:
        backbone, processor = build_tiny_backbone(tiny, seed=seed, **(tiny_kwargs or {}))
        family, default_name = None, f"tiny-judge-{tiny}"
    elif os.path.exists(os.path.join(model, CONFIG_NAME)):
        start = load_reward_model(model, dtype=dtype)
        backbone, processor, family, max_length = start.backbone, start.processor, start.family_name, start.max_length
        default_name = start.name
    else:
        backbone, processor, family = load_backbone(model, dtype=dtype)
        default_name = os.path.basename(os.path.normpath(model))
    rm = RewardModel.from_backbone(backbone, processor, heads={}, family=family, name=name or default_name,
                                   max_length=max_length, extra_config={"judge": dict(judge)})
    if rm.judge_decoding() is None:  # also checks the section against this tokenizer (single-token choices)
        raise ValueError(f"{model or tiny}: a judge needs a backbone that can generate (with its LM head)")
    return rm


def vision_modules(rm: RewardModel) -> list[nn.Module]:
    """The vision encoder: Qwen-VL's ``visual`` without its patch merger, LLaVA's ``vision_tower``.

    The projectors into the language model (Qwen's merger, LLaVA's multi_modal_projector) are not
    in the list: they train with the language model.
    """
    base = rm.base_model()
    visual = getattr(base, "visual", None)
    if visual is not None:
        return [m for name, m in visual.named_children() if name != "merger"]
    tower = getattr(base, "vision_tower", None)
    return [tower] if tower is not None else []


def set_trainable(rm: RewardModel, *, train_vision: bool = False, train_backbone: bool = True,
                  train_lm_head: bool = False) -> None:
    """Full fine-tuning (``train_backbone``) or heads only; vision tower frozen unless ``train_vision``.

    The LM head only trains for objectives with an LM loss (critique); a tied LM head shares the
    input embeddings, which follow ``train_backbone``.
    """
    rm.backbone.requires_grad_(train_backbone)
    lm_head = rm.backbone.get_output_embeddings()
    tied = lm_head is not None and lm_head.weight is rm.backbone.get_input_embeddings().weight
    if lm_head is not None and not tied:
        lm_head.requires_grad_(train_lm_head)
    for module in vision_modules(rm):
        module.requires_grad_(train_vision)
    rm.heads.requires_grad_(True)


def apply_lora(rm: RewardModel, *, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               train_vision: bool = False, train_lm_head: bool = False) -> float:
    """Inject LoRA adapters in place (``rm.backbone`` stays the HF model); returns the merge scaling alpha/r.

    Everything else in the backbone is frozen, except the vision tower with ``train_vision`` and the
    LM head with ``train_lm_head``; heads always train.
    """
    from peft import LoraConfig, LoraModel

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS)
    LoraModel(rm.backbone, config, "default")  # replaces the targeted Linear layers inside rm.backbone
    for module in vision_modules(rm):
        module.requires_grad_(train_vision)
    lm_head = rm.backbone.get_output_embeddings()
    if train_lm_head and lm_head is not None:
        lm_head.requires_grad_(True)
    rm.heads.requires_grad_(True)
    return alpha / r


_LORA_KEY = re.compile(r"^(?P<module>.*)\.lora_(?P<ab>[AB])\.[^.]+\.weight$")


def merge_lora(state_dict: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Fold LoRA into plain weights: ``W + (B @ A) * scaling`` and ``x.base_layer.y`` -> ``x.y``.

    Works on a gathered full state dict, so it does not care whether the model was wrapped by
    DDP, FSDP or DeepSpeed. Without LoRA keys the dict comes back unchanged.
    """
    lora: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _LORA_KEY.match(key)
        if m:
            lora.setdefault(m["module"], {})[m["ab"]] = value
        else:
            out[key.replace(".base_layer.", ".")] = value
    for module, ab in lora.items():
        key = f"{module}.weight"
        base = out[key]
        out[key] = (base.float() + (ab["B"].float() @ ab["A"].float()) * scaling).to(base.dtype)
    return out


class TrainModule(nn.Module):
    """What the accelerator wraps: one forward over a (2B, L) pair batch.

    Returns the head outputs and, given ``lm_labels``, the LM cross-entropy on the labelled tokens,
    from the same final hidden states (one backbone pass for every objective).
    """

    def __init__(self, rm: RewardModel):
        super().__init__()
        self.rm = rm
        # FSDP's TRANSFORMER_BASED_WRAP reads this from the module it is given (decoder layers, vision blocks).
        self._no_split_modules = getattr(rm.backbone, "_no_split_modules", None)

    def forward(self, batch, lm_labels: torch.Tensor | None = None, paired_images: bool = False,
                reward_at: torch.Tensor | None = None, heads: bool = True,
                lm_at: torch.Tensor | None = None, lm_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``paired_images``: rows [N/2, N) carry the same images as rows [0, N/2) (the two responses of
        each pair), so the vision tower runs on the first half only (Qwen-VL; the output is identical).
        ``reward_at``: (N,) positions where the reward head also reads the hidden state ("reward_at" out).
        ``heads=False``: no head outputs (a generative judge has none). ``lm_at``: (N,) positions whose
        next-token logits come back as "lm_logits_at" (N, V) (a judge's answer position). ``lm_weights``:
        (N, L) per-target weights of the LM loss (``losses.lm_cross_entropy``)."""
        rm = self.rm
        base = rm.base_model()
        inputs = dict(batch.model_inputs)
        if paired_images:
            inputs = _share_pair_images(base, inputs)
        out = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **inputs)
        hidden = out.last_hidden_state  # (N, L, H)
        result = rm.apply_heads(pool_last(hidden, batch.attention_mask)) if heads else {}
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if lm_labels is not None:
            result["lm_loss"] = lm_cross_entropy(hidden, lm_labels, rm.backbone.get_output_embeddings(), lm_weights)
        if reward_at is not None:
            result["reward_at"] = rm.heads["reward"](hidden[rows, reward_at])[:, 0]  # (N,)
        if lm_at is not None:
            result["lm_logits_at"] = rm.backbone.get_output_embeddings()(hidden[rows, lm_at])  # (N, V)
        return result


def _share_pair_images(base, inputs: dict) -> dict:
    grid = inputs.get("image_grid_thw")
    if grid is None or not hasattr(base, "get_image_features") or grid.shape[0] % 2:
        return inputs
    half = grid.shape[0] // 2
    if not torch.equal(grid[:half], grid[half:]):
        return inputs
    patches = int(grid[:half].prod(-1).sum())
    pixels = inputs.pop("pixel_values")
    features = base.get_image_features(pixels[:patches], grid[:half], return_dict=True)
    features.pooler_output = tuple(features.pooler_output) * 2  # (images of the chosen rows) x 2
    inputs["mm_encoder_outputs"] = {"image": features}
    return inputs
