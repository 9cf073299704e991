"""``make bench-floor`` and ``make bench-grpo-latency``: the per-request overhead regime, in one run each.

    python -m bench.floor floor     # floor vs rmserve vs rmserve --max-batch-size 1, 1/8/64 in flight
    python -m bench.floor latency   # GRPO with images, G=8 and G=16, REST and gRPC: r/s, p50/p95/p99

Both use the default model (the tiny demo checkpoint unless ``--model``) and GRPO-shaped load: each
request is one response with its group's 224x224 PNG inline; a group's G requests go out together
(bench/client.py). ``floor`` starts three servers at once: bench/floor_server.py (same JSON, same
image decoding, no model), ``rmserve serve`` and ``rmserve serve --max-batch-size 1``; for each
in-flight count it measures them in rounds, alternating the order, each round on fresh groups (a
trainer's next step has new prompts). Ratios come from the same rounds, so machine noise that is
slower than a round hits every system alike. ``latency`` starts one rmserve with a gRPC port and
drives it with the REST and the gRPC driver (bench/grpc_client.py), alternating, per G.
Every result records the load average beside it (a shared machine shows up there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import sys
import time

from .client import LoadResult, drive, split_groups
from .grpc_client import drive_grpc, requests_for
from .run import metric_delta, scrape_metrics
from .servers import REPO, ServerProcess, cpu_seconds, free_port, machine_info, thread_env
from .workloads import WorkloadFactory

FLOOR_GOAL, BATCHING_GOAL = 0.6, 1.0


def log(message: str) -> None:
    print(f"[bench-floor {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rmserve_argv(model: str, *extra: str) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "rmserve")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "rmserve"]
    return [*cmd, "serve", "--model", model, "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
            *extra]


def measure(server: ServerProcess, groups, concurrency: int, *, grpc_target: str | None = None) -> dict:
    """One load; throughput, latency percentiles and the server's CPU per response."""
    before = scrape_metrics(server.url)
    cpu0, load0, client0 = cpu_seconds(server.pid), os.getloadavg()[0], time.process_time()
    if grpc_target is None:
        result: LoadResult = asyncio.run(drive(server.url, groups, concurrency=concurrency))
    else:
        result = asyncio.run(drive_grpc(grpc_target, groups, concurrency=concurrency))
    cpu1, client1 = cpu_seconds(server.pid), time.process_time()
    after = scrape_metrics(server.url)
    batches = metric_delta(before, after, "rmserve_batch_size_count")
    items = metric_delta(before, after, "rmserve_batch_size_sum")
    return {
        "batches": batches, "batch_items": items,
        "responses": result.responses, "ok": result.ok, "errors": len(result.errors), "seconds": result.seconds,
        "responses_per_s": result.responses_per_s, "p50_ms": result.percentile(50),
        "p95_ms": result.percentile(95), "p99_ms": result.percentile(99),
        "server_cpu_ms_per_response": (cpu1 - cpu0) / result.ok * 1000 if result.ok and cpu0 is not None else None,
        "client_cpu_ms_per_response": (client1 - client0) / result.ok * 1000 if result.ok else None,
        "load_average_1m": [load0, os.getloadavg()[0]], "first_errors": result.errors[:3],
        "latencies_ms": result.latencies_ms,
    }


def merge(runs: list[dict]) -> dict:
    """Rounds of one system pooled: total responses over total seconds, percentiles over all latencies."""
    from .client import percentile

    lat = [x for r in runs for x in r["latencies_ms"]]
    ok, seconds = sum(r["ok"] for r in runs), sum(r["seconds"] for r in runs)
    cpu = [r["server_cpu_ms_per_response"] for r in runs if r["server_cpu_ms_per_response"] is not None]
    client = [r["client_cpu_ms_per_response"] for r in runs if r["client_cpu_ms_per_response"] is not None]
    batches = sum(r["batches"] for r in runs)
    return {
        "mean_batch": sum(r["batch_items"] for r in runs) / batches if batches else None,
        "responses": sum(r["responses"] for r in runs), "ok": ok, "errors": sum(r["errors"] for r in runs),
        "seconds": seconds, "responses_per_s": ok / seconds if seconds else 0.0,
        "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "p99_ms": percentile(lat, 99),
        "server_cpu_ms_per_response": sum(cpu) / len(cpu) if cpu else None,
        "client_cpu_ms_per_response": sum(client) / len(client) if client else None,
        "rounds_responses_per_s": [r["responses_per_s"] for r in runs],
        "load_average_1m": [x for r in runs for x in r["load_average_1m"]],
        "first_errors": [e for r in runs for e in r["first_errors"]][:3],
    }


