"""Checkpoint I/O (docs/architecture.md, "Checkpoint format").

A checkpoint is a directory: the backbone's HF ``save_pretrained`` files and its
tokenizer/processor files, ``rmserve.json`` (format, backbone architecture, pooling, head
specs, normalisation, template, safety categories) and ``heads.safetensors`` (head weights).
A plain HF ``*ForSequenceClassification`` directory (no ``rmserve.json``) loads as it is.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
)

from .families import detect_family
from .heads import HeadSpec
from .judge_format import JudgeConfigError
from .processors import load_processor, save_processor
from .reward_model import DTYPES, RewardModel

FORMAT_VERSION = 1
CONFIG_NAME = "rmserve.json"
HEADS_NAME = "heads.safetensors"


def save_reward_model(model: RewardModel, path: str, *, state_dict: dict | None = None) -> None:
    """Write ``model`` as a checkpoint directory.

    ``state_dict``: weights to write instead of the model's own, keyed like ``model.state_dict()``
    (``backbone.*``, ``heads.*``): e.g. gathered from FSDP shards, with LoRA merged, or cast to bf16
    (heads are always stored in float32).
    """
    os.makedirs(path, exist_ok=True)
    if state_dict is None:
        model.backbone.save_pretrained(path)
        heads_state = model.heads.state_dict()
    else:
        model.backbone.save_pretrained(path, state_dict=_sub_state(state_dict, "backbone."))
        heads_state = _sub_state(state_dict, "heads.")
    save_processor(model.processor, path)
    meta = {
        "format": FORMAT_VERSION,
        "backbone": (model.backbone.config.architectures or [type(model.backbone).__name__])[0],
        "family": model.family_name,
        "name": model.name,
        "pooling": "last",
        "heads": {name: spec.to_dict() for name, spec in model.head_specs.items()},
        "normalize": model.normalize,
        "max_length": model.max_length,
        "template": {"chat_template": getattr(model.tokenizer, "chat_template", None)},
        "safety_categories": model.head_specs["safety"].labels if "safety" in model.head_specs else [],
        "untrained": model.untrained,
        **model.extra_config,
    }
    with open(os.path.join(path, CONFIG_NAME), "w") as f:
        json.dump(meta, f, indent=2)
    state = {k: v.detach().float().contiguous().cpu() for k, v in heads_state.items()}
    save_file(state, os.path.join(path, HEADS_NAME))


def _sub_state(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_backbone(path: str, *, dtype: str = "float32"):
    """``(backbone, processor, family)`` from a plain HF model directory (the start of a training run)."""
    config = AutoConfig.from_pretrained(path)
    family = detect_family(config)
    return _load_backbone(path, family, DTYPES[dtype]), load_processor(path, config.model_type), family


def _load_backbone(path: str, family: str, torch_dtype, *, weights: bool = True):
    if family in ("qwen2_vl", "qwen2_5_vl", "llava_onevision"):
        auto = AutoModelForImageTextToText
    elif family == "seq_cls":
        auto = AutoModelForSequenceClassification
    else:
        auto = AutoModelForCausalLM
    if not weights:  # the architecture on the meta device: configs and shapes, no memory, nothing read
        with torch.device("meta"):
            return auto.from_config(AutoConfig.from_pretrained(path))
    return auto.from_pretrained(path, dtype=torch_dtype)


def load_reward_model(path: str, *, device: str = "cpu", dtype: str = "float32", weights: bool = True) -> RewardModel:
    """Load an rmserve checkpoint, or an HF sequence-classification reward model as it is.

    ``weights=False`` reads no backbone weights: the backbone is a skeleton on the meta device, the heads
    are loaded. Such a model encodes exactly like the full one (tokenizer, processor, template, length
    policy) and its heads work, but it cannot run a forward: the vLLM backend's encoder
    (``rmserve.models.vllm_backend``), where vLLM owns the backbone. (A plain HF sequence classifier's
    score layer is part of the backbone: its skeleton's reward head is left uninitialised.)
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist")
    torch_dtype = DTYPES[dtype]
    meta_path = os.path.join(path, CONFIG_NAME)
    config = AutoConfig.from_pretrained(path)
    if not os.path.exists(meta_path):
        if detect_family(config) != "seq_cls":
            raise ValueError(f"{path} has no {CONFIG_NAME} and is not a *ForSequenceClassification model; "
                             "convert it with `rmserve convert` or train one with rmserve-train")
        backbone = _load_backbone(path, "seq_cls", torch_dtype, weights=weights).eval()
        tokenizer = load_processor(path, config.model_type)
        name = os.path.basename(os.path.normpath(path))
        rm = RewardModel.from_sequence_classifier(backbone, tokenizer, name=name, path=path)
        return rm.to_device(device, dtype).eval() if weights else rm.eval()
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: unsupported format {meta.get('format')!r} (expected {FORMAT_VERSION})")
    if meta.get("pooling", "last") != "last":
        raise ValueError(f"{meta_path}: unsupported pooling {meta['pooling']!r}")
    family = meta.get("family") or detect_family(config)
    backbone = _load_backbone(path, family, torch_dtype, weights=weights).eval()
    processor = load_processor(path, config.model_type)
    heads = {name: HeadSpec.from_dict(spec) for name, spec in meta["heads"].items()}
    known = {"format", "backbone", "family", "name", "pooling", "heads", "normalize", "max_length", "template",
             "safety_categories", "untrained"}
    rm = RewardModel(backbone, processor, heads, family=family, name=meta.get("name") or os.path.basename(path),
                     normalize=meta.get("normalize"), max_length=meta.get("max_length"), path=path,
                     untrained=bool(meta.get("untrained", False)),
                     extra_config={k: v for k, v in meta.items() if k not in known})
    state = load_file(os.path.join(path, HEADS_NAME))
    rm.heads.load_state_dict(state)
    _check_judge(rm, meta_path)
    return rm.to_device(device, dtype).eval() if weights else rm.eval()


def _check_judge(rm: RewardModel, meta_path: str) -> None:
    """A ``judge`` section must work with this checkpoint: fields, single-token choices, an LM head."""
    if "judge" not in rm.extra_config:
        return
    try:
        decoding = rm.judge_decoding()
    except JudgeConfigError as exc:
        raise ValueError(f"{meta_path}: {exc}") from None
    if decoding is None:
        raise ValueError(f"{meta_path}: a judge checkpoint needs a backbone that can generate (saved with its "
                         f"language-model head), but {rm.backbone.config.architectures} has none")


__all__ = ["save_reward_model", "load_reward_model", "load_backbone"]
