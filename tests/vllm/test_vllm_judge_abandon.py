"""A judge batch nobody waits for any more, on vLLM (models/vllm_judge.py): once the engine's ``abandoned`` flag
fires, the batch's vLLM requests are aborted between engine steps (not stepped to ``max_new_tokens``), the vLLM
engine is left with nothing running, and a flag that never fires changes nothing."""

from __future__ import annotations

import dataclasses

from tests.vllm.conftest import skip_without_vllm
from tests.vllm.test_vllm_judge import PAIRWISE, prompts

BUDGET = 40  # the random pairwise judge never writes "Better:": every row would run its whole budget


def test_an_abandoned_judge_batch_is_aborted_between_engine_steps(tmp_path):
    skip_without_vllm()
    from rmserve.config import ServerConfig
    from rmserve.models import load_reward_model, save_reward_model
    from rmserve.models.tiny import build_tiny_judge
    from rmserve.server.loading import load_model_from_config

    path = str(tmp_path / "judge")
    save_reward_model(build_tiny_judge("qwen2", PAIRWISE, seed=1), path)
    hf = load_reward_model(path)
    vm = load_model_from_config(ServerConfig(model=path, backend="vllm", vllm_enforce_eager=True))
    try:
        engine = vm.judge.llm.llm_engine
        steps: list[int] = []
        step = engine.step

        def counted():
            steps.append(1)
            return step()

        engine.step = counted  # VllmJudge steps the engine it finds on its LLM
        decoding = dataclasses.replace(hf.judge_decoding(), reasoning=True, max_new_tokens=BUDGET)
        full = vm.generate_judgments(prompts(hf, answer_prefix=False), decoding)
        full_steps = len(steps)

        steps.clear()
        polls: list[int] = []
        cut = vm.generate_judgments(prompts(hf, answer_prefix=False), decoding,
                                    abandoned=lambda: polls.append(1) or len(polls) > 3)
        cut_steps = len(steps)
        left_running = engine.has_unfinished_requests()

        live = vm.generate_judgments(prompts(hf, answer_prefix=False), decoding, abandoned=lambda: False)
    finally:
        vm.close()
    assert all(j.completion_tokens == BUDGET for j in full) and full_steps >= BUDGET
    assert cut_steps <= 3 and len(cut) == len(full)  # aborted after the third step, not stepped to the budget
    assert not left_running  # the batch's requests were aborted in vLLM, not just left behind
    assert [(j.text, j.completion_tokens) for j in live] == [(j.text, j.completion_tokens) for j in full]
