"""Generative judges on vLLM (rmserve/models/vllm_judge.py behind ``load_vllm_reward_model``) against the
transformers path (models/judge.py), on tiny text judges: greedy judgments are the same text, stop at the same
token, and read the same answer log-probabilities; seeded votes repeat; served with ``--backend vllm``,
/v1/score, /v1/compare and /v1/rank answer as on the transformers backend."""

from __future__ import annotations

import pytest

from rmserve.models.tiny import TINY_JUDGE
from tests.vllm.conftest import TOLERANCE, assert_apart, record, skip_without_vllm

PAIRWISE = {"mode": "pairwise", "template": "Question: {prompt}\n[A] {response_a}\n[B] {response_b}\nWhich is better?",
            "answer_prefix": "Better:", "choices": ["A", "B"], "reasoning": False, "max_new_tokens": 12}
# The same tiny weights (seed 1) write "faith" (greedy) in the judgments of some of these responses and not in
# the others': as the answer prefix of a reasoning judge it makes those readable and the rest unparseable.
POINTWISE_REASONING = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 12, "answer_prefix": "faith"}
QUESTIONS = [("Name a colour.", "It is red.", "It is a dog."), ("What is 2 + 2?", "4", "It is five, I think."),
             ("Say hello.", "Hello!", "No.")]
SECTIONS = {"pairwise": PAIRWISE, "pointwise": TINY_JUDGE, "pointwise_reasoning": POINTWISE_REASONING}


@pytest.fixture(scope="module")
def judge_pairs(tmp_path_factory):
    """Per judge section: (the transformers model, the model ``rmserve serve --backend vllm`` loads), the same
    tiny weights saved once per section. Loaded on first use (one vLLM engine each, ~30 s here)."""
    skip_without_vllm()
    from rmserve.config import ServerConfig
    from rmserve.models import load_reward_model, save_reward_model
    from rmserve.models.tiny import build_tiny_judge
    from rmserve.server.loading import load_model_from_config

    loaded: dict = {}

    def load(key: str):
        if key not in loaded:
            path = str(tmp_path_factory.mktemp("vllm-judge") / key)
            save_reward_model(build_tiny_judge("qwen2", SECTIONS[key], seed=1), path)
            # the server's own factory, as `rmserve serve --backend vllm --vllm-enforce-eager` calls it
            loaded[key] = (load_reward_model(path), load_model_from_config(
                ServerConfig(model=path, backend="vllm", vllm_enforce_eager=True)))
        return loaded[key]

    try:
        yield load
    finally:
        for _, served in loaded.values():
            served.close()


@pytest.fixture(scope="module")
def judges(judge_pairs):
    return judge_pairs("pairwise")


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


# ---- served: `rmserve serve --backend vllm` on a judge checkpoint, the in-process app -----------------------

def _score(*pairs, **options) -> dict:
    return {"items": [{"prompt": q, "response": r} for q, r in pairs], "return_judgment": True, **options}


def _compare(question, a, b) -> dict:
    return {"prompt": question, "response_a": a, "response_b": b, "return_judgment": True}


# (path, body, the status both backends answer). pointwise_reasoning: the judge writes "faith" (POINTWISE_REASONING)
# for "It is red.", "It is a dog.", "Hello!" and "No.", not for "4": a 422 judge_unparseable.
SERVED = {
    "pointwise": [
        ("/v1/score", _score(*[(q, r) for q, a, b in QUESTIONS for r in (a, b)]), 200),
        *[("/v1/compare", _compare(*question), 200) for question in QUESTIONS],
        ("/v1/rank", {"prompt": QUESTIONS[0][0], "responses": ["It is red.", "It is a dog.", "Blue."]}, 200),
    ],
    "pointwise_reasoning": [
        ("/v1/score", _score((QUESTIONS[0][0], "It is red."), (QUESTIONS[0][0], "It is a dog."),
                             (QUESTIONS[2][0], "No.")), 200),
        ("/v1/compare", _compare(*QUESTIONS[0]), 200),
        ("/v1/score", _score((QUESTIONS[0][0], "It is red."), (QUESTIONS[1][0], "4")), 422),
        ("/v1/compare", _compare(*QUESTIONS[2]), 200),
        ("/v1/compare", _compare(*QUESTIONS[1]), 422),
    ],
    "pairwise": [
        *[("/v1/compare", _compare(*question), 200) for question in QUESTIONS],
        ("/v1/rank", {"prompt": QUESTIONS[1][0], "responses": ["4", "It is five, I think.", "Four."]}, 200),
    ],
}


