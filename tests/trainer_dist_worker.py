"""Run under `accelerate launch`: train with the bt CLI's wiring, then each rank writes a hash of its weights.

    accelerate launch --cpu --num_processes 2 ... tests/trainer_dist_worker.py OUT_DIR <rmserve-train bt args>
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch
from rmserve_trainer.cli import build_parser, build_trainer


def weights_sha256(trainer) -> str:
    state = trainer.accelerator.unwrap_model(trainer.module).state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    trainer = build_trainer(build_parser().parse_args(argv))
    seen: list[str] = []
    compute_loss = trainer.compute_loss

    def recording(pb):  # which pairs this rank trained on
        seen.extend(pb.ids)
        return compute_loss(pb)

    trainer.compute_loss = recording
    before = weights_sha256(trainer)  # equal hashes after fit() prove nothing if no step changed a weight
    trainer.fit()
    rank = trainer.accelerator.process_index
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"before": before, "sha256": weights_sha256(trainer), "world": trainer.accelerator.num_processes,
                   "steps": trainer.step, "seen": seen}, f)
    trainer.save_checkpoint()
    trainer.accelerator.end_training()  # as the CLI does: no rank exits with the process group alive


if __name__ == "__main__":
    main()
