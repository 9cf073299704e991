"""The benchmark harness (bench/) in its tiniest mode, so it cannot rot. Not a timed test.

``test_tiny_benchmark`` (~15 s) runs ``python -m bench.run --tiny`` in-process: three real
server processes (rmserve, rmserve --no-share-prefix, the naive server) start in parallel on
free ports, a 0.2M-parameter model scores a few requests per workload over HTTP, and every
server must be gone afterwards. The real benchmark is ``make bench``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness reads /proc")


def _running(pid: int, marker: str = "") -> bool:
    """Alive and not a zombie (and, if given, ``marker`` in its command line: pids get reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return alive and marker.encode() in f.read()
    except OSError:
        return False


def _wait_gone(pid: int, marker: str = "", timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while _running(pid, marker) and time.monotonic() < end:
        time.sleep(0.05)
    return not _running(pid, marker)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_benchmark(tmp_path):
    from bench.run import main

    rc = main(["--tiny", "--threads", "1", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert rc == 0, [(r["workload"], r["system"], r["error"]) for r in results["rows"] if "error" in r]
    rows = {(r["workload"], r["system"]): r for r in results["rows"]}
    expected = {(w, s) for w in ("text", "image", "grpo") for s in ("rmserve", "naive", "ceiling")}
    expected |= {("grpo", "rmserve-no-share"), ("grpo", "ceiling-share"), ("grpo", "rmserve-soak")}
    assert set(rows) == expected
    for key, row in rows.items():
        assert "error" not in row, (key, row.get("error"))
        assert row["ok"] == row["responses"] > 0 and row["responses_per_s"] > 0, key
        if row["kind"] == "server":
            assert row["peak_rss_mib"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0, key
            marker = "naive_server" if row["system"] == "naive" else "rmserve"
            assert _wait_gone(row["pid"], marker), f"{key}: server pid {row['pid']} still running"
        if row.get("max_abs_reward_diff") is not None:  # every system scored the same items
            assert row["max_abs_reward_diff"] < 1e-3, key
    assert rows[("grpo", "rmserve")]["responses"] % 8 == 0
    assert {r["ratio"] for r in results["ratios"]} >= {"rmserve / ceiling", "rmserve / naive",
                                                       "rmserve / rmserve-no-share"}
    assert results["soak"]["responses"][1] == 2 * results["soak"]["responses"][0]
    assert results["latency"] and results["machine"]["cores"] and results["model"]["params"] > 0
    markdown = (tmp_path / "results.md").read_text()
    assert "| grpo | rmserve / naive |" in markdown and results["command"] in markdown
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_server_is_stopped_when_the_body_fails(tmp_path):
    from bench.servers import ServerProcess

    server = ServerProcess("http", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
                           str(tmp_path / "http.log"), ready_path="/", start_timeout_s=30)
    with pytest.raises(RuntimeError, match="boom"), server:
        pid = server.pid
        assert _running(pid)
        raise RuntimeError("boom")
    assert _wait_gone(pid)


def test_server_that_dies_at_start_reports_its_log(tmp_path):
    from bench.servers import ServerProcess

    server = ServerProcess("dies", [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"],
                           str(tmp_path / "dies.log"), start_timeout_s=30)
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*no model here"):
        server.start()


def test_workloads_are_deterministic_and_sized_in_tokens():
    from bench.ceiling import encode_workload
    from bench.model import MODELS, build_model
    from bench.workloads import WorkloadFactory

    dims = MODELS["tiny"]
    model = build_model(dims)
    factory = WorkloadFactory(model.tokenizer, image_size=dims.image_size)
    small, large = factory.build("grpo", 8), factory.build("grpo", 24)
    assert small.groups[0] == large.groups[0] and len(large.groups) == 3 and large.group_size == 8
    assert len({item["prompt"] for item in large.groups[1]}) == 1  # one prompt + image per group
    text_groups = factory.build("grpo_text", 16).groups  # the vLLM comparison's GRPO: no image
    assert len(text_groups) == 2 and all(len({it["prompt"] for it in g}) == 1 and len(g) == 8 for g in text_groups)
    assert not any("images" in it for g in text_groups for it in g)
    for name in ("text", "image", "grpo", "grpo_text"):
        for item in (it for g in encode_workload(model, factory.build(name, 16)) for it in g):
            images = int(item.vision["image_grid_thw"].prod()) // 4 if "image_grid_thw" in item.vision else 0
            assert item.prefix_len == 64 + images + (2 if images else 0)  # + vision start/end
            assert 32 <= item.num_tokens - item.prefix_len <= 256


def test_client_sends_a_group_together_within_the_limit():
    import uvicorn
    from fastapi import FastAPI

    from bench.client import drive
    from bench.servers import free_port

    app, state = FastAPI(), {"now": 0, "max": 0, "seen": []}

    @app.post("/v1/score")
    async def score(body: dict):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        state["seen"].append((body["group"], state["now"]))
        await asyncio.sleep(0.05)
        state["now"] -= 1
        return {"items": [{"reward": float(body["group"])}]}

    async def run():
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            groups = [[json.dumps({"group": g}).encode()] * 4 for g in range(6)]
            return await drive(f"http://127.0.0.1:{port}", groups, concurrency=8)
        finally:
            server.should_exit = True
            await task

    result = asyncio.run(run())
    assert result.ok == 24 and not result.errors
    assert result.rewards == [float(g) for g in range(6) for _ in range(4)]
    assert 4 <= state["max"] <= 8  # a group's 4 requests overlap; never more than 8 in flight
    with pytest.raises(ValueError, match="group of 4"):
        asyncio.run(drive("http://127.0.0.1:9", [[b"{}"] * 4], concurrency=2))


# ── the verdicts on known inputs: a wrong formula or comparison fails here, whatever the machine ─────


def _row(workload: str, system: str, rate: float, **fields) -> dict:
    return {"workload": workload, "system": system, "kind": "server", "responses_per_s": rate, **fields}


def test_ratio_verdicts_on_known_rates():
    from bench.report import ratios

    rows = [_row("text", "rmserve", 8.0), _row("text", "ceiling", 10.0), _row("text", "naive", 16.0),
            _row("grpo", "rmserve", 20.0), _row("grpo", "naive", 10.0), _row("grpo", "ceiling", 12.5),
            _row("grpo", "rmserve-no-share", 14.0), _row("grpo", "ceiling-share", 40.0),
            _row("image", "rmserve", 7.9), {**_row("image", "ceiling", 10.0), "error": "died"}]
    got = {(r["workload"], r["ratio"]): r for r in ratios({"rows": rows})}
    expect = {  # (value, ok): goals 0.8 (vs ceiling), 2.0 / 1.6 / 1.5 (GRPO), none for naive on single samples
        ("text", "rmserve / ceiling"): (0.8, True),  # exactly at the goal passes
        ("text", "rmserve / naive"): (0.5, None),
        ("grpo", "rmserve / naive"): (2.0, True),
        ("grpo", "rmserve / ceiling"): (1.6, True),
        ("grpo", "rmserve / rmserve-no-share"): (20 / 14, False),  # 1.43 < 1.5
        ("grpo", "rmserve / ceiling-share"): (0.5, None),
        ("image", "rmserve / ceiling"): (None, None),  # the ceiling failed: no value, no verdict
        ("image", "rmserve / naive"): (None, None),
    }
    assert set(got) == set(expect)
    for key, (value, ok) in expect.items():
        assert got[key]["value"] == (pytest.approx(value) if value is not None else None), key
        assert got[key]["ok"] is ok, key


def test_repeated_rounds_give_the_median_of_same_round_ratios():
    """--repeat: a round's numerator is only ever divided by the same round's denominator."""
    from bench.report import markdown, ratios, table

    rows = [_row("text", "rmserve", 9.0, round=0), _row("text", "ceiling", 10.0, round=0),
            _row("text", "rmserve", 8.0, round=1), _row("text", "ceiling", 8.0, round=1),
            _row("text", "rmserve", 7.0, round=2), _row("text", "ceiling", 7.5, round=2),
            {**_row("text", "ceiling", 1.0, round=3), "error": "died"}, _row("text", "rmserve", 1.0, round=3)]
    (got,) = [r for r in ratios({"rows": rows}) if r["ratio"] == "rmserve / ceiling"]
    assert got["rounds"] == pytest.approx([0.9, 1.0, 7 / 7.5])  # round 3's ceiling failed: no ratio from it
    assert got["value"] == pytest.approx(7 / 7.5) and got["ok"] is True  # the median, not 24 / 25.5 or a mean
    assert "(round 2)" in table({"rows": rows})
    results = {"rows": rows}
    assert "median of 3 rounds: 0.90, 1.00, 0.93" in "".join(
        line for line in _ratio_lines(markdown, results) if "rmserve / ceiling" in line)


def _ratio_lines(markdown, results):
    full = {"preset": "tiny", "command": "x", "machine": {"cpu": "c", "cores": 2, "memory_gib": 1, "platform": "p",
            "python": "3", "torch": "t", "transformers": "t", "date": "d"},
            "load_average": {"start": [0, 0, 0], "end": [0, 0, 0]}, "model": {"name": "m", "params": 1e6,
            "vision_params": 1e5, "dtype": "float32"}, "threads": 2, "concurrency": 64, "server_max_batch_size": 32,
            "server_max_wait_ms": 5.0, "server_args": [], "group_size": 8, "wall_s": 60, "tokens": {},
            "sweeps": {}, "soak": None, "notes": [], "latency": [], **results}
    from bench.report import ratios

    full["ratios"] = ratios(full)
    return markdown(full).splitlines()


def test_latency_bound_on_known_sweeps():
    from bench.report import latency_checks

    sweeps = {"text/ceiling": {"1": {"batch_ms": 10.0}, "16": {"batch_ms": 40.0}, "64": {"batch_ms": 500.0}}}
    results = {"rows": [_row("text", "rmserve", 5.0, p99_ms=134.0, max_batch_size=32, max_wait_ms=5.0),
                        _row("text", "rmserve-slow", 5.0, p99_ms=136.0, max_batch_size=32, max_wait_ms=5.0),
                        _row("text", "naive", 5.0, p99_ms=999.0)],
               "sweeps": sweeps, "server_max_batch_size": 32, "server_max_wait_ms": 5.0}
    checks = {c["system"]: c for c in latency_checks(results)}
    assert set(checks) == {"rmserve", "rmserve-slow"}  # only rmserve rows have the bound
    # 3 x (max wait 5 + one batch at the largest swept size <= 32, i.e. 16: 40 ms) = 135 ms
    assert checks["rmserve"]["bound_ms"] == 135.0 and checks["rmserve"]["batch_size"] == 16
    assert checks["rmserve"]["ok"] is True and checks["rmserve-slow"]["ok"] is False


def test_soak_verdict_discounts_only_the_bounded_caches():
    from bench.report import soak_verdict

    first = {"responses": 100, "peak_rss_mib": 400.0, "rss_end_mib": 390.0, "cache_mib": 10.0}
    timeline = [(t, 380.0 + t) for t in range(9)]
    flat = soak_verdict(first, {"responses": 200, "peak_rss_mib": 470.0, "rss_end_mib": 460.0, "cache_mib": 60.0},
                        timeline, timeline)
    # grew 70 MiB, 50 of them the caches: 20 outside them, within max(32, 5% of 400) = 32
    assert (flat["growth_mib"], flat["cache_growth_mib"], flat["growth_excl_caches_mib"]) == (70.0, 50.0, 20.0)
    assert flat["tolerance_mib"] == 32.0 and flat["flat"] is True
    assert flat["responses"] == [100, 200] and flat["median_rss_mib"] == [384.0, 387.0]
    leak = soak_verdict(first, {"responses": 200, "peak_rss_mib": 470.0, "rss_end_mib": 460.0, "cache_mib": 20.0},
                        timeline, timeline)
    assert leak["growth_excl_caches_mib"] == 60.0 and leak["flat"] is False  # the same growth, not the caches
    big = {**first, "peak_rss_mib": 2000.0}
    assert soak_verdict(big, {**big, "peak_rss_mib": 2090.0}, timeline, timeline)["flat"] is True  # 90 <= 5%


def test_the_vllm_comparison_judges_its_goals_and_compares_rewards():
    from bench.vllm_compare import Compare, parse_args

    compare = object.__new__(Compare)  # the bookkeeping only: no model, no vLLM
    compare.args, compare.workloads, compare.rows = parse_args(["--prefix-caching", "on"]), {"text": None}, []
    rates = {"vllm-server": 5.0, "rmserve-vllm": 5.5, "rmserve-vllm-batch": 5.0, "vllm-offline": 6.0,
             "rmserve-hf": 7.0, "hf-ceiling": 9.0}
    for system, rate in rates.items():
        rewards = None if system == "vllm-server" else [0.5 + (0.25 if system == "vllm-offline" else 0.0)] * 4
        compare.add(system, "text", True, 320 / rate, 320, {}, rewards)
    ratios = {r["ratio"]: r for r in compare.ratios()}
    assert ratios["rmserve-vllm / vllm-server"]["value"] == pytest.approx(1.1)
    assert ratios["rmserve-vllm / vllm-server"]["verdict"] == "PASS"
    assert ratios["rmserve-vllm / vllm-offline"]["verdict"] == "FAIL"  # 0.92 < 0.97
    assert ratios["rmserve-hf / hf-ceiling"]["verdict"] == "FAIL" and ratios["rmserve-vllm / rmserve-vllm-batch"]
    compare.check_rewards()
    diffs = {r["system"]: r.get("max_reward_diff_vs_rmserve_hf") for r in compare.rows}
    assert diffs["vllm-offline"] == pytest.approx(0.25) and diffs["rmserve-vllm"] == 0.0
    assert diffs["vllm-server"] is None  # states only: no reward to compare


def test_every_vllm_system_gets_the_same_step_budget(tmp_path):
    """vLLM's defaults differ by caller (its server: half the tokens of its LLM class on CPU), so the
    comparison sets them for all: the server's flags, rmserve's --vllm-* flags and the offline LLM's kwargs."""
    from types import SimpleNamespace

    from bench.vllm_compare import Compare, parse_args

    compare = object.__new__(Compare)
    compare.args = parse_args(["--max-num-batched-tokens", "3000", "--max-num-seqs", "77"])
    compare.model_dir, compare.log_dir, compare.encoder = str(tmp_path), str(tmp_path), SimpleNamespace(max_length=64)
    engine = compare.engine_settings(True)
    assert (engine["max_num_batched_tokens"], engine["max_num_seqs"]) == (3000, 77)

    def flag(argv, name):
        return argv[argv.index(name) + 1]

    server = compare.server("vllm-server", True).argv
    assert (flag(server, "--max-num-batched-tokens"), flag(server, "--max-num-seqs")) == ("3000", "77")
    for system in ("rmserve-vllm", "rmserve-vllm-batch"):
        argv = compare.server(system, True).argv
        assert (flag(argv, "--vllm-max-num-batched-tokens"), flag(argv, "--vllm-max-num-seqs")) == ("3000", "77")
    assert parse_args([]).max_num_batched_tokens == 4096 and parse_args([]).max_num_seqs == 256


def test_forward_busy_reports_a_row_per_round_from_a_real_server(capsys):
    from bench.forward_busy import main

    assert main(["--preset", "tiny", "--workloads", "text,grpo", "--responses", "16", "--rounds", "1",
                 "--threads", "1"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| text") or line.startswith("| grpo")]
    assert [r[0].strip() for r in rows] == ["text", "grpo"]
    for row in rows:
        rate, busy, ms = float(row[2]), float(row[4]), float(row[5])
        assert rate > 0 and 0 < busy <= 1.0 and ms > 0
        assert float(row[6]) >= 0 and float(row[7]) >= 0  # page faults, forward sleeps per response
        assert float(row[8].split(",")[0]) > 0  # the busiest thread did work


def test_contention_measures_the_ceiling_alone_and_beside_both_burners(capsys):
    from bench.contention import main

    assert main(["--preset", "tiny", "--responses", "16", "--rounds", "1", "--threads", "1"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| alone") or line.startswith("| burner")}
    assert list(rows) == ["alone", "burner thread", "burner process"]
    assert all(float(r[2]) > 0 for r in rows.values())
    assert rows["alone"][3].strip() == "+0.0%"


def test_encode_cost_reports_a_row_per_workload(capsys):
    from bench.encode_cost import main

    assert main(["--preset", "tiny", "--workloads", "text,image", "--items", "8"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| text") or line.startswith("| image")]
    assert [r[0].strip() for r in rows] == ["text", "image"] and all(float(r[1]) > 0 for r in rows)


def test_composition_replays_sorted_and_arrival_batches_with_equal_rewards(capsys):
    from bench.composition import arrival_windows, call_sized_batches, main

    assert arrival_windows(5, 2) == [[0, 1], [2, 3], [4]]
    lengths = [100, 10, 98, 11, 101, 12, 99, 9]
    batches = call_sized_batches(lengths, in_flight=8, call_tokens=420, max_batch_size=32)
    assert sorted(lengths[i] for i in batches[0]) == [98, 99, 100, 101]  # the oldest and its neighbours
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(max(lengths[i] for i in b) * len(b) <= 420 for b in batches)
    assert main(["--preset", "tiny", "--responses", "16", "--rounds", "1", "--threads", "1", "--window", "5",
                 "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("max abs reward diff between the plans ")[1].split()[0])
    assert diff < 1e-5, "the same items must score the same in either plan"
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ceiling") or
            line.startswith("| server-like") or line.startswith("| call-sized")]
    assert len(rows) == 3
    assert float(rows[0][1]) >= 1.0 and float(rows[1][1]) >= 1.0 and all(int(r[2]) > 0 for r in rows)
    assert rows[0][5].strip() == "1.000"


def test_the_vllm_comparison_judges_the_median_of_its_rounds():
    from bench.vllm_compare import Compare, parse_args
    from bench.vllm_report import pivot

    compare = object.__new__(Compare)
    compare.args, compare.workloads, compare.rows = parse_args(["--repeat", "3"]), {"text": None}, []
    assert compare.args.repeat == 3
    ours = [5.5, 4.5, 5.25]  # ratios 1.10, 0.90, 1.05: the median passes though one round fails
    for round_no in (1, 2, 3):
        compare.round_no = round_no
        compare.add("vllm-server", "text", True, 1.0, 5.0, {}, None)
        compare.add("rmserve-vllm", "text", True, 1.0, ours[round_no - 1], {}, [0.5] * 2)
        compare.add("rmserve-hf", "text", True, 1.0, 7.0, {}, [0.5 + 0.1 * round_no] * 2)
    ratio = next(r for r in compare.ratios() if r["ratio"] == "rmserve-vllm / vllm-server")
    assert ratio["rounds"] == pytest.approx([1.1, 0.9, 1.05]) and ratio["value"] == pytest.approx(1.05)
    assert ratio["verdict"] == "PASS"
    compare.check_rewards()  # each round against its own rmserve-hf row
    diffs = [r.get("max_reward_diff_vs_rmserve_hf") for r in compare.rows if r["system"] == "rmserve-vllm"]
    assert diffs == pytest.approx([0.1, 0.2, 0.3])
    cells = pivot({"systems": ["vllm-server", "rmserve-vllm"], "rows": compare.rows})
    assert "| 5.25 (5.50, 4.50, 5.25) |" in cells[2]
