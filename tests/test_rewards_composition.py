"""Reward composition as pure functions: verifiers, the hybrid rule, ensemble combination."""

from __future__ import annotations

import math

import pytest

from rmserve.rewards import combine_rewards, hybrid_reward, sigmoid, verify
from rmserve.rewards.verifiers import choice_letter_of, final_answer, last_boxed, last_number, parse_number


@pytest.mark.parametrize(
    "name, response, truth, expected",
    [
        ("exact_match", "Paris", "paris", True),
        ("exact_match", "The answer is Paris.", "Paris", True),
        ("exact_match", "I think...\n#### blue square", "Blue  Square", True),
        ("exact_match", "Paris, France", "Paris", False),
        ("exact_match", "", "x", False),
        ("numeric_match", "so 1,234.5 in total", "1234.5", True),
        ("numeric_match", "#### 3/4", "0.75", True),
        ("numeric_match", "The answer is 42.", "42", True),
        ("numeric_match", "about 41.9999999", "42", True),  # within 1e-6 relative
        ("numeric_match", "about 41.99", "42", False),
        ("numeric_match", "step 1: 7, step 2: 8, answer: 9", "9", True),
        ("numeric_match", r"we get \boxed{12} apples, 3 left", "12", True),  # a boxed answer wins
        ("numeric_match", "no number here", "3", False),
        ("numeric_match", "3", "three", False),
        ("numeric_match", "50%", "0.5", True),
        ("choice_letter", "The answer is (C).", "C", True),
        ("choice_letter", "**B.** because it is blue", "B", True),
        ("choice_letter", r"\boxed{D}", "(D)", True),
        ("choice_letter", "E", "E", True),
        ("choice_letter", "Answer: A", "B", False),
        ("choice_letter", "A cat sits on the mat.", "A", False),  # "A" the article, not an option
        ("choice_letter", "I choose (b)", "B", False),  # options are upper case
        ("boxed", r"so \boxed{\frac{1}{2}}", r"\dfrac{1}{2}", True),
        ("boxed", r"\boxed{0.5}", "1/2", True),
        ("boxed", r"\boxed{x^{2}+1}", r"\boxed{x^{2} + 1}", True),
        ("boxed", r"first \boxed{1} then \boxed{2}", "2", True),
        ("boxed", "2", "2", False),  # nothing boxed
    ],
)
def test_verifiers(name, response, truth, expected):
    assert verify(name, response, truth) is expected


def test_tolerance_and_unknown_verifier():
    assert verify("numeric_match", "3.1", "3.14159", tolerance=0.05)
    assert not verify("numeric_match", "3.1", "3.14159")
    assert verify("boxed", r"\boxed{3.1}", "3.14", tolerance=0.1)
    with pytest.raises(ValueError, match="unknown verifier"):
        verify("vibes", "a", "a")


def test_extraction_helpers():
    assert final_answer("work... The answer is: 7") == "7"
    assert last_number("from -3e-2 to 1,000") == 1000 and parse_number("12%") == 0.12
    assert parse_number("1/0") is None and parse_number("abc") is None
    assert last_boxed(r"\boxed{\frac{a}{b}} and \fbox{c}") == "c" and last_boxed(r"\boxed{unclosed") is None
    assert choice_letter_of("Option (B) is wrong; the answer is D") == "D"


def test_hybrid_reward_and_sigmoid():
    assert hybrid_reward(-3.0, True) == 1.0
    assert hybrid_reward(0.0, False) == 0.5 and hybrid_reward(2.0, None) == sigmoid(2.0)
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0  # no overflow
    assert sigmoid(1.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert 0 < hybrid_reward(50.0, False) <= 1.0  # an unverified answer never outranks a verified one


def test_ensemble_combination():
    assert combine_rewards([1.0, 2.0, 6.0]) == 3.0
    assert combine_rewards([1.0, 3.0], "weighted_mean", [3, 1]) == 1.5
    assert combine_rewards([1.0, 3.0], "weighted_mean", [0, 2]) == 3.0
    assert combine_rewards([2.0], "weighted_mean") == 2.0
    for weights, message in (([1], "2 models"), ([-1, 2], ">= 0"), ([0, 0], "all be zero")):
        with pytest.raises(ValueError, match=message):
            combine_rewards([1.0, 2.0], "weighted_mean", weights)
    with pytest.raises(ValueError, match="unknown ensemble method"):
        combine_rewards([1.0], "median")
