"""`rmserve convert mm-rlhf SRC DST`: an MM-RLHF reward checkpoint -> an rmserve checkpoint.

MM-RLHF's reward model is LLaVA-OneVision in LLaVA-NeXT's ``llava_qwen`` layout (config
``model_type: llava_qwen``, a SigLIP tower, an ``mlp2x_gelu`` projector, anyres_max_9 tiling with
``spatial_unpad`` + ``image_newline``) plus a reward head ``rm_head.dense`` (H -> H), tanh,
``rm_head.out_proj`` (H -> 1). The output is HF ``LlavaOnevisionForConditionalGeneration`` with an
rmserve ``mlp`` reward head (width H, tanh, 2 layers) (docs/architecture.md, "Checkpoint format").

Key mapping (transformers 5.x names; the SigLIP tower is flat, no ``vision_model.``):

    model.embed_tokens / layers.N / norm              -> model.language_model.<same>
    lm_head.weight                                    -> lm_head.weight
    model.vision_tower.vision_tower.vision_model.X    -> model.vision_tower.X
    model.mm_projector.0 / .2                         -> model.multi_modal_projector.linear_1 / linear_2
    model.image_newline                               -> model.image_newline
    rm_head.dense / rm_head.out_proj                  -> heads.safetensors reward.layers.0 / reward.layers.1

LLaVA-NeXT drops SigLIP's last encoder layer and its pooling head when it builds the tower and
reads the last remaining layer, so the HF config gets ``num_hidden_layers`` = the layers present,
``vision_feature_layer=-1``, ``vision_feature_select_strategy="full"`` and ``vision_use_head=False``.
The tower's sizes come from the weights; its head count cannot, so it comes from the tower's name
(``mm_vision_tower``; so400m -> 16) or ``--vision-heads``. Weights are streamed shard by shard
(nothing is instantiated), so a 7B checkpoint converts in about its own size of memory per shard.

    rmserve convert mm-rlhf /ckpt/MM-RLHF-Reward-7B-llava-ov-qwen models/mm-rlhf-rm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AddedToken, AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)

from .checkpoint import CONFIG_NAME, FORMAT_VERSION, HEADS_NAME
from .heads import HeadSpec
from .processors import LlavaOnevisionImageOnlyProcessor, save_processor

# Original -> HF backbone key prefixes (regex, replacement); the first match wins.
BACKBONE_RULES = (
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
    (r"^lm_head\.", "lm_head."),
)
HEAD_KEYS = {
    "rm_head.dense.weight": "reward.layers.0.weight",
    "rm_head.dense.bias": "reward.layers.0.bias",
    "rm_head.out_proj.weight": "reward.layers.1.weight",
    "rm_head.out_proj.bias": "reward.layers.1.bias",
}
# Present in some checkpoints, unused by the model: rotary caches, SigLIP's pooling head, the (parameter-free
# or video-only) resampler.
DROPPED = (r"\.rotary_emb\.inv_freq$", r"^model\.vision_tower\.vision_tower\.vision_model\.head\.",
           r"^model\.vision_resampler\.")
# Qwen2 fields the llava_qwen config carries at its top level.
TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
               "tie_word_embeddings", "rope_theta", "rope_scaling", "rope_parameters", "use_sliding_window",
               "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id", "eos_token_id",
               "pad_token_id")
# SigLIP attention heads by tower name (the weights do not say; q/k/v are square).
KNOWN_TOWER_HEADS = {"so400m": 16, "siglip-large": 16, "siglip-base": 12}
SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]
DEFAULT_SYSTEM = "You are a helpful assistant."  # LLaVA's qwen_1_5 conversation template


class ConversionError(ValueError):
    """The source is not a checkpoint this converter understands; the message says what differs."""


def map_key(key: str) -> tuple[str, str] | None:
    """``("backbone" | "head", new_key)`` for a source key, None to drop it; ConversionError if unknown."""
    if key in HEAD_KEYS:
        return "head", HEAD_KEYS[key]
    if any(re.search(p, key) for p in DROPPED):
        return None
    for pattern, replacement in BACKBONE_RULES:
        if re.search(pattern, key):
            return "backbone", re.sub(pattern, replacement, key)
    raise ConversionError(f"unexpected key {key!r}: not part of the llava_qwen + rm_head layout")


# ---- source files --------------------------------------------------------------------------
def _weight_files(src: str) -> list[str]:
    names = sorted(os.listdir(src))
    files = [n for n in names if n.endswith(".safetensors")]
    if not files:
        files = [n for n in names if re.fullmatch(r"pytorch_model.*\.bin", n)]
    if not files:
        raise ConversionError(f"{src} has no *.safetensors or pytorch_model*.bin weight files")
    return [os.path.join(src, n) for n in files]


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _tensor_shapes(files: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in files:
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:
                for k in f.keys():  # noqa: SIM118
                    shapes[k] = tuple(f.get_slice(k).get_shape())
        else:
            shapes.update({k: tuple(v.shape) for k, v in _read_tensors(path).items()})
    return shapes


# ---- configs -------------------------------------------------------------------------------
def _check_source_config(cfg: dict) -> None:
    if cfg.get("model_type") not in ("llava_qwen", "llava"):
        raise ConversionError(f"config model_type is {cfg.get('model_type')!r}, expected 'llava_qwen'")
    projector = cfg.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise ConversionError(f"mm_projector_type {projector!r}: LLaVA-OneVision in HF has only mlp2x_gelu")
    merge = cfg.get("mm_patch_merge_type", "spatial_unpad")
    if "unpad" not in merge:
        raise ConversionError(f"mm_patch_merge_type {merge!r}: HF LLaVA-OneVision implements spatial_unpad only")
    aspect = cfg.get("image_aspect_ratio", "anyres_max_9")
    if not re.fullmatch(r"anyres_max_\d+", aspect):
        raise ConversionError(f"image_aspect_ratio {aspect!r}: HF LLaVA-OneVision needs anyres_max_<N>")
    if not cfg.get("image_grid_pinpoints"):
        raise ConversionError("config has no image_grid_pinpoints")


def vision_config_from_weights(shapes: dict[str, tuple[int, ...]], cfg: dict,
                               num_heads: int | None = None) -> dict:
    """SigLIP config from tensor shapes; the head count from ``num_heads``, the config or the tower's name."""
    prefix = "model.vision_tower.vision_tower.vision_model."
    patch = shapes.get(prefix + "embeddings.patch_embedding.weight")
    positions = shapes.get(prefix + "embeddings.position_embedding.weight")
    if patch is None or positions is None:
        raise ConversionError(f"no SigLIP tower under {prefix!r}")
    if prefix + "embeddings.class_embedding" in shapes:
        raise ConversionError("the vision tower is CLIP-like (class embedding); only SigLIP towers are supported")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    side = math.isqrt(positions[0])
    if side * side != positions[0]:
        raise ConversionError(f"position embedding has {positions[0]} rows, not a square grid")
    tower = str(cfg.get("mm_vision_tower", ""))
    heads = num_heads or cfg.get("vision_config", {}).get("num_attention_heads") or next(
        (n for name, n in KNOWN_TOWER_HEADS.items() if name in tower), None)
    if heads is None:
        raise ConversionError(f"cannot tell the vision tower's head count from {tower!r}; pass --vision-heads")
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": patch[0],
        "num_channels": patch[1],
        "patch_size": patch[-1],
        "image_size": side * patch[-1],
        "intermediate_size": shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": len(layers),  # LLaVA already removed the last layer; read the last one present
        "num_attention_heads": heads,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "vision_use_head": False,
    }