def _rewards(path: str, body: dict) -> list[float]:
    if path == "/v1/score":
        return [item["reward"] for item in body["items"]]
    if path == "/v1/compare":
        return [body["prob_a_better"]]
    return [entry["reward"] for entry in body["ranking"]] if "reward" in body["ranking"][0] else []


@pytest.mark.asyncio
@pytest.mark.parametrize("key", list(SERVED))
async def test_served_judge_answers_as_on_the_transformers_backend(key, judge_pairs):
    from rmserve.config import ServerConfig
    from rmserve.server import create_app
    from tests.serving import asgi_client, wait_ready
    from tests.vllm.test_vllm_server import same

    hf, vm = judge_pairs(key)
    assert vm.info.device.startswith("vllm:") and vm.judge_decoding() == hf.judge_decoding()
    config = ServerConfig(max_wait_ms=2)
    worst = 0.0
    async with asgi_client(create_app(config, model=hf)) as want_client:
        async with asgi_client(create_app(config, model=vm)) as got_client:
            await wait_ready(got_client, timeout=120)
            for path, body, status in SERVED[key]:
                want, got = await want_client.post(path, json=body), await got_client.post(path, json=body)
                assert want.status_code == got.status_code == status, (path, want.text, got.text)
                if status != 200:  # the same unreadable judgment named on both
                    assert got.json()["error"]["code"] == want.json()["error"]["code"] == "judge_unparseable"
                    assert got.json()["error"]["param"] == want.json()["error"]["param"], (want.text, got.text)
                    continue
                if path == "/v1/score":  # a reward on the wrong item would fail (the random judge's scores are
                    rewards = _rewards(path, want.json())  # all near 2.94, but apart by more than TOLERANCE)
                    assert min(abs(a - b) for i, a in enumerate(rewards) for b in rewards[i + 1:]) > 2 * TOLERANCE
                if key == "pointwise_reasoning":  # the answer was read after a written judgment
                    judged = [j for item in want.json().get("items", [want.json()]) for j in item["judgments"]]
                    assert judged and all(j["text"] and j["source"] == "probabilities" for j in judged), want.text
                # every number within TOLERANCE (1e-5; issue 14 asks rewards within 1e-4), every text equal
                worst = max(worst, same(got.json(), want.json(), key, path))
    record(f"judge {key}: /v1/score, /v1/compare, /v1/rank through the API", worst)


@pytest.mark.asyncio
async def test_served_votes_repeat_with_their_seed(judge_pairs):
    from rmserve.config import ServerConfig
    from rmserve.server import create_app
    from tests.serving import asgi_client, wait_ready

    _, vm = judge_pairs("pointwise")
    body = _score(*[(q, a) for q, a, _ in QUESTIONS], voting={"k": 3, "seed": 5, "temperature": 1.0})
    async with asgi_client(create_app(ServerConfig(max_wait_ms=2), model=vm)) as client:
        await wait_ready(client, timeout=120)
        first = (await client.post("/v1/score", json=body)).json()
        again = (await client.post("/v1/score", json=body)).json()
        other = (await client.post("/v1/score", json={**body, "voting": {**body["voting"], "seed": 6}})).json()
    assert [len(item["judgments"]) for item in first["items"]] == [3, 3, 3], first
    assert first["items"] == again["items"]

    def answers(body):  # the sampled answer of each vote (the judge answers at once: no text to differ)
        return [j["answer"] for item in body["items"] for j in item["judgments"]]

    assert answers(first) != answers(other)