class Run:
    def __init__(self, args: argparse.Namespace):
        from transformers import AutoTokenizer

        from rmserve.models import default_model_path

        self.args = args
        self.model = os.path.abspath(args.model or default_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        self.out = os.path.abspath(args.out)
        self.seed = 0
        self.failed = False

    def groups(self, group_size: int, responses: int) -> list[list[dict]]:
        """Fresh GRPO groups (never sent before in this run): new prompts and images each call."""
        factory = WorkloadFactory(self.tokenizer, group_size=group_size)
        self.seed += 1
        return factory.build("grpo", responses, seed=self.seed).groups

    def server(self, stack: contextlib.ExitStack, name: str, argv: list[str]) -> ServerProcess:
        server = ServerProcess(name, argv, os.path.join(self.out, "logs", f"{name}.log"),
                               env=thread_env(self.args.threads))
        stack.callback(server.stop)
        return server.launch()

    def warm(self, servers: dict[str, ServerProcess], group_size: int) -> None:
        for name, server in servers.items():
            server.wait_ready()
            log(f"{name} ready in {server.started_s:.1f} s (pid {server.pid}): {shlex.join(server.command)}")
            warm = [[json.dumps({"items": [it]}).encode() for it in g] for g in self.groups(group_size, 64)]
            asyncio.run(drive(server.url, warm, concurrency=64))

    # ── floor: rmserve vs the no-model floor, and batching vs batch size 1 ─────────────────────────

    def floor(self) -> dict:
        g = self.args.group_size
        systems = {
            "floor": [sys.executable, "-m", "bench.floor_server", "--port", "{port}"],
            "rmserve": rmserve_argv(self.model, *self.args.server_arg),
            "rmserve-bs1": rmserve_argv(self.model, *self.args.server_arg, "--max-batch-size", "1"),
        }
        rows: dict[str, dict[str, dict]] = {}
        with contextlib.ExitStack() as stack:
            servers = {name: self.server(stack, name, argv) for name, argv in systems.items()}
            self.warm(servers, g)
            for conc in self.args.concurrency:
                n = self.args.responses * max(1, conc // 8) if conc > 1 else max(g * 2, self.args.responses // 2)
                runs: dict[str, list[dict]] = {name: [] for name in servers}
                for round_ in range(self.args.rounds):
                    order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                    for name in order:
                        items = split_groups(self.groups(g, n), conc)
                        bodies = [[json.dumps({"items": [it]}).encode() for it in grp] for grp in items]
                        row = measure(servers[name], bodies, conc)
                        runs[name].append(row)
                        log(f"{conc:>3} in flight, round {round_ + 1}, {name}: {row['responses_per_s']:.1f} r/s, "
                            f"p50 {row['p50_ms']:.0f} ms, {row['server_cpu_ms_per_response']:.2f} ms CPU/response, "
                            f"client {row['client_cpu_ms_per_response']:.2f} ms, {row['errors']} errors, "
                            f"load {row['load_average_1m'][0]:.1f}")
                        self.failed |= row["errors"] > 0
                rows[str(conc)] = {name: merge(r) for name, r in runs.items()}
        ratios = {}
        for conc, by in rows.items():
            ratios[conc] = {
                "rmserve_over_floor": by["rmserve"]["responses_per_s"] / by["floor"]["responses_per_s"],
                "batching_over_bs1": by["rmserve"]["responses_per_s"] / by["rmserve-bs1"]["responses_per_s"],
                "cpu_ms_rmserve_over_floor": (by["rmserve"]["server_cpu_ms_per_response"]
                                              / by["floor"]["server_cpu_ms_per_response"]),
            }
        return {"rows": rows, "ratios": ratios, "systems": {k: shlex.join(v) for k, v in systems.items()}}

    # ── latency: GRPO with images, G=8 and G=16, REST and gRPC ───────────────────────────────────

    def latency(self) -> dict:
        grpc_port = free_port()
        argv = rmserve_argv(self.model, *self.args.server_arg, "--grpc-port", str(grpc_port))
        rows: dict[str, dict[str, dict]] = {}
        conc = max(self.args.concurrency)
        with contextlib.ExitStack() as stack:
            server = self.server(stack, "rmserve-grpc", argv)
            self.warm({"rmserve-grpc": server}, 8)
            target = f"127.0.0.1:{grpc_port}"
            for g in self.args.latency_group_sizes:
                runs: dict[str, list[dict]] = {"REST": [], "gRPC": []}
                for round_ in range(self.args.rounds):
                    order = ["REST", "gRPC"] if round_ % 2 == 0 else ["gRPC", "REST"]
                    for proto in order:
                        groups = self.groups(g, self.args.responses * max(1, conc // 8))
                        if proto == "REST":
                            bodies = [[json.dumps({"items": [it]}).encode() for it in grp] for grp in groups]
                            row = measure(server, bodies, conc)
                        else:
                            row = measure(server, requests_for(groups), conc, grpc_target=target)
                        runs[proto].append(row)
                        log(f"G={g} {proto} round {round_ + 1}: {row['responses_per_s']:.1f} r/s, "
                            f"p50 {row['p50_ms']:.0f} / p95 {row['p95_ms']:.0f} / p99 {row['p99_ms']:.0f} ms, "
                            f"{row['errors']} errors, load {row['load_average_1m'][0]:.1f}")
                        self.failed |= row["errors"] > 0
                rows[f"G={g}"] = {proto: merge(r) for proto, r in runs.items()}
        return {"rows": rows, "concurrency": conc, "system": shlex.join(argv)}


def markdown(results: dict) -> str:
    lines = [f"# {results['part']} ({results['machine']['date']})", "",
             f"Command: `{results['command']}`  ", f"Model: `{results['model']}`; torch threads per server: "
             f"{results['threads']}; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores.  ",
             f"Load average (1 min) at start / end: {results['load_average'][0]:.1f} / "
             f"{results['load_average'][1]:.1f} (a shared machine: absolute rates move with it, ratios within a "
             "round much less).", ""]
    if results["part"] == "floor":
        f = results["floor"]
        lines += ["| in flight | system | responses/s | p50 ms | p99 ms | server CPU ms/response "
                  "| client CPU ms/response | mean batch | per-round r/s |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for conc, by in f["rows"].items():
            for name, row in by.items():
                rounds = ", ".join(f"{x:.1f}" for x in row["rounds_responses_per_s"])
                batch = "-" if row["mean_batch"] is None else f"{row['mean_batch']:.1f}"
                lines.append(f"| {conc} | {name} | {row['responses_per_s']:.1f} | {row['p50_ms']:.0f} | "
                             f"{row['p99_ms']:.0f} | {row['server_cpu_ms_per_response']:.2f} | "
                             f"{row['client_cpu_ms_per_response']:.2f} | {batch} | {rounds} |")
        lines += ["", "| in flight | rmserve / floor | batching / batch size 1 | CPU per response, rmserve / floor |",
                  "|---:|---:|---:|---:|"]
        for conc, r in f["ratios"].items():
            lines.append(f"| {conc} | {r['rmserve_over_floor']:.2f} | {r['batching_over_bs1']:.2f} | "
                         f"{r['cpu_ms_rmserve_over_floor']:.2f} |")
        top = f["ratios"][max(f["ratios"], key=int)]
        lines += ["", f"Goals at {max(f['ratios'], key=int)} in flight: rmserve / floor >= {FLOOR_GOAL} "
                  f"({'PASS' if top['rmserve_over_floor'] >= FLOOR_GOAL else 'FAIL'}: "
                  f"{top['rmserve_over_floor']:.2f}), batching / batch size 1 >= {BATCHING_GOAL} "
                  f"({'PASS' if top['batching_over_bs1'] >= BATCHING_GOAL else 'FAIL'}: "
                  f"{top['batching_over_bs1']:.2f})."]
    else:
        lat = results["latency"]
        lines += [f"GRPO with a 224x224 PNG inline per request, one response per request, {lat['concurrency']} in "
                  "flight, a group's G requests sent together.", "",
                  "| workload | protocol | responses/s | p50 ms | p95 ms | p99 ms | server CPU ms/response |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for g, by in lat["rows"].items():
            for proto, row in by.items():
                lines.append(f"| GRPO {g} | {proto} | {row['responses_per_s']:.1f} | {row['p50_ms']:.0f} | "
                             f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['server_cpu_ms_per_response']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("part", choices=("floor", "latency"))
    parser.add_argument("--model", help="rmserve checkpoint (default: the default model)")
    parser.add_argument("--out", help="results folder (default: bench/results/floor or bench/results/latency)")
    parser.add_argument("--concurrency", default="1,8,64", help="in-flight counts (floor; latency uses the largest)")
    parser.add_argument("--group-size", type=int, default=8, help="GRPO G for the floor part")
    parser.add_argument("--latency-group-sizes", default="8,16", help="GRPO G values for the latency part")
    parser.add_argument("--responses", type=int, default=64, help="responses per round per 8 in flight")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per measurement (order alternates)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per server (default 1: on a shared "
                        "or 2-core machine more intra-op threads than cores make every row noise)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument(s) for every `rmserve serve` (repeatable; shell-split)")
    args = parser.parse_args(argv)
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.latency_group_sizes = [int(x) for x in args.latency_group_sizes.split(",") if x.strip()]
    args.server_arg = [tok for arg in args.server_arg for tok in shlex.split(arg)]
    args.out = args.out or os.path.join(REPO, "bench", "results", args.part)
    if args.part == "latency" and max(args.latency_group_sizes) > max(args.concurrency):
        parser.error("a GRPO group must fit in flight: --latency-group-sizes <= the largest --concurrency")
    args.command_line = shlex.join(["python", "-m", "bench.floor", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args)
    started, load0 = time.time(), os.getloadavg()[0]
    part = run.floor() if args.part == "floor" else run.latency()
    results = {"part": args.part, "command": args.command_line, "model": run.model, "threads": args.threads,
               "machine": machine_info(), "load_average": [load0, os.getloadavg()[0]], args.part: part,
               "wall_s": time.time() - started}
    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = markdown(results)
    with open(os.path.join(run.out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {run.out}/results.{{json,md}} in {results['wall_s']:.0f} s")
    return 1 if run.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
