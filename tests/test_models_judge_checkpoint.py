"""Judge checkpoints: saved and loaded with their judge section, checked at load with clear errors."""

from __future__ import annotations

import json
import os

import pytest

from rmserve.models.checkpoint import load_reward_model, save_reward_model
from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge, build_tiny_reward_model
from rmserve.models.types import JudgePrompt, ScoreItem


def _edit(path, **judge):
    meta_path = os.path.join(path, "rmserve.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["judge"] = {**meta["judge"], **judge}
    with open(meta_path, "w") as f:
        json.dump(meta, f)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("judge"))
    save_reward_model(build_tiny_judge("qwen2", TINY_JUDGE, seed=3), path)
    return path


def test_a_judge_round_trips_with_the_same_judgments(saved):
    original = build_tiny_judge("qwen2", TINY_JUDGE, seed=3)
    loaded = load_reward_model(saved)
    assert loaded.extra_config["judge"] == original.extra_config["judge"] and not loaded.head_specs
    decoding = loaded.judge_decoding()
    assert decoding == original.judge_decoding() and len(decoding.choice_ids) == 5
    ids, vision, _ = loaded.encode_prompt(ScoreItem(response="", prompt="Rate: ok"))
    prompt = [JudgePrompt(ids + list(decoding.prefix_ids), vision)]
    assert loaded.generate_judgments(prompt, decoding)[0].choice_logprobs == pytest.approx(
        original.generate_judgments(prompt, decoding)[0].choice_logprobs, abs=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"choices": ["1", "2", "3", "4", "Score"]}, "judge.choices: 'Score' is 4 tokens"),
        ({"template": "Rate {response}"}, r"judge.template \(pointwise\) lacks \{prompt\}"),
        ({"values": [1, 2]}, "judge.values"),
    ],
)
def test_a_broken_judge_section_fails_at_load_naming_the_field(saved, tmp_path, change, message):
    import shutil

    path = str(tmp_path / "broken")
    shutil.copytree(saved, path)
    _edit(path, **change)
    with pytest.raises(ValueError, match=message) as info:
        load_reward_model(path)
    assert "rmserve.json" in str(info.value)


def test_a_scalar_model_on_the_judge_path_is_refused(tmp_path):
    model = build_tiny_reward_model("qwen2_seq_cls")
    model.extra_config = {"judge": dict(TINY_JUDGE)}
    path = str(tmp_path / "seqcls")
    save_reward_model(model, path)
    with pytest.raises(ValueError, match="can generate"):
        load_reward_model(path)
