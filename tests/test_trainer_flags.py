"""rmserve-train's bt/critique/judge flags come from TrainConfig's fields (trainer/rmserve_trainer/flags.py): every
the hand-written parser had still parses to the same TrainConfig, with the same per-command defaults."""

from __future__ import annotations

import dataclasses

import pytest
from rmserve_trainer.cli import COMMAND_FIXED, build_parser, train_config
from rmserve_trainer.config import TrainConfig
from rmserve_trainer.flags import flag_fields

SOURCE = ["--tiny", "qwen2", "--train", "a.jsonl", "--output", "out"]

# Every training flag of the hand-written parser (before the flags were derived), with a non-default value.
ALL_BT_FLAGS = [
    "--lr", "1e-3", "--weight-decay", "0.1", "--warmup-ratio", "0.2", "--batch-size", "4", "--grad-accum", "3",
    "--epochs", "2.5", "--max-steps", "7", "--max-grad-norm", "0", "--precision", "bf16", "--seed", "5",
    "--reward-weight", "0.5", "--centering", "0.3", "--no-margin", "--lm-weight", "0.7", "--safety-weight", "0.2",
    "--attribute-weight", "0.4", "--log-every", "3", "--eval-every", "4", "--save-every", "6",
    "--save-dtype", "bfloat16", "--num-workers", "2", "--no-progress", "--skip-bad",
]
ALL_BT_CONFIG = TrainConfig(
    output_dir="out", lr=1e-3, weight_decay=0.1, warmup_ratio=0.2, batch_size=4, grad_accum=3, epochs=2.5,
    max_steps=7, max_grad_norm=0.0, precision="bf16", seed=5, reward_weight=0.5, centering=0.3, use_margin=False,
    lm_weight=0.7, lm_targets="chosen", safety_weight=0.2, attribute_weight=0.4, log_every=3, eval_every=4,
    save_every=6, save_dtype="bfloat16", num_workers=2, progress=False, skip_bad=True,
)


def parse(command: str, *flags: str) -> TrainConfig:
    return train_config(build_parser().parse_args([command, *SOURCE, *flags]))


def test_defaults_per_command_are_the_old_command_lines():
    assert parse("bt") == TrainConfig(output_dir="out", safety_weight=1.0, attribute_weight=1.0)
    assert parse("critique") == TrainConfig(output_dir="out", safety_weight=1.0, attribute_weight=1.0,
                                            lm_weight=1.0, centering=0.01, lm_targets="both")


def test_every_old_flag_parses_to_the_same_config():
    assert parse("bt", *ALL_BT_FLAGS) == ALL_BT_CONFIG
    critique = parse("critique", *ALL_BT_FLAGS, "--prompt-bt-weight", "0.5", "--lm-chosen-response",
                     "--verdict-weight", "4")
    assert critique == dataclasses.replace(ALL_BT_CONFIG, lm_targets="both", prompt_bt_weight=0.5,
                                           lm_chosen_in_prompt=True, verdict_weight=4.0)


def test_critique_only_flags_are_refused_by_bt():
    for flag in (["--prompt-bt-weight", "0.5"], ["--lm-chosen-response"], ["--verdict-weight", "4"]):
        with pytest.raises(SystemExit):
            parse("bt", *flag)


def test_bad_choice_and_missing_output_are_refused():
    with pytest.raises(SystemExit):
        parse("bt", "--precision", "fp16")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bt", "--tiny", "qwen2", "--train", "a.jsonl"])


@pytest.mark.parametrize("command", ["bt", "critique"])
def test_every_field_is_a_flag_or_set_by_the_command(command):
    """A field added to TrainConfig is a flag (or the subcommand sets it): none is silently out of reach."""
    reachable = {f.name for f in flag_fields(TrainConfig, command)} | set(COMMAND_FIXED[command])
    critique_only = {"prompt_bt_weight", "lm_chosen_in_prompt", "verdict_weight"}
    expected = {f.name for f in dataclasses.fields(TrainConfig)} - (critique_only if command == "bt" else set())
    assert reachable == expected
    help_text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
    for f in flag_fields(TrainConfig, command):
        assert f.metadata["help"].split()[0] in help_text, f.name


def test_judge_takes_the_run_flags_but_none_of_the_reward_head_flags():
    """A generative judge trains its LM on its replies only: the loop's flags apply, the heads' losses do not."""
    assert parse("judge") == TrainConfig(output_dir="out", lm_weight=1.0, reward_weight=0.0, lm_targets="both")
    run = ["--lr", "1e-3", "--max-steps", "7", "--seed", "5", "--precision", "bf16", "--skip-bad", "--no-progress"]
    assert parse("judge", *run) == TrainConfig(output_dir="out", lm_weight=1.0, reward_weight=0.0, lm_targets="both",
                                               lr=1e-3, max_steps=7, seed=5, precision="bf16", skip_bad=True,
                                               progress=False)
    for flag in (["--reward-weight", "1"], ["--centering", "0.1"], ["--no-margin"], ["--lm-weight", "2"],
                 ["--safety-weight", "1"], ["--attribute-weight", "1"], ["--head-width", "8"]):
        with pytest.raises(SystemExit):
            parse("judge", *flag)
    heads_only = {"centering", "use_margin", "safety_weight", "attribute_weight", "prompt_bt_weight",
                  "lm_chosen_in_prompt", "verdict_weight"}
    reachable = {f.name for f in flag_fields(TrainConfig, "judge")} | set(COMMAND_FIXED["judge"])
    assert reachable == {f.name for f in dataclasses.fields(TrainConfig)} - heads_only
