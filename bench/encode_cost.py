"""CPU per ``model.encode`` (template, tokenizer, processor or its fast paths, positions), per workload.

    python -m bench.encode_cost [--preset full] [--workloads text,image,grpo] [--items 256] [--src DIR]

Encodes each workload's items in process, one thread, and reports ``time.thread_time`` per item (CPU of this
thread: a busy machine slows the wall clock, much less this). ``--src DIR`` imports ``rmserve`` from another
source tree (e.g. ``git archive REV | tar -x -C DIR``) to time the code before a change on the same machine;
the workloads and images are this tree's bench code either way. The prompt cache is on, as in ``rmserve
serve``, so a GRPO group's image is preprocessed once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    # No bench import before --src is applied: bench.run and bench.workloads import rmserve.
    parser = argparse.ArgumentParser(prog="python -m bench.encode_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="full", help="a bench.run preset (full, quick, tiny, ...)")
    parser.add_argument("--workloads", default="text,image,grpo", help="comma list of bench workloads")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--src", help="import rmserve from this source tree instead")
    args = parser.parse_args(argv)
    if args.src:  # before anything imports rmserve
        if "rmserve" in sys.modules:
            raise SystemExit("--src must be given before rmserve is imported (run as python -m bench.encode_cost)")
        sys.path.insert(0, os.path.abspath(args.src))

    import torch

    import rmserve
    from rmserve.models import load_reward_model
    from rmserve.models.types import ServingOptions

    from .ceiling import to_score_item
    from .model import MODELS, ensure_model
    from .run import PRESETS
    from .workloads import WorkloadFactory

    torch.set_num_threads(1)
    model = load_reward_model(ensure_model(MODELS[PRESETS[args.preset].model]))
    model.configure_serving(ServingOptions(share_prefix=True, prompt_cache_bytes=64 << 20))
    factory = WorkloadFactory(model.tokenizer)
    print(f"rmserve from {os.path.dirname(os.path.dirname(rmserve.__file__))}, preset {args.preset}, "
          f"{args.items} items per workload, one thread\n")
    print("| workload | encode CPU ms per item |\n|---|---:|")
    for name in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        items = [to_score_item(wire) for wire in factory.build(name, args.items, seed=1).items]
        for item in factory.build(name, 16, seed=99).items:  # warm-up on other prompts and images
            model.encode(to_score_item(item))
        start = time.thread_time()
        for item in items:
            model.encode(item)
        print(f"| {name} | {(time.thread_time() - start) * 1000 / len(items):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
