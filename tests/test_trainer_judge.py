"""`rmserve-train judge`: SFT of a generative judge on rendered preference pairs, and `rmserve-train eval` on it.

The task: a text-only tiny judge sees "Name a colour." and two answers, one naming a colour and one an animal;
the colour is better. Untrained, its answers are noise; trained for 80 steps (~10 s on one core) it picks the
colour in both orders.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import pytest
import torch
from rmserve_trainer import eval as ev
from rmserve_trainer.cli import build_parser, build_trainer, judge_section
from rmserve_trainer.data.judge import JudgeCollator, encode_judge_row, judge_rows
from rmserve_trainer.data.synthetic import generate_demo_pairs, write_pairs_jsonl
from rmserve_trainer.modeling import TrainModule
from rmserve_trainer.records import PairRecord
from rmserve_trainer.trainers.judge import DEFAULT_JUDGES

from rmserve.models import load_reward_model
from rmserve.models.judge_format import JudgeConfig, render_pairwise
from rmserve.models.types import JudgePrompt, ScoreItem

COLOURS, ANIMALS = ("red", "blue", "green", "yellow"), ("cat", "dog", "cow", "horse")


def colour_pairs(n: int, seed: int) -> list[PairRecord]:
    rng = random.Random(seed)
    return [PairRecord(id=f"c{seed}-{i}", prompt="Name a colour.", chosen=f"It is {rng.choice(COLOURS)}.",
                       rejected=f"It is {rng.choice(ANIMALS)}.") for i in range(n)]


def write_jsonl(records: list[PairRecord], path) -> str:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps({"id": r.id, "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}) + "\n")
    return str(path)


def judge_args(train: str, out, *extra: str, steps: int = 80, tiny: str = "qwen2"):
    return build_parser().parse_args([
        "judge", "--tiny", tiny, "--train", train, "--eval", train, "--output", str(out), "--lr", "3e-3",
        "--batch-size", "8", "--max-steps", str(steps), "--warmup-ratio", "0", "--no-progress", "--log-every", "20",
        "--threads", "1",
        *extra])


def run_eval(data: str, model_dir: str, out) -> dict:
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    assert ev.run(parser.parse_args([data, "--model", model_dir, "--out", str(out), "--no-plots"])) == 0
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """The runs here pin one torch thread (``--threads 1``: 25x faster than two on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An untrained and a trained pairwise judge, both saved; the held-out pairs."""
    tmp = tmp_path_factory.mktemp("judge")
    train = write_jsonl(colour_pairs(64, seed=0), tmp / "train.jsonl")
    heldout = write_jsonl(colour_pairs(24, seed=1), tmp / "heldout.jsonl")
    trainer = build_trainer(judge_args(train, tmp / "model"))
    untrained = str(tmp / "untrained")
    trainer.save_checkpoint(untrained)
    before = trainer.evaluate()
    final = trainer.fit()
    return trainer, before, final, trainer.save_checkpoint(), untrained, heldout, tmp


def test_rows_are_the_served_judge_prompt_in_both_orders_with_the_chosen_side_as_answer(trained):
    trainer = trained[0]
    model, config = trainer.model, trainer.judge
    record = colour_pairs(1, seed=5)[0]
    first, second = judge_rows(config, record)
    assert (first.shown, second.shown) == ((record.chosen, record.rejected), (record.rejected, record.chosen))
    assert (first.choice, second.choice) == (0, 1)
    decoding = model.judge_decoding()
    for row, (a, b) in ((first, (record.chosen, record.rejected)), (second, (record.rejected, record.chosen))):
        encoded = encode_judge_row(model, config, decoding, row)
        # What the server reads the answer after, built independently: the rendered template as the user
        # turn + the generation prompt + the answer prefix.
        user, _, _ = model.encode_prompt(ScoreItem(response="", prompt=render_pairwise(config, record.prompt, a, b)))
        served = user + list(decoding.prefix_ids)
        assert encoded.input_ids[:len(served)] == served
        assert encoded.input_ids[len(served)] == decoding.choice_ids[row.choice]  # the target is the answer
        assert encoded.prefix_len == len(user)  # loss on the reply only (answer prefix, answer, end of turn)


def test_training_makes_the_judge_pick_the_better_response(trained):
    _, before, final, _, _, _, _ = trained
    assert final["eval/lm"] < before["eval/lm"] - 2.0, (before, final)
    assert before["eval/acc"] <= 0.75 and final["eval/acc"] >= 0.95, (before, final)
    assert final["eval/answer_acc"] >= 0.95


def test_checkpoint_is_a_judge_that_eval_scores_better_than_the_untrained_one(trained):
    _, _, _, path, untrained, heldout, tmp = trained
    meta = json.load(open(os.path.join(path, "rmserve.json")))
    assert meta["judge"] == JudgeConfig.from_dict(DEFAULT_JUDGES["pairwise"] | {"max_new_tokens": 256}).to_dict()
    assert meta["heads"] == {}
    after = run_eval(heldout, path, tmp / "eval-trained")
    base = run_eval(heldout, untrained, tmp / "eval-untrained")
    assert after["n_scored"] == base["n_scored"] == 24
    assert after["accuracy"] >= 0.95 and base["accuracy"] <= 0.75, (base["accuracy"], after["accuracy"])


def test_eval_numbers_equal_the_servers_compare(trained):
    from starlette.testclient import TestClient

    from rmserve.config import ServerConfig
    from rmserve.server import create_app

    _, _, _, path, _, heldout, tmp = trained
    report_dir = tmp / "eval-vs-server"
    run_eval(heldout, path, report_dir)
    scored = [json.loads(line) for line in (report_dir / "scores.jsonl").read_text().splitlines()]
    records = {r["id"]: r for r in map(json.loads, open(heldout))}
    app = create_app(ServerConfig(max_wait_ms=1.0, preprocess_workers=1), model=load_reward_model(path))
    with TestClient(app) as client:
        end = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:  # the model warms up in the background
            assert time.monotonic() < end, "the server did not become ready"
            time.sleep(0.05)
        for row in scored:
            r = records[row["id"]]
            response = client.post("/v1/compare", json={"prompt": r["prompt"], "response_a": r["chosen"],
                                                        "response_b": r["rejected"]})
            assert response.status_code == 200, response.text
            assert abs(response.json()["prob_a_better"] - row["chosen"]) <= 1e-4, (row, response.json())
    spread = [row["chosen"] for row in scored]
    assert max(spread) - min(spread) > 1e-3  # distinct per pair: a constant would also "match"


def test_eval_over_http_finds_the_pairwise_judge_and_matches_in_process(trained):
    """``--url``: /v1/models says the model is a pairwise judge, so pairs go to /v1/compare; same numbers."""
    from rmserve.config import ServerConfig
    from rmserve.server import create_app
    from tests.serving import uvicorn_server

    _, _, _, path, _, heldout, tmp = trained
    local = run_eval(heldout, path, tmp / "eval-local")
    app = create_app(ServerConfig(max_wait_ms=1.0, preprocess_workers=1), model=load_reward_model(path))
    with uvicorn_server(app) as url:
        parser = argparse.ArgumentParser()
        ev.add_arguments(parser)
        end = time.monotonic() + 60
        while True:  # the model warms up in the background
            try:
                assert ev.run(parser.parse_args([heldout, "--url", url, "--out", str(tmp / "eval-http"),
                                                 "--no-plots"])) == 0
                remote = json.loads((tmp / "eval-http" / "report.json").read_text())
                if remote["n_scored"] == local["n_scored"] or time.monotonic() > end:
                    break
            except RuntimeError:  # 503 while loading
                assert time.monotonic() < end
            time.sleep(0.2)
    assert remote["n_scored"] == 24 and remote["accuracy"] == local["accuracy"]
    assert remote["margin"]["mean"] == pytest.approx(local["margin"]["mean"], abs=1e-4)


def test_training_forward_reads_the_answer_where_serving_does():
    """Multimodal (tiny Qwen2.5-VL): the trainer's log p(choice) at the answer position == the served judgment's,
    for both orders (M-RoPE positions, images in the judge's turn, right padding)."""
    records = generate_demo_pairs(3, seed=4, image_size=56)
    args = build_parser().parse_args(["judge", "--tiny", "qwen2_5_vl", "--train", "unused", "--output", "unused"])
    from rmserve_trainer.modeling import build_judge_model

    model = build_judge_model(tiny="qwen2_5_vl", judge=judge_section(args), seed=3).eval()
    config = JudgeConfig.of(model.extra_config)
    collator = JudgeCollator(model, config)
    pb = collator(records)
    with torch.no_grad():
        out = TrainModule(model)(pb.batch, lm_labels=pb.lm_labels, paired_images=True, heads=False, lm_at=pb.answer_at)
    trained_lp = torch.log_softmax(out["lm_logits_at"].float(), -1)[:, list(collator.choice_ids)]
    decoding = model.judge_decoding()
    rows = [row for r in records for row in judge_rows(config, r)]
    rows = rows[0::2] + rows[1::2]  # the collator's order: every record's first row, then every second row
    prompts = []
    for row in rows:
        text = render_pairwise(config, row.conversation.prompt, *row.shown)
        ids, vision, _ = model.encode_prompt(ScoreItem(response="", prompt=text, images=row.conversation.images))
        prompts.append(JudgePrompt(ids + list(decoding.prefix_ids), vision, row.conversation.images))
    served = torch.tensor([j.choice_logprobs for j in model.generate_judgments(prompts, decoding)])
    assert torch.allclose(trained_lp, served, atol=1e-5, rtol=0), (trained_lp - served).abs().max()
    assert pb.answer.tolist() == [0, 0, 0, 1, 1, 1]


def test_pointwise_rows_scores_and_reasoning_judgments(tmp_path):
    args = build_parser().parse_args(["judge", "--tiny", "qwen2", "--train", "x", "--output", "x",
                                      "--judge-mode", "pointwise", "--reasoning"])
    config = JudgeConfig.from_dict(judge_section(args))
    assert config.mode == "pointwise" and config.reasoning
    record = PairRecord(id="r", prompt="Name a colour.", chosen="Red.", rejected="Dog.", chosen_reason="A colour.",
                        rejected_reason="An animal.")
    good, bad = judge_rows(config, record)
    assert (good.shown, bad.shown) == (("Red.",), ("Dog.",)) and good.conversation.prompt == "Name a colour."
    assert (config.choices[good.choice], config.choices[bad.choice]) == ("5", "1")  # highest / lowest value
    assert good.before_answer == "A colour.\nScore:" and bad.before_answer == "An animal.\nScore:"
    record.attributes = {"chosen": {"score": 4}, "rejected": {"score": 2}}
    assert [config.choices[r.choice] for r in judge_rows(config, record)] == ["4", "2"]
    record.attributes = {"chosen": {"score": 7}}
    with pytest.raises(ValueError, match="attributes.chosen.score = 7 is not one of"):
        judge_rows(config, record)
    pair = JudgeConfig.from_dict(DEFAULT_JUDGES["pairwise"] | {"reasoning": True})
    record.attributes = None
    first, second = judge_rows(pair, record)  # the judgment names each response by the letter it is shown as
    assert first.before_answer == "Response A: A colour.\nResponse B: An animal.\nBetter:"
    assert second.before_answer == "Response A: An animal.\nResponse B: A colour.\nBetter:"


def test_pointwise_training_is_deterministic_and_saves_a_pointwise_judge(tmp_path):
    train = write_jsonl(colour_pairs(16, seed=2), tmp_path / "train.jsonl")
    runs = []
    for k in range(2):
        trainer = build_trainer(judge_args(train, tmp_path / f"m{k}", "--judge-mode", "pointwise", steps=6))
        runs.append((trainer.fit(), trainer.save_checkpoint()))
    (first, path), (second, _) = runs
    assert first["eval/lm"] == second["eval/lm"] and first["train/loss"] == second["train/loss"]
    loaded = load_reward_model(path)
    assert JudgeConfig.of(loaded.extra_config).mode == "pointwise" and loaded.judge_decoding() is not None


def test_data_problems_name_the_record(tmp_path):
    data = write_pairs_jsonl(generate_demo_pairs(2, seed=0, image_size=28), str(tmp_path / "mm"))
    with pytest.raises(ValueError, match="text-only"):  # images for a text-only judge: the record is named
        build_trainer(judge_args(data, tmp_path / "out", steps=1)).fit()
    bad = tmp_path / "judge.json"
    bad.write_text(json.dumps(DEFAULT_JUDGES["pairwise"] | {"choices": ["A", "B", "C"]}))
    with pytest.raises(ValueError, match="judge.choices"):
        judge_section(build_parser().parse_args(["judge", "--tiny", "qwen2", "--train", "x", "--output", "x",
                                                 "--judge-config", str(bad)]))


def test_a_saved_judge_checkpoint_continues_training(trained, tmp_path):
    trainer, _, _, path, _, heldout, _ = trained
    args = build_parser().parse_args(["judge", "--model", path, "--train", heldout, "--eval", heldout,
                                      "--output", str(tmp_path / "c"), "--max-steps", "1", "--no-progress"])
    again = build_trainer(args)
    assert again.model.head_specs == {} and again.judge == trainer.judge
    assert again.evaluate()["eval/acc"] >= 0.95  # it starts from the trained weights
