"""Generative judges served through the pipeline (api/judge.py, models/judge.py) on tiny real models:
rewards equal an independent HF computation, batch = alone, both orders, voting, explicit parse errors."""

from __future__ import annotations

import base64
import io
import math
import time

import pytest
import torch
from PIL import Image

from rmserve.api import CompareRequest, RankRequest, ScoreRequest, ScoreService
from rmserve.errors import BackendError, DeadlineExceeded, InvalidInput
from rmserve.models.judge import compare_pairs, judge_cases
from rmserve.models.judge_format import JudgeConfig, UnparseableJudgment, render_pairwise, render_pointwise
from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge
from rmserve.models.types import JudgePrompt, ScoreItem
from tests.conftest import random_image, running_engine

PAIRWISE = {
    "mode": "pairwise",
    "template": "Question: {prompt}\n[A] {response_a}\n[B] {response_b}\nWhich is better?",
    "answer_prefix": "Better:",
    "choices": ["A", "B"],
    "reasoning": False,
    "max_new_tokens": 8,
}
RESPONSES = ["A red circle.", "A blue square.", "Two green triangles next to each other."]


@pytest.fixture(scope="module")
def pointwise():
    return build_tiny_judge("qwen2", TINY_JUDGE, seed=3)


@pytest.fixture(scope="module")
def pairwise():
    return build_tiny_judge("qwen2", PAIRWISE, seed=4)


