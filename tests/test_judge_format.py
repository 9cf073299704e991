"""The judge section, prompts, parsing and reward definitions (rmserve/models/judge_format.py): torch-free,
shared by the server and the trainer's eval."""

from __future__ import annotations

import math

import pytest

from rmserve.models.judge_format import (
    JudgeConfig,
    JudgeConfigError,
    UnparseableJudgment,
    aggregate,
    assistant_text,
    choice_probabilities,
    choice_token_ids,
    conversation_text,
    ends_with_answer_prefix,
    pair_probability,
    parse_judgment,
    read_judgment,
    render_pairwise,
    render_pointwise,
    reward_from_probabilities,
)
from rmserve.models.types import Judgment

POINTWISE = {
    "mode": "pointwise",
    "template": "Question: {prompt}\nResponse: {response}\nRate it from 1 to 10.",
    "answer_prefix": "Score:",
    "choices": [str(i) for i in range(1, 11)],
    "values": list(range(1, 11)),
    "reasoning": True,
    "max_new_tokens": 64,
    "answer_pattern": r"(\d+)\s*/\s*10",
}
PAIRWISE = {
    "mode": "pairwise",
    "template": "Question: {prompt}\n[A] {response_a}\n[B] {response_b}\nWhich is better?",
    "answer_prefix": "Better:",
    "choices": ["A", "B"],
    "reasoning": False,
    "answer_pattern": r"\[\[([AB])\]\]",
}


def point() -> JudgeConfig:
    return JudgeConfig.from_dict(POINTWISE)


def pair() -> JudgeConfig:
    return JudgeConfig.from_dict(PAIRWISE)


def test_round_trip_through_the_checkpoint_dict():
    for section in (POINTWISE, PAIRWISE):
        config = JudgeConfig.from_dict(section)
        assert JudgeConfig.from_dict(config.to_dict()) == config
        assert config.to_dict() == {**{"reasoning": False, "max_new_tokens": 256, "answer_pattern": None}, **section}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mode": "listwise"}, "judge.mode"),
        ({"template": "Rate {prompt}"}, "{response}"),
        ({"template": "{prompt} {response} {response_a}"}, "other mode"),
        ({"answer_prefix": "  "}, "judge.answer_prefix"),
        ({"choices": ["1", "1"], "values": [1, 1]}, "judge.choices"),
        ({"values": [1, 2]}, "judge.values"),
        ({"values": None}, "judge.values"),
        ({"values": [math.nan] * 10}, "finite"),
        ({"max_new_tokens": 0}, "judge.max_new_tokens"),
        ({"answer_pattern": "(\\d+"}, "judge.answer_pattern"),
        ({"answer_pattern": "\\d+"}, "exactly one group"),
        ({"temperature": 0.7}, "unknown fields"),
    ],
)
def test_a_broken_pointwise_section_names_its_field(change, field):
    with pytest.raises(JudgeConfigError, match=field.replace("{", r"\{").replace("}", r"\}")):
        JudgeConfig.from_dict({**POINTWISE, **change})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"choices": ["A", "B", "C"]}, "two"),
        ({"values": [1, 0]}, "judge.values is for pointwise"),
        ({"template": "{prompt} {response}"}, r"\{response_a\}"),
    ],
)
def test_a_broken_pairwise_section_names_its_field(change, field):
    with pytest.raises(JudgeConfigError, match=field):
        JudgeConfig.from_dict({**PAIRWISE, **change})


def test_a_missing_field_is_named():
    section = dict(PAIRWISE)
    del section["answer_prefix"]
    with pytest.raises(JudgeConfigError, match="answer_prefix"):
        JudgeConfig.from_dict(section)


class _Tokenizer:
    """Single characters and "10" are single tokens; anything longer splits per character."""

    def __call__(self, text, add_special_tokens=False):
        if text == "10":
            return {"input_ids": [1000]}  # not hash(): str hashes change per process, and 2 of 10 could collide
        if len(text) == 1:
            return {"input_ids": [ord(text)]}
        return {"input_ids": [ord(c) for c in text]}


def test_choices_must_be_single_tokens():
    assert len(choice_token_ids(point(), _Tokenizer())) == 10
    with pytest.raises(JudgeConfigError, match="'100' is 3 tokens"):
        choice_token_ids(JudgeConfig.from_dict({**POINTWISE, "choices": ["1", "100"], "values": [1, 100]}),
                         _Tokenizer())


def test_templates_fill_fields_once_and_literally():
    text = render_pointwise(point(), "What is {response}?", "A {prompt} circle")
    assert text == "Question: What is {response}?\nResponse: A {prompt} circle\nRate it from 1 to 10."
    assert "[A] first\n[B] second" in render_pairwise(pair(), "q", "first", "second")
    assert "[A] second\n[B] first" in render_pairwise(pair(), "q", "second", "first")
    with pytest.raises(ValueError):
        render_pointwise(pair(), "q", "r")


