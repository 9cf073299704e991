"""vLLM offline over all items: the ``LLM.encode`` ceiling of the vLLM comparison (bench/vllm_compare.py).

    python -m bench.vllm_offline JOB.json OUT.json

JOB: ``{"model_dir", "engine": {vLLM engine settings}, "workloads": {name: [token ids per item]},
"warmup": [token ids per item]}``. One ``LLM`` with the same engine settings as the served systems (the
same pooling runner, pooler, dtype, context length, prefix caching and eager mode as rmserve's vLLM
backend and the raw vLLM server), warmed up, then per workload: prefix cache reset, every item in one
``LLM.encode`` call (vLLM schedules them all: the best a caller can do with its whole input at hand).
rmserve's heads then turn the states into rewards (not timed) so the rewards can be compared.
OUT: ``{name: {"seconds", "responses", "rewards"}}``. A subprocess of its own: vLLM's CPU worker binds
its OpenMP threads per process, as in a server.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    job_path, out_path = argv
    with open(job_path) as f:
        job = json.load(f)
    import torch
    from vllm import LLM, PoolingParams
    from vllm.config import PoolerConfig

    from rmserve.models import load_reward_model
    from rmserve.models.vllm_backend import stage_checkpoint

    encoder = load_reward_model(job["model_dir"], weights=False)
    stage = stage_checkpoint(job["model_dir"])
    llm = LLM(stage, runner="pooling", convert="embed",
              pooler_config=PoolerConfig(seq_pooling_type="LAST", use_activation=False), **job["engine"])
    params = PoolingParams(use_activation=False)

    def encode(ids: list[list[int]]):
        prompts = [{"prompt_token_ids": x} for x in ids]
        return llm.encode(prompts, use_tqdm=False, pooling_task="embed", pooling_params=params)

    encode(job["warmup"])
    out = {}
    for name, ids in job["workloads"].items():
        llm.reset_prefix_cache()  # nothing carried over from the warm-up or the previous workload
        start = time.perf_counter()
        outputs = encode(ids)
        seconds = time.perf_counter() - start
        states = torch.stack([o.outputs.data.float().reshape(-1) for o in outputs])
        with torch.inference_mode():
            rewards = [o.reward for o in encoder.score_outputs(encoder.apply_heads(states))]
        out[name] = {"seconds": seconds, "responses": len(ids), "rewards": rewards}
        print(f"offline {name}: {len(ids)} items in {seconds:.1f} s", file=sys.stderr, flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)
    llm.llm_engine.engine_core.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