def chat_template(system_prompt: str | None = DEFAULT_SYSTEM) -> str:
    """ChatML as LLaVA's qwen_1_5 template writes it, with ``<image>\\n`` for each image part."""
    system = ""
    if system_prompt:
        system = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + system_prompt +
                  "<|im_end|>\n{% endif %}")
    return system + (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _prepare_tokenizer(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = tokenizer.get_vocab()
    new = [AddedToken(t, special=True, normalized=False) for t in ("<image>", "<video>") if t not in vocab]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    return tokenizer


# ---- conversion ----------------------------------------------------------------------------
def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Grow an embedding/lm_head matrix to ``rows`` rows; new rows are the mean row (HF's own choice)."""
    if t.shape[0] >= rows:
        return t
    return torch.cat([t, t.float().mean(0, keepdim=True).to(t.dtype).expand(rows - t.shape[0], -1)])


def convert_mm_rlhf(src: str, dst: str, *, dtype: str | None = None, tokenizer_path: str | None = None,
                    vision_heads: int | None = None, system_prompt: str | None = DEFAULT_SYSTEM,
                    name: str | None = None, overwrite: bool = False) -> dict:
    """Convert ``src`` (llava_qwen + rm_head) into an rmserve checkpoint at ``dst``; returns a summary."""
    with open(os.path.join(src, "config.json")) as f:
        src_cfg = json.load(f)
    _check_source_config(src_cfg)
    if os.path.exists(dst) and os.listdir(dst):
        if not overwrite:
            raise FileExistsError(f"{dst} exists and is not empty (pass --force to replace it)")
        shutil.rmtree(dst)
    files = _weight_files(src)
    shapes = _tensor_shapes(files)
    missing_head = sorted(set(HEAD_KEYS) - set(shapes))
    if missing_head:
        raise ConversionError(f"no reward head: missing {missing_head} (is this an MM-RLHF reward checkpoint?)")
    for key in shapes:
        map_key(key)  # fail on unknown keys before writing anything

    tokenizer = _prepare_tokenizer(tokenizer_path or src)
    text = {k: src_cfg[k] for k in TEXT_FIELDS if k in src_cfg}
    rows = shapes["model.embed_tokens.weight"][0]
    vocab = max(rows, len(tokenizer))  # a token added past the matrix grows it
    text.update(model_type="qwen2", vocab_size=vocab)
    vision = vision_config_from_weights(shapes, src_cfg, vision_heads)
    hidden = text["hidden_size"]
    config = LlavaOnevisionConfig(
        text_config=text, vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=src_cfg["image_grid_pinpoints"],
        vision_aspect_ratio=src_cfg.get("image_aspect_ratio", "anyres_max_9"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
        multimodal_projector_bias="model.mm_projector.0.bias" in shapes,
        tie_word_embeddings=bool(src_cfg.get("tie_word_embeddings", False)),
    )
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype or "")
    if dtype and torch_dtype is None:
        raise ValueError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")

    # Which keys the HF model expects, with shapes (built on the meta device: no memory).
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LlavaOnevisionForConditionalGeneration(config).state_dict().items()}

    os.makedirs(dst, exist_ok=True)
    weight_map, head_state, seen = {}, {}, set()
    out_names = ["model.safetensors"] if len(files) == 1 else [
        f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
    for path, out_name in zip(files, out_names, strict=True):
        shard = {}
        for key, tensor in _read_tensors(path).items():
            mapped = map_key(key)
            if mapped is None:
                continue
            kind, new_key = mapped
            if kind == "head":
                head_state[new_key] = tensor.float().contiguous()
                continue
            if new_key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
                tensor = _pad_rows(tensor, vocab)
            if new_key not in expected:
                raise ConversionError(f"{key} -> {new_key}: the HF model has no such parameter")
            if tuple(tensor.shape) != expected[new_key]:
                raise ConversionError(f"{key}: shape {tuple(tensor.shape)}, HF expects {expected[new_key]}")
            shard[new_key] = (tensor.to(torch_dtype) if torch_dtype else tensor).contiguous()
            weight_map[new_key] = out_name
            seen.add(new_key)
        if shard:
            save_file(shard, os.path.join(dst, out_name), metadata={"format": "pt"})
    missing = sorted(set(expected) - seen - ({"lm_head.weight"} if config.tie_word_embeddings else set()))
    if missing:
        raise ConversionError(f"the source lacks {len(missing)} parameters the HF model needs, e.g. {missing[:5]}")
    if len(set(weight_map.values())) > 1:
        with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    config.dtype = dtype or str(src_cfg.get("torch_dtype") or src_cfg.get("dtype") or "float32")
    config.save_pretrained(dst)

    template = chat_template(system_prompt)
    tokenizer.chat_template = template
    size = vision["image_size"]
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size}, crop_size={"height": size, "width": size},
        image_grid_pinpoints=src_cfg["image_grid_pinpoints"], do_pad=True,
        image_mean=SIGLIP_MEAN_STD, image_std=SIGLIP_MEAN_STD, resample=3)
    processor = LlavaOnevisionImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template,
        num_image_tokens=(size // vision["patch_size"]) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio=config.vision_aspect_ratio)
    save_processor(processor, dst)

    head = HeadSpec(kind="mlp", width=hidden, activation="tanh", layers=2)
    save_file(head_state, os.path.join(dst, HEADS_NAME))
    meta = {
        "format": FORMAT_VERSION,
        "backbone": "LlavaOnevisionForConditionalGeneration",
        "family": "llava_onevision",
        "name": name or os.path.basename(os.path.normpath(src)),
        "pooling": "last",
        "heads": {"reward": head.to_dict()},
        "normalize": {},
        "max_length": src_cfg.get("tokenizer_model_max_length") or None,
        "template": {"chat_template": template},
        "safety_categories": [],
        "untrained": False,
        "converted_from": {"format": "mm-rlhf (llava_qwen + rm_head)", "source": os.path.abspath(src),
                           "mm_vision_tower": src_cfg.get("mm_vision_tower")},
    }
    with open(os.path.join(dst, CONFIG_NAME), "w") as f:
        json.dump(meta, f, indent=2)
    return {"parameters": len(seen), "shards": len(set(weight_map.values())), "vocab_size": vocab,
            "added_tokens": vocab - rows, "vision": vision}


# ---- command (wired as `rmserve convert`) ----------------------------------------------------
FORMATS = ("mm-rlhf",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="source layout: mm-rlhf = LLaVA-OV llava_qwen + rm_head")
    parser.add_argument("src", help="source checkpoint directory")
    parser.add_argument("dst", help="output directory (an rmserve checkpoint)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="cast backbone weights (default: keep the source's)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory if SRC has none")
    parser.add_argument("--vision-heads", type=int, default=None,
                        help="SigLIP attention heads, if the tower name (mm_vision_tower) is not a known one")
    parser.add_argument("--system-prompt", default=DEFAULT_SYSTEM, help="default system turn ('' for none)")
    parser.add_argument("--name", default=None, help="model name (default: SRC's folder name)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty DST")


def run(args: argparse.Namespace) -> int:
    summary = convert_mm_rlhf(args.src, args.dst, dtype=args.dtype, tokenizer_path=args.tokenizer,
                              vision_heads=args.vision_heads, system_prompt=args.system_prompt or None,
                              name=args.name, overwrite=args.force)
    vision = summary["vision"]
    print(f"converted {args.src} -> {args.dst}: {summary['parameters']} tensors in {summary['shards']} shard(s), "
          f"vocab {summary['vocab_size']} (+{summary['added_tokens']}), "
          f"vision {vision['num_hidden_layers']} layers x {vision['hidden_size']}")
    return 0


__all__ = ["convert_mm_rlhf", "map_key", "vision_config_from_weights", "chat_template", "ConversionError",
           "add_arguments", "run"]
