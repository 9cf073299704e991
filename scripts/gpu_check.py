"""GPU fidelity check (run on a CUDA machine): the CPU fidelity suite's claims, on the GPU.

For every family: a batch of 16 (mixed lengths and image sizes, left and right padding) vs each
item alone, shared-prefix + vision-cache scoring vs alone, and CUDA vs CPU, in fp32 and bf16.
Prints one table; exits non-zero if an fp32 difference exceeds 1e-4.

    python scripts/gpu_check.py [--device cuda] [--out gpu_check.json]

`scripts/gpu_run.sh` runs it together with `bench --preset gpu` on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from PIL import Image

from rmserve.models import ScoreItem
from rmserve.models.tiny import FAMILIES, build_tiny_reward_model

MULTIMODAL = {"qwen2_5_vl", "qwen2_vl", "llava_onevision"}


def random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def items_for(family: str) -> list[ScoreItem]:
    out = []
    for i in range(16):
        with_image = family in MULTIMODAL and i % 4 != 3
        images = [random_image(28 + 14 * (i % 5), 28 + 28 * (i % 3), seed=i)] if with_image else []
        out.append(ScoreItem(prompt="What colour is the shape? " * (i % 4 + 1),
                             response="The red circle" + " is to the left of the blue square" * (i % 5), images=images))
    out += [ScoreItem(prompt=out[0].prompt, images=out[0].images, response=f"Answer number {k}.") for k in range(4)]
    return out


def rewards(model, encoded) -> torch.Tensor:
    return torch.tensor([o.reward for o in model.score_batch(encoded)], dtype=torch.float64)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", help="also write the rows and the verdict as JSON here")
    args = ap.parse_args()
    rows, worst_fp32 = [], 0.0
    for dtype in ("float32", "bfloat16"):
        for family in FAMILIES:
            t0 = time.time()
            cpu = build_tiny_reward_model(family)
            encoded = [cpu.encode(it) for it in items_for(family)]
            cpu_alone = torch.cat([rewards(cpu, [e]) for e in encoded])
            gpu = build_tiny_reward_model(family).to_device(args.device, dtype)
            alone = torch.cat([rewards(gpu, [e]) for e in encoded])
            diffs = {}
            for side in ("left", "right"):
                gpu.padding_side = side
                diffs[f"batch16_{side}"] = (rewards(gpu, encoded) - alone).abs().max().item()
            gpu.padding_side = "right"
            gpu.share_prefix = True
            gpu.enable_vision_cache(1 << 26)
            diffs["shared+cache"] = (rewards(gpu, encoded) - alone).abs().max().item()
            diffs["gpu_vs_cpu"] = (alone - cpu_alone).abs().max().item()
            row = {"dtype": dtype, "family": family, **{k: round(v, 7) for k, v in diffs.items()},
                   "seconds": round(time.time() - t0, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if dtype == "float32":
                worst_fp32 = max(worst_fp32, *(v for k, v in diffs.items() if k != "gpu_vs_cpu"))
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    print(f"\nworst fp32 batch/padding/sharing difference on {name}: {worst_fp32:.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows,
                       "worst_fp32": worst_fp32, "pass": worst_fp32 <= 1e-4}, f, indent=1)
    return 0 if worst_fp32 <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