def reference_reward(model, text: str, images=()) -> list[float]:
    """The choice distribution from the model's own HF forward: user turn + generation prompt + answer prefix,
    softmax over the vocabulary, restricted to the choice tokens and renormalised."""
    config = JudgeConfig.of(model.extra_config)
    tok = model.tokenizer
    ids, vision, _ = model.encode_prompt(ScoreItem(response="", prompt=text, images=list(images)))
    ids = ids + tok(config.answer_prefix, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model.backbone(input_ids=torch.tensor([ids])).logits[0, -1].float()
    probs = torch.softmax(logits, -1)[[tok.convert_tokens_to_ids(c) for c in config.choices]]
    return (probs / probs.sum()).tolist()


def url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def score_request(items, **options) -> ScoreRequest:
    return ScoreRequest(items=[{"prompt": p, "response": r} for p, r in items], **options)


async def test_pointwise_reward_is_the_expectation_from_the_models_own_forward(pointwise):
    config = JudgeConfig.of(pointwise.extra_config)
    with running_engine(pointwise, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        items = [("What is shown?", r) for r in RESPONSES]
        batched = (await service.score(score_request(items, return_judgment=True))).response
        alone = [(await service.score(score_request([it]))).response.items[0].reward for it in items]
    for (prompt, response), out, single in zip(items, batched.items, alone, strict=True):
        probs = reference_reward(pointwise, render_pointwise(config, prompt, response))
        expected = sum(p * v for p, v in zip(probs, config.values, strict=True))
        assert out.reward == pytest.approx(expected, abs=1e-4)
        assert out.reward == pytest.approx(single, abs=1e-4)  # batch vs alone
        [judgment] = out.judgments
        assert judgment.source == "probabilities" and judgment.text == "" and judgment.reward == out.reward
        assert judgment.answer == config.choices[max(range(5), key=lambda i: probs[i])]
    assert len({round(o.reward, 6) for o in batched.items}) == 3  # the responses are told apart
    assert batched.usage.items == 3


async def test_a_pairwise_judge_reports_both_orders_and_their_mean(pairwise):
    config = JudgeConfig.of(pairwise.extra_config)
    a, b = RESPONSES[0], RESPONSES[2]
    with running_engine(pairwise, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        out = await service.compare(CompareRequest(prompt="Shape?", response_a=a, response_b=b,
                                                   return_judgment=True))
        swapped = await service.compare(CompareRequest(prompt="Shape?", response_a=b, response_b=a))
    p_ab = reference_reward(pairwise, render_pairwise(config, "Shape?", a, b))[0]
    p_ba = reference_reward(pairwise, render_pairwise(config, "Shape?", b, a))[1]
    assert out.prob_a_better_ab == pytest.approx(p_ab, abs=1e-4)
    assert out.prob_a_better_ba == pytest.approx(p_ba, abs=1e-4)
    assert out.prob_a_better == pytest.approx((p_ab + p_ba) / 2, abs=1e-6)
    assert out.reward_a is None and out.margin is None and out.beta is None  # no per-response rewards
    assert swapped.prob_a_better == pytest.approx(1 - out.prob_a_better, abs=1e-6)  # order-swap consistency
    assert [j.about for j in out.judgments] == [[0, 1], [1, 0]]


async def test_a_position_biased_judge_shows_its_bias_in_the_separate_orders():
    judge = build_tiny_judge("qwen2", PAIRWISE, seed=4)
    head = judge.backbone.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[judge.tokenizer.convert_tokens_to_ids("A")] = 8.0  # "the first one", whatever it is
    judge.backbone.lm_head = biased
    with running_engine(judge, max_wait_ms=0) as engine:
        out = await ScoreService(engine).compare(CompareRequest(prompt="q", response_a="x", response_b="y"))
    assert out.prob_a_better_ab > 0.99 and out.prob_a_better_ba < 0.01  # a wins shown first, loses shown second
    assert out.prob_a_better == pytest.approx(0.5, abs=0.01)  # the mean cancels the bias


async def test_rank_with_a_pairwise_judge_is_the_mean_win_probability(pairwise):
    with running_engine(pairwise, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        ranked = await service.rank(RankRequest(prompt="Shape?", responses=RESPONSES, return_judgment=True))
        pairs = {}
        for i in range(3):
            for j in range(3):
                if i != j:
                    pairs[i, j] = (await service.compare(CompareRequest(
                        prompt="Shape?", response_a=RESPONSES[i], response_b=RESPONSES[j]))).prob_a_better
    rewards = {r.index: r.reward for r in ranked.ranking}
    for i in range(3):
        assert rewards[i] == pytest.approx(sum(pairs[i, j] for j in range(3) if j != i) / 2, abs=1e-4)
    assert len(ranked.judgments) == 6  # every pair, both orders
    assert [r.index for r in ranked.ranking] == sorted(range(3), key=lambda i: -rewards[i])


async def test_compare_and_rank_with_a_pointwise_judge_use_its_scores(pointwise):
    with running_engine(pointwise, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        scores = (await service.score(score_request([("Shape?", r) for r in RESPONSES]))).response.items
        compared = await service.compare(CompareRequest(prompt="Shape?", response_a=RESPONSES[0],
                                                        response_b=RESPONSES[1]))
        ranked = await service.rank(RankRequest(prompt="Shape?", responses=RESPONSES))
    assert compared.reward_a == pytest.approx(scores[0].reward, abs=1e-4)
    assert compared.prob_a_better == pytest.approx(1 / (1 + math.exp(-(compared.reward_a - compared.reward_b))))
    assert [r.reward for r in sorted(ranked.ranking, key=lambda r: r.index)] == pytest.approx(
        [s.reward for s in scores], abs=1e-4)


async def test_voting_is_deterministic_with_a_seed(pointwise):
    items = [("Describe it.", RESPONSES[0]), ("Describe it.", RESPONSES[1])]

    async def vote(service, seed, how="majority"):
        out = await service.score(score_request(items, return_judgment=True, voting={
            "k": 6, "seed": seed, "aggregate": how, "temperature": 5.0}))
        return [([j.answer for j in it.judgments], it.reward) for it in out.response.items]

    with running_engine(pointwise, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        first, again, other = await vote(service, 7), await vote(service, 7), await vote(service, 8)
        alone = await service.score(ScoreRequest(items=[{"prompt": items[1][0], "response": items[1][1]}],
                                                 voting={"k": 6, "seed": 7, "aggregate": "majority",
                                                         "temperature": 5.0}, return_judgment=True))
        greedy = (await service.score(score_request(items))).response.items
        mean = await vote(service, 7, "mean")
    assert first == again  # same seed, same votes, same reward
    assert [a for a, _ in first] != [a for a, _ in other]  # another seed draws other answers
    assert len(set(first[0][0])) > 1  # the k votes differ from each other
    assert [j.answer for j in alone.response.items[0].judgments] == first[1][0]  # independent of neighbours
    for answers, reward in first:  # majority: the most frequent answer's value (ties: their mean)
        counts = {a: answers.count(a) for a in answers}
        tied = [int(a) for a, n in counts.items() if n == max(counts.values())]
        assert reward == pytest.approx(sum(tied) / len(tied))
    # without reasoning every vote reads the same answer position: the mean is the greedy expectation
    assert [r for _, r in mean] == pytest.approx([g.reward for g in greedy], abs=1e-4)


def test_sampled_judgment_text_is_seeded_per_row():
    judge = build_tiny_judge("qwen2", {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 6}, seed=5)
    decoding = judge.judge_decoding()
    config = JudgeConfig.of(judge.extra_config)

    def prompt(response, seed):
        text = render_pointwise(config, "Describe it.", response)
        ids, vision, _ = judge.encode_prompt(ScoreItem(response="", prompt=text))
        return JudgePrompt(ids, vision, seed=seed)

    batch = judge.generate_judgments([prompt(RESPONSES[0], 1), prompt(RESPONSES[2], 1), prompt(RESPONSES[0], 2),
                                      prompt(RESPONSES[0], None)], decoding)
    alone = judge.generate_judgments([prompt(RESPONSES[2], 1)], decoding)[0]
    again = judge.generate_judgments([prompt(RESPONSES[0], 1)], decoding)[0]
    assert alone.text == batch[1].text and again.text == batch[0].text  # seeded per row, not per batch
    assert batch[0].text != batch[2].text  # another seed, other text
    assert all(j.completion_tokens == 6 and j.choice_logprobs is None for j in batch)  # never wrote "Score:"


async def test_unparseable_output_is_an_explicit_item_error():
    # A reasoning judge whose random text never writes "Score:" or a pattern match: no reward, a 422 on the item.
    section = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 4, "answer_pattern": None}
    judge = build_tiny_judge("qwen2", section, seed=6)
    with running_engine(judge, max_wait_ms=0) as engine:
        with pytest.raises(InvalidInput) as info:
            await ScoreService(engine).score(score_request([("q", "r"), ("q2", "r2")]))
    assert info.value.code == "judge_unparseable" and info.value.param == "items.0"


async def test_judge_requests_are_checked(pointwise, pairwise):
    with running_engine(pairwise, max_wait_ms=0) as engine:
        with pytest.raises(InvalidInput) as info:
            await ScoreService(engine).score(score_request([("q", "r")]))
        assert info.value.code == "pairwise_judge" and info.value.param == "model"
    with running_engine(pointwise, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        with pytest.raises(InvalidInput) as info:
            await service.score(score_request([("q", "r")], voting={"k": 9}))
        assert info.value.code == "too_many_votes" and info.value.param == "voting.k"
        with pytest.raises(InvalidInput) as info:
            await service.score(ScoreRequest(items=[{"prompt": "q", "response": "r", "images": []}],
                                             **{"return": ["safety"]}))
        assert info.value.code == "unsupported_output"


async def test_scalar_models_refuse_judge_options(tiny_models):
    with running_engine(tiny_models("qwen2"), max_wait_ms=0) as engine:
        with pytest.raises(InvalidInput) as info:
            await ScoreService(engine).score(score_request([("q", "r")], return_judgment=True))
    assert info.value.code == "not_a_judge" and info.value.param == "return_judgment"


async def test_a_vision_judge_reads_the_image_in_its_user_turn():
    judge = build_tiny_judge("qwen2_5_vl", TINY_JUDGE, seed=2)
    config = JudgeConfig.of(judge.extra_config)
    red, noise = random_image(56, 56, seed=1), random_image(56, 56, seed=2)
    with running_engine(judge, max_wait_ms=0) as engine:
        service = ScoreService(engine)
        out = await service.score(ScoreRequest(items=[
            {"prompt": "What is shown?", "response": "A circle.", "images": [url(im)]} for im in (red, noise)]))
    rewards = [it.reward for it in out.response.items]
    assert rewards[0] != pytest.approx(rewards[1], abs=1e-6)  # the image matters
    text = render_pointwise(config, "What is shown?", "A circle.")
    decoded = Image.open(io.BytesIO(base64.b64decode(url(red).split(",")[1]))).convert("RGB")  # as the server has it
    item = ScoreItem(response="", prompt=text, images=[decoded])
    ids, vision, _ = judge.encode_prompt(item)
    ids = ids + judge.tokenizer(config.answer_prefix, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = judge.backbone(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"],
                                mm_token_type_ids=(input_ids == judge.backbone.config.image_token_id).int()
                                ).logits[0, -1]
    probs = torch.softmax(logits.float(), -1)[[judge.tokenizer.convert_tokens_to_ids(c) for c in config.choices]]
    probs = probs / probs.sum()
    assert rewards[0] == pytest.approx(sum(p * v for p, v in zip(probs.tolist(), config.values, strict=True)),
                                       abs=1e-4)


def test_a_reasoning_judge_reads_the_answer_right_after_its_judgment():
    """The tiny judge's own greedy text gives an answer prefix it is sure to write (its first three tokens): the
    reward must equal the choice distribution of the model's forward over prompt + those tokens."""
    section = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 8}
    probe = build_tiny_judge("qwen2", section, seed=5)
    config = JudgeConfig.of(probe.extra_config)
    text = render_pointwise(config, "Describe it.", RESPONSES[0])
    ids, _, _ = probe.encode_prompt(ScoreItem(response="", prompt=text))
    tok = probe.tokenizer
    with torch.no_grad():
        generated = probe.backbone.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                                            do_sample=False, max_new_tokens=3, pad_token_id=tok.pad_token_id)
    new = generated[0, len(ids):].tolist()
    prefix = probe.decode_text(new)
    assert prefix.strip() and len(new) == 3
    judge = build_tiny_judge("qwen2", {**section, "answer_prefix": prefix}, seed=5)  # the same weights
    decoding = judge.judge_decoding()
    other = render_pointwise(config, "Describe it in more words, please.", RESPONSES[2])
    prompts = [JudgePrompt(judge.encode_prompt(ScoreItem(response="", prompt=t))[0]) for t in (other, text)]
    batch = judge.generate_judgments(prompts, decoding)
    alone = judge.generate_judgments(prompts[1:], decoding)[0]
    with torch.no_grad():
        logits = judge.backbone(input_ids=torch.tensor([ids + new])).logits[0, -1].float()
    reference = torch.log_softmax(logits, -1)[[tok.convert_tokens_to_ids(c) for c in config.choices]].tolist()
    assert batch[1].text == prefix.strip() and batch[1].completion_tokens == 3
    assert batch[1].choice_logprobs == pytest.approx(reference, abs=1e-4)
    assert alone.choice_logprobs == pytest.approx(reference, abs=1e-4) and alone.text == batch[1].text
    first = judge.generate_judgments(prompts[:1], decoding)[0]  # the other row stops on its own terms
    assert (batch[0].text, batch[0].completion_tokens, batch[0].choice_logprobs is None) == (
        first.text, first.completion_tokens, first.choice_logprobs is None)


async def test_a_failing_judgment_fails_only_its_item(pointwise, monkeypatch):
    calls = []
    original = pointwise.generate_judgments

    def flaky(prompts, decoding, **options):
        calls.append(len(prompts))
        if any("BOOM" in pointwise.decode_text(p.prompt_ids) for p in prompts):
            raise RuntimeError("simulated device error")
        return original(prompts, decoding, **options)

    with running_engine(pointwise, max_wait_ms=0) as engine:
        monkeypatch.setattr(pointwise, "generate_judgments", flaky)
        service = ScoreService(engine)
        with pytest.raises(BackendError) as info:
            await service.score(score_request([("q", "fine"), ("q", "BOOM"), ("q", "also fine")]))
        assert info.value.code == "forward_failed" and info.value.param == "items.1"
        assert calls[0] == 3 and 1 in calls  # bisected down to the failing judgment
        assert (await service.score(score_request([("q", "fine")]))).response.items[0].reward > 0
        with pytest.raises(DeadlineExceeded):
            await service.score(score_request([("q", "late")]), deadline=time.monotonic() - 1)


async def test_the_in_process_scorer_gives_the_servers_rewards(pointwise, pairwise):
    """``rmserve-train eval`` calls judge_cases / compare_pairs: the same numbers as the server's endpoints."""
    conversation = ScoreItem(response="", prompt="Shape?")
    with running_engine(pairwise, max_wait_ms=0) as engine:
        served = await ScoreService(engine).compare(CompareRequest(prompt="Shape?", response_a=RESPONSES[0],
                                                                   response_b=RESPONSES[1]))
    [offline] = compare_pairs(pairwise, [(conversation, RESPONSES[0], RESPONSES[1])])
    assert (offline.prob_a_better, offline.p_ab, offline.p_ba) == pytest.approx(
        (served.prob_a_better, served.prob_a_better_ab, served.prob_a_better_ba), abs=1e-6)
    voting = {"k": 3, "seed": 2, "aggregate": "majority", "temperature": 4.0}
    with running_engine(pointwise, max_wait_ms=0) as engine:
        scored = await ScoreService(engine).score(score_request([("Shape?", r) for r in RESPONSES], voting=voting))
    offline = judge_cases(pointwise, [(conversation, (r,)) for r in RESPONSES], votes=3, seed=2, temperature=4.0,
                          how="majority")
    assert offline == pytest.approx([it.reward for it in scored.response.items], abs=1e-6)
    [pointwise_pair] = compare_pairs(pointwise, [(conversation, RESPONSES[0], RESPONSES[1])])
    assert pointwise_pair.reward_a is not None and pointwise_pair.p_ab is None


def test_the_in_process_scorer_reports_unreadable_judgments_in_place():
    section = {**TINY_JUDGE, "reasoning": True, "max_new_tokens": 3, "answer_pattern": None}
    judge = build_tiny_judge("qwen2", section, seed=6)
    [result] = judge_cases(judge, [(ScoreItem(response="", prompt="q"), ("r",))])
    assert isinstance(result, UnparseableJudgment) and result.code == "judge_unparseable"
