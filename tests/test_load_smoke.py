"""The locust files (load/) for a few seconds each against in-process test servers, and the report.

Not a performance test (that is ``make load``): it proves the REST and gRPC locust users speak the
real API — GRPO groups of one-sample requests, image upload then sha256 references or inline
images, the mixed score/compare/safety users, safety skipped without a safety head — with zero
failures, and that load/report.py turns their CSVs into a report. Servers use the fake model and
listen on 127.0.0.1 only; each locust run is bounded by ``-t`` and a subprocess timeout.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from load import report
from load.run import HOST, Server, seconds
from tests.fakes import FakeRewardModel
from tests.grpc_serving import served

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_S = 4
GROUP = 4
PROMPTS = 6


def locust(locustfile: str, host: str, prefix: str, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "locust", "-f", os.path.join(ROOT, "load", locustfile), "--host", host,
        "--headless", "-u", "4", "-r", "4", "-t", f"{RUN_S}s", "--stop-timeout", "10", "--csv", prefix,
        "--only-summary", "--loglevel", "WARNING", "--timings-json", prefix + "_timings.json",
        "--group-size", str(GROUP), "--prompts", str(PROMPTS), "--max-response-words", "12", *extra,
    ]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> None:
    try:
        out, _ = process.communicate(timeout=RUN_S + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"locust did not stop:\n{out[-3000:]}")
    assert process.returncode == 0, out[-3000:]


def stats(prefix: str) -> dict[str, dict]:
    with open(prefix + "_final_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_locust_files_against_a_model_with_a_safety_head(tmp_path):
    with served(FakeRewardModel(heads=("reward", "safety")), max_queue_items=4096) as server:
        rest = locust("locustfile_rest.py", server.rest_url, str(tmp_path / "rest"))  # images by sha256
        grpc = locust("locustfile_grpc.py", server.grpc_url, str(tmp_path / "grpc"), "--image-mode", "inline")
        finish(rest)
        finish(grpc)

    rest_stats, grpc_stats = stats(str(tmp_path / "rest")), stats(str(tmp_path / "grpc"))
    assert {"/v1/score [grpo]", "/v1/images", "/v1/score", "/v1/compare", "/v1/safety", "Aggregated"} <= set(rest_stats)
    assert {"Score [grpo]", "Score", "Compare", "Safety", "Aggregated"} <= set(grpc_stats)
    assert "UploadImage" not in grpc_stats, "inline mode sends the bytes, never uploads"
    for name, table in (("rest", rest_stats), ("grpc", grpc_stats)):
        assert int(table["Aggregated"]["Failure Count"]) == 0, (name, table["Aggregated"])
    grpo = int(rest_stats["/v1/score [grpo]"]["Request Count"])
    assert grpo >= 4 * GROUP and grpo % GROUP == 0, "whole groups of G one-sample requests"
    assert int(grpc_stats["Score [grpo]"]["Request Count"]) % GROUP == 0
    assert 1 <= int(rest_stats["/v1/images"]["Request Count"]) <= 2 * PROMPTS, "each image uploaded ~once"
    timings = json.loads((tmp_path / "rest_timings.json").read_text())
    assert timings["/v1/score [grpo]"]["count"] == grpo and timings["/v1/score [grpo]"]["queue_ms_p50"] >= 0
    assert "Score [grpo]" in json.loads((tmp_path / "grpc_timings.json").read_text())

    text = report.write(str(tmp_path))
    assert "## REST" in text and "## gRPC" in text and "`/v1/score [grpo]`" in text and "`Safety`" in text
    assert (tmp_path / "report.md").read_text() == text
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.timeout(120)
def test_mixed_users_skip_safety_without_a_safety_head(tmp_path):
    with served(FakeRewardModel(heads=("reward",))) as server:
        finish(locust("locustfile_rest.py", server.rest_url, str(tmp_path / "rest"), "MixedUser"))
    table = stats(str(tmp_path / "rest"))
    assert {"/v1/score", "/v1/compare", "/v1/models"} <= set(table) and "/v1/safety" not in table
    assert int(table["Aggregated"]["Failure Count"]) == 0


def test_run_helpers_stay_on_loopback(tmp_path):
    assert seconds("60s") == 60 and seconds("2m") == 120 and seconds("1h30m") == 5400 and seconds("15") == 15
    with pytest.raises(ValueError):
        seconds("a minute")
    server = Server(8123, 8124, ["--host", "0.0.0.0", "--max-wait-ms", "3"], str(tmp_path / "log"))
    assert HOST == "127.0.0.1" and server.command[-2:] == ["--host", HOST], "the last --host wins"
    assert server.url == "http://127.0.0.1:8123"