def test_conversation_text_flattens_turns_and_marks_media():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Shape?"}]}]
    assert conversation_text(None, messages) == "System: Be brief.\nUser: [image]Shape?"
    assert conversation_text("plain", None) == "plain"


def test_assistant_text_puts_the_answer_token_apart():
    assert assistant_text(point(), "7", "Accurate and clear.  ") == ("Accurate and clear.\nScore:", "7")
    assert assistant_text(pair(), "B", "ignored without reasoning") == ("Better:", "B")
    with pytest.raises(ValueError):
        assistant_text(pair(), "C")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Clear and correct. Score: 8", "8"),
        ("Score:10", "10"),  # longest choice first: 10, not 1
        ("Score: 1.", "1"),
        ("Score: 7/10 because", "7"),
        ("First Score: 3 then Score: 9", "3"),  # the first answer position counts (where generation stops)
        ("no prefix, but 6 / 10 overall", "6"),  # answer_pattern
        ("it is 2/10 and later 5/10", "5"),  # the pattern's last match
        ("Score: great, 4/10", "4"),  # the prefix has no choice after it: the pattern still reads one
    ],
)
def test_parse_pointwise_formats(text, answer):
    assert parse_judgment(point(), text) == point().choices.index(answer)


@pytest.mark.parametrize(
    ("text", "answer"),
    [("Better: A", 0), ("Better:B", 1), ("reasoning... [[B]]", 1), ("Better: [[A]]", 0)],
)
def test_parse_pairwise_formats(text, answer):
    assert parse_judgment(pair(), text) == answer


@pytest.mark.parametrize(
    "text",
    ["", "I cannot decide.", "Score: 11", "Score: ten", "Score: 12/10", "Better: Ab", "Better: C", "[[C]]"],
)
def test_malformed_output_is_an_explicit_error(text):
    config = pair() if "Better" in text or "[[" in text else point()
    assert parse_judgment(config, text) is None
    with pytest.raises(UnparseableJudgment) as info:
        read_judgment(config, Judgment(text=text, choice_logprobs=None))
    assert info.value.code == "judge_unparseable" and info.value.http_status == 422


def test_rewards_from_probabilities():
    probs = choice_probabilities([math.log(0.2), math.log(0.6)])
    assert probs == pytest.approx([0.25, 0.75])
    assert reward_from_probabilities(pair(), [0.3, 0.1]) == pytest.approx(0.75)
    uniform = choice_probabilities([-5.0] * 10)
    assert reward_from_probabilities(point(), uniform) == pytest.approx(5.5)
    peaked = [-50.0] * 10
    peaked[7] = 0.0
    assert reward_from_probabilities(point(), choice_probabilities(peaked)) == pytest.approx(8.0, abs=1e-6)
    with pytest.raises(ValueError):
        choice_probabilities([0.0, math.nan])


def test_read_judgment_prefers_probabilities_and_falls_back_to_the_text():
    verdict = read_judgment(pair(), Judgment(text="", choice_logprobs=[math.log(0.1), math.log(0.3)]))
    assert verdict.source == "probabilities" and verdict.reward == pytest.approx(0.25) and verdict.answer == 1
    parsed = read_judgment(point(), Judgment(text="fine, 9/10", choice_logprobs=None, completion_tokens=5))
    assert parsed.source == "parsed" and parsed.reward == 9.0 and parsed.completion_tokens == 5
    sampled = read_judgment(pair(), Judgment(text="", choice_logprobs=[0.0, -3.0], sampled_choice=1))
    assert sampled.answer == 1 and sampled.reward > 0.9  # the reward stays P(A); the vote is the drawn answer


def test_aggregate_mean_and_majority():
    config = point()

    def vote(answer):
        return read_judgment(config, Judgment(text=f"Score: {answer}", choice_logprobs=None))

    votes = [vote(a) for a in ("7", "7", "3")]
    assert aggregate(config, votes, "mean") == pytest.approx(17 / 3)
    assert aggregate(config, votes, "majority") == 7.0
    assert aggregate(config, [vote("2"), vote("8")], "majority") == 5.0  # a tie: mean of the tied answers
    pairs = [read_judgment(pair(), Judgment(text=f"Better: {x}", choice_logprobs=None)) for x in "AB"]
    assert aggregate(pair(), pairs, "majority") == 0.5
    with pytest.raises(ValueError):
        aggregate(config, [], "mean")


def test_pair_probability_is_the_mean_of_both_orders():
    assert pair_probability(0.9, 0.5) == pytest.approx(0.7)


def test_the_answer_position_is_the_exact_prefix():
    assert ends_with_answer_prefix(point(), "Good answer.\nScore:")
    assert not ends_with_answer_prefix(point(), "Score: 7")
