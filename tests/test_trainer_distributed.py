"""Two CPU processes under `accelerate launch` (gloo DDP) train on different data and end with identical weights,
which moved from where both started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from rmserve_trainer.data.synthetic import generate_demo_pairs, write_pairs_jsonl

from rmserve.models import load_reward_model

WORKER = os.path.join(os.path.dirname(__file__), "trainer_dist_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_ranks_end_identical(tmp_path):
    data = write_pairs_jsonl(generate_demo_pairs(16, seed=4, image_size=56), str(tmp_path / "data"))
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    # `--cpu --num_processes 2` starts ONE process (accelerate's multi-CPU path wants mpirun). --multi_gpu
    # picks the torchrun launcher, and ACCELERATE_USE_CPU=1 makes each rank run MULTI_CPU over gloo.
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           WORKER, str(tmp_path),
           "bt", "--tiny", "qwen2_5_vl", "--train", data, "--output", str(tmp_path / "model"), "--lr", "1e-3",
           "--batch-size", "2", "--grad-accum", "2", "--max-steps", "3", "--no-progress", "--head-width", "16"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f"rank{i}.json")) for i in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["before"] == ranks[1]["before"]  # both ranks start from the same weights
    assert all(r["steps"] == 3 and r["sha256"] != r["before"] for r in ranks)  # 3 optimizer steps moved them
    assert ranks[0]["sha256"] == ranks[1]["sha256"]  # gradients were all-reduced every step
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 12  # 3 steps x 2 micro-batches x 2 pairs
    assert set(ranks[0]["seen"]) != set(ranks[1]["seen"])  # each rank trained on its own shard
    assert load_reward_model(str(tmp_path / "model")).info.name == "tiny-qwen2_5_vl"
