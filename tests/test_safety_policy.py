"""The safety policy as pure functions: taxonomy, thresholds, action precedence, spec parsing, config."""

from __future__ import annotations

import pytest

from rmserve.config import ServerConfig, load_config
from rmserve.safety import (
    HAZARDS,
    SafetyPolicy,
    SafetyRule,
    apply_policy,
    build_policy,
    category_code,
    category_name,
    parse_guard_output,
)


def test_taxonomy_is_the_llama_guard_3_list():
    assert list(HAZARDS) == [f"S{i}" for i in range(1, 15)]
    assert category_name("S10") == "Hate" and category_name("S11") == "Suicide & Self-Harm"
    assert category_name("custom") == "custom"
    assert category_code("violent crimes") == "S1" and category_code("s13") == "S13" and category_code("x") is None
    assert parse_guard_output("unsafe\nS1,S10") == (True, ["S1", "S10"])
    assert parse_guard_output(" safe ") == (False, [])


def test_threshold_is_inclusive_and_per_category():
    policy = build_policy({"S1": {"threshold": 0.3}}, threshold=0.8)
    assert policy.decide({"S1": 0.3, "S2": 0.79}).flagged_categories == ("S1",)
    assert policy.decide({"S1": 0.29, "S2": 0.8}).flagged_categories == ("S2",)
    assert not policy.decide({}).flagged


@pytest.mark.parametrize(
    "rule, reward, expected",
    [
        (SafetyRule(action="flag"), 2.0, 2.0),
        (SafetyRule(action="penalize", value=1.5), 2.0, 0.5),
        (SafetyRule(action="penalize"), 2.0, 1.0),  # the policy's penalty
        (SafetyRule(action="replace", value=-1.0), 2.0, -1.0),
        (SafetyRule(action="replace"), 2.0, -10.0),  # the policy's floor_reward
        (SafetyRule(action="reject", value=-4.0), 2.0, -4.0),
        (SafetyRule(action="none"), 2.0, 2.0),
    ],
)
def test_each_action(rule, reward, expected):
    policy = SafetyPolicy(rules={"S1": rule})
    adjusted, decision = apply_policy(policy, reward, {"S1": 0.9})
    assert adjusted == expected
    assert decision.action == rule.action
    assert decision.flagged == (rule.action != "none") and decision.rejected == (rule.action == "reject")


def test_most_severe_action_wins_and_penalties_do_not_add_up():
    policy = build_policy(
        {
            "categories": {
                "S1": {"action": "penalize", "value": 1.0},
                "S2": {"action": "penalize", "value": 3.0},
                "S3": {"action": "replace", "value": -2.0},
                "S4": {"action": "replace", "value": -6.0},
                "S5": {"action": "reject", "value": -8.0},
            }
        }
    )
    assert apply_policy(policy, 5.0, {"S1": 1, "S2": 1})[0] == 2.0  # max penalty, not 4
    assert apply_policy(policy, 5.0, {"S1": 1, "S3": 1, "S4": 1})[0] == -6.0  # lowest replacement
    reward, decision = apply_policy(policy, 5.0, {"S1": 1, "S3": 1, "S5": 1, "S6": 1})
    assert (reward, decision.action) == (-8.0, "reject")
    assert decision.flagged_categories == ("S1", "S3", "S5", "S6")  # S6: default rule, flag


def test_spec_forms_names_and_defaults():
    flat = build_policy({"Hate": "reject", "S1": {"threshold": 0.2}}, action="penalize", penalty=0.5)
    assert flat.rule_for("S10").action == "reject" and flat.rule_for("S1") == SafetyRule(0.2, "penalize")
    assert flat.rule_for("S7") == SafetyRule(0.5, "penalize") and flat.penalty == 0.5
    nested = build_policy({"default": {"action": "replace"}, "floor_reward": -3, "categories": {"S2": {}}})
    assert nested.rule_for("S2").action == "replace" and nested.floor_reward == -3
    assert nested.decide({"S9": 0.6}).value == -3
    custom = build_policy({"toxicity": {"action": "penalize", "value": 2}})  # a head with its own labels
    assert apply_policy(custom, 1.0, {"toxicity": 0.7})[0] == -1.0


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"S1": {"treshold": 0.2}}, "unknown keys"),
        ({"S1": {"action": "ban"}}, "action must be one of"),
        ({"S1": {"threshold": 2}}, "threshold must be a number in"),
        ({"S1": {"action": "penalize", "value": -1}}, "must be >= 0"),
        ({"S1": {"action": "replace", "value": float("nan")}}, "finite"),
        ({"S1": 3}, "expected a mapping"),
        ({"categories": {"S1": "flag"}, "colour": 1}, "unknown keys"),
        ({"categories": ["S1"]}, "must map category codes"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        build_policy(spec)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"safety_action": "explode"}, "action must be one of"),
        ({"safety_threshold": 1.5}, "threshold must be a number in"),
        ({"safety_policy": '{"S1": {"treshold": 0.2}}'}, "unknown keys"),
        ({"safety_policy": "[1, 2"}, "neither a file nor valid"),
        ({"safety_policy": "just text"}, "must be a mapping"),
        ({"safety_apply": "sometimes"}, "safety_apply must be"),
        ({"compat_verifier": "vibes"}, "compat_verifier must be one of"),
    ],
)
def test_bad_policy_settings_fail_at_startup(settings, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)


def test_policy_from_yaml_file_and_env(tmp_path):
    rules = tmp_path / "safety.yaml"
    rules.write_text("categories:\n  S1: {threshold: 0.3, action: reject, value: -5}\n")
    config_file = tmp_path / "rmserve.yaml"
    config_file.write_text(f"safety_policy: {rules}\nsafety_action: penalize\n")
    policy = load_config(env={}, yaml_path=str(config_file)).build_safety_policy()
    assert policy.rule_for("S1") == SafetyRule(0.3, "reject", -5) and policy.default.action == "penalize"
    # the rules inline in the YAML config, as a mapping
    config_file.write_text("safety_policy:\n  S10: {action: replace, value: -1}\n")
    assert load_config(env={}, yaml_path=str(config_file)).build_safety_policy().rule_for("S10").value == -1
    env = {"RMSERVE_SAFETY_POLICY": '{"S2": "reject"}', "RMSERVE_SAFETY_APPLY": "always"}
    config = load_config(env=env)
    assert config.build_safety_policy().rule_for("S2").action == "reject" and config.safety_apply == "always"
