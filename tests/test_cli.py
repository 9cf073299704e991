"""The CLI: offline ``score`` round trip on a small JSONL, ``serve`` wiring, ``python -m rmserve``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from rmserve import cli
from rmserve.models.types import ScoreItem
from rmserve.server import loading
from tests.conftest import data_url, item, png_bytes
from tests.fakes import FakeRewardModel


@pytest.fixture
def fake(monkeypatch):
    model = FakeRewardModel(heads=("reward", "attributes"), max_length=128)
    calls = []

    def load(config):
        calls.append((config.model, config.device, config.dtype))
        return model

    monkeypatch.setattr(loading, "load_model_from_config", load)
    model.calls = calls
    return model


def _write_jsonl(path, rows):
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))


def test_score_round_trip_keeps_order_and_reports_bad_lines(tmp_path, fake):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "red.png").write_bytes(png_bytes(color=(255, 0, 0)))
    rows = [{"prompt": f"question {i}", "response": f"answer {i}" * (1 + i % 4)} for i in range(20)]
    rows[3] = {
        "prompt": "colour?",
        "images": ["imgs/red.png"],
        "response": "red",
    }  # path relative to the input
    rows[4] = {"prompt": "colour?", "images": [data_url(png_bytes(color=(0, 0, 255)))], "response": "blue"}
    rows[5] = {"messages": [{"role": "user", "content": "hi"}], "response": "hello"}
    rows[7] = {"prompt": "p", "response": 5}  # invalid: not a string (a blank response is valid)
    rows[9] = "{not json"
    rows[11] = {"prompt": "p" * 500, "response": "too long for max_length"}
    src, dst = tmp_path / "items.jsonl", tmp_path / "scores.jsonl"
    _write_jsonl(src, rows[:10] + [""] + rows[10:])  # a blank line is skipped, not scored

    code = cli.main(
        [
            "score",
            "--model",
            "/models/x",
            "--input",
            str(src),
            "--output",
            str(dst),
            "--batch-size",
            "4",
            "--return",
            "reward,attributes",
            "--quiet",
        ]
    )

    assert code == 1  # some lines failed
    assert fake.calls == [("/models/x", "cpu", "float32")]
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(out) == len(rows)
    for i, (row, result) in enumerate(zip(rows, out, strict=True)):
        if i == 7:
            error = result["error"]
            assert error["param"] == "response" and error["type"] == "invalid_request_error"
            assert "items.0" not in error["message"]
        elif i == 9:
            assert result["error"]["code"] == "invalid_json"
        elif i == 11:
            assert result["error"]["param"] == "prompt" and result["error"]["code"] == "too_long"
        else:
            images = [Image.open(tmp_path / p) for p in row.get("images", []) if not p.startswith("data:")]
            if i == 4:
                images = [Image.new("RGB", (8, 8), (0, 0, 255))]
            if "messages" in row:
                expected = fake.expected(ScoreItem(response=row["response"], messages=row["messages"]))
            else:
                expected = fake.expected(item(row["response"], prompt=row["prompt"], images=images))
            assert result["reward"] == expected.reward, i
            assert set(result) == {"reward", "attributes"}
    assert max(len(b) for b in fake.batches) > 1  # offline scoring batches too


def test_score_all_good_exits_zero(tmp_path, fake):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, [{"prompt": "p", "response": f"r{i}"} for i in range(3)])
    assert cli.main(["score", "--input", str(src), "--output", str(dst), "--quiet"]) == 0
    assert fake.calls[0][0] is None  # no --model: the default model
    assert [set(json.loads(line)) for line in dst.read_text().splitlines()] == [{"reward"}] * 3


def test_serve_builds_the_app_from_flags_and_env(monkeypatch, fake):
    captured = {}

    def fake_serve(app, config):
        captured["app"], captured["kwargs"] = app, vars(shutdown.uvicorn_config(app, config))
        return 0

    from rmserve.server import shutdown

    monkeypatch.setattr(shutdown, "serve", fake_serve)
    monkeypatch.setenv("RMSERVE_MAX_WAIT_MS", "9")
    code = cli.main(
        ["serve", "--port", "8123", "--max-batch-size", "7", "--no-warmup", "--log-level", "warning"]
    )
    assert code == 0
    config = captured["app"].state.rmserve.config
    assert (config.port, config.max_batch_size, config.max_wait_ms, config.warmup) == (8123, 7, 9.0, False)
    assert captured["kwargs"]["port"] == 8123 and captured["kwargs"]["host"] == "127.0.0.1"


def test_serve_rejects_bad_settings(capsys):
    assert cli.main(["serve", "--max-batch-size", "0"]) == 2
    assert "max_batch_size must be >= 1" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "rmserve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "serve" in result.stdout and "score" in result.stdout
