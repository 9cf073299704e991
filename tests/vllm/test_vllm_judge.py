"""Generative judges on vLLM (rmserve/models/vllm_judge.py) against the transformers path (models/judge.py), on a
tiny text judge: greedy judgments are the same text, stop at the same token, and read the same answer
log-probabilities; seeded votes repeat."""

from __future__ import annotations

import pytest

from tests.vllm.conftest import TOLERANCE, assert_apart, record, skip_without_vllm

PAIRWISE = {"mode": "pairwise", "template": "Question: {prompt}\n[A] {response_a}\n[B] {response_b}\nWhich is better?",
            "answer_prefix": "Better:", "choices": ["A", "B"], "reasoning": False, "max_new_tokens": 12}
QUESTIONS = [("Name a colour.", "It is red.", "It is a dog."), ("What is 2 + 2?", "4", "It is five, I think."),
             ("Say hello.", "Hello!", "No.")]


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    skip_without_vllm()
    from rmserve.models import load_reward_model, save_reward_model
    from rmserve.models.tiny import build_tiny_judge
    from rmserve.models.vllm_backend import VllmSettings
    from rmserve.models.vllm_judge import load_vllm_judge

    path = str(tmp_path_factory.mktemp("vllm-judge") / "judge")
    save_reward_model(build_tiny_judge("qwen2", PAIRWISE, seed=1), path)
    vllm_judge = load_vllm_judge(path, VllmSettings(enforce_eager=True))
    try:
        yield load_reward_model(path), vllm_judge
    finally:
        vllm_judge.close()


def prompts(model, *, answer_prefix: bool, seed=None):
    from rmserve.models.judge_format import JudgeConfig, render_pairwise
    from rmserve.models.types import JudgePrompt, ScoreItem

    config = JudgeConfig.of(model.extra_config)
    decoding = model.judge_decoding()
    out = []
    for question, a, b in QUESTIONS:
        for first, second in ((a, b), (b, a)):  # both orders, as /v1/compare sends them
            ids, _, _ = model.encode_prompt(ScoreItem(response="", prompt=render_pairwise(config, question, first,
                                                                                       second)))
            ids = ids + list(decoding.prefix_ids) if answer_prefix else ids
            out.append(JudgePrompt(ids, seed=seed))
    return out


def test_answer_logprobs_without_reasoning_equal_the_transformers_ones(judges):
    hf, vm = judges
    decoding = hf.judge_decoding()
    want = hf.generate_judgments(prompts(hf, answer_prefix=True), decoding)
    got = vm.generate_judgments(prompts(hf, answer_prefix=True), decoding)
    # The log-odds A vs B (what the reward reads) differ between prompts: outputs in the wrong order would fail.
    assert_apart([j.choice_logprobs[0] - j.choice_logprobs[1] for j in want], "log-odds A:B per prompt")
    diff = max(abs(g - w) for gj, wj in zip(got, want, strict=True)
               for g, w in zip(gj.choice_logprobs, wj.choice_logprobs, strict=True))
    record("judge choice log-probabilities", diff)
    assert diff < TOLERANCE
    assert all(g.text == "" and g.completion_tokens == 0 for g in got)


def test_greedy_reasoning_writes_the_same_judgment_and_stops_at_the_same_token(judges):
    """The random judge never writes "Better:"; "faith" is a word it writes (greedy, seed 1) in three of the six
    judgments, at different lengths: there both backends must stop right after it (a token boundary) and read
    the answer; the others run to the budget and come back without probabilities (parsed later) on both."""
    import dataclasses

    hf, vm = judges
    decoding = dataclasses.replace(hf.judge_decoding(), reasoning=True, max_new_tokens=12)
    free = hf.generate_judgments(prompts(hf, answer_prefix=False), decoding)
    assert all(j.choice_logprobs is None and j.completion_tokens == 12 for j in free)
    got_free = vm.generate_judgments(prompts(hf, answer_prefix=False), decoding)
    assert [(j.text, j.completion_tokens) for j in got_free] == [(j.text, j.completion_tokens) for j in free]

    stopping = dataclasses.replace(decoding, answer_prefix="faith")
    want = hf.generate_judgments(prompts(hf, answer_prefix=False), stopping)
    got = vm.generate_judgments(prompts(hf, answer_prefix=False), stopping)
    found = [j.choice_logprobs is not None for j in want]
    assert 0 < sum(found) < len(found) and len({j.completion_tokens for j in want}) > 2, want
    for g, w in zip(got, want, strict=True):
        assert (g.text, g.completion_tokens) == (w.text, w.completion_tokens)
        assert (g.choice_logprobs is None) == (w.choice_logprobs is None)
        if w.choice_logprobs is not None:
            diff = max(abs(a - b) for a, b in zip(g.choice_logprobs, w.choice_logprobs, strict=True))
            record("judge choice log-probabilities after a judgment", diff)
            assert diff < TOLERANCE


def test_seeded_votes_repeat_and_differ_by_seed(judges):
    import dataclasses

    hf, vm = judges
    decoding = dataclasses.replace(hf.judge_decoding(), reasoning=True, max_new_tokens=8)
    first = vm.generate_judgments(prompts(hf, answer_prefix=False, seed=11), decoding)
    again = vm.generate_judgments(prompts(hf, answer_prefix=False, seed=11), decoding)
    other = vm.generate_judgments(prompts(hf, answer_prefix=False, seed=12), decoding)
    assert [j.text for j in first] == [j.text for j in again]
    assert [j.text for j in first] != [j.text for j in other]
