"""``make bench-cpu``: CPU milliseconds per response, per server and per server thread, under GRPO load.

    python -m bench.cpu_profile [--concurrency 64] [--responses 512] [--rounds 2] [--server-arg=...]

Starts the floor (bench/floor_server.py) and ``rmserve serve`` (the default model, 1 torch thread),
warms both, then drives each with the same kind of load (fresh GRPO groups, G=8, 224x224 PNG inline,
one response per request) in alternating rounds and reads ``/proc/PID/stat`` (the whole process) and
``/proc/PID/task/*/stat`` (each thread) before and after. CPU time per response is the number that a
shared machine moves least (wall-clock rates move with the load; CPU seconds mostly do not), so
``floor CPU / rmserve CPU`` is the contention-robust form of ``rmserve / floor`` throughput.

Thread names (event loop, preprocessing pool, batcher, worker) come from ``py-spy dump`` when
``py-spy`` is installed (``pip install py-spy``; it needs ptrace rights); without it threads are
listed by id. ``--py-spy-record FILE`` also samples the rmserve thread that holds the GIL during
its first round (``py-spy record --gil --format raw``), and ``--categories FILE`` prints the share of
those samples per request stage (HTTP, JSON, tokenization, forward, ...). Read those with care: on a
busy machine py-spy's idle detection and GIL attribution were found unreliable (bench/README.md);
the per-thread CPU from /proc is the number to trust.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import time

from .client import drive, split_groups
from .floor import rmserve_argv
from .servers import ServerProcess, cpu_seconds, thread_env
from .workloads import WorkloadFactory

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Request stages for GIL samples: the innermost frame that matches a rule names the sample's stage.
STAGES = [
    ("forward (model)", ["score_batch", "pooled_hidden", "torch/nn/modules", "modeling_qwen"]),
    ("M-RoPE positions", ["item_positions", "get_rope_index"]),
    ("image processor", ["image_processing", "image_transforms", "processing_utils", "processors.py"]),
    ("tokenization + chat template", ["tokenization_", "tokenizers", "template.py", "jinja2", "chat_template"]),
    ("base64 + image decode + image cache", ["api/images.py", "PIL/", "base64"]),
    ("JSON parse + pydantic", ["model_validate", "model_dump", "pydantic/", "json/", "request_body_to_args",
                               "_validate_value", "serialize_response", "jsonable_encoder"]),
    ("engine: queue, batcher, handoffs", ["rmserve/engine/"]),
    ("HTTP (h11) + ASGI/FastAPI + middleware", ["h11/", "uvicorn/", "starlette/", "fastapi/", "server/middleware.py",
                                                "server/rest/", "anyio/"]),
    ("service pipeline (select, validate, jobs, build)", ["rmserve/api/", "rmserve/rewards", "rmserve/safety"]),
    ("metrics, logging", ["prometheus", "server/metrics.py", "logging/"]),
    ("asyncio, thread pools", ["asyncio/", "concurrent/futures", "threading.py", "queue.py", "selectors.py"]),
]
IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "_worker (concurrent/futures/thread.py:81)")


def _thread_files(pid: int, name: str) -> dict[int, str]:
    """``/proc/PID/task/TID/<name>`` of each thread of ``pid``, by thread id (threads that ended are skipped)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                out[int(tid)] = f.read()
        except OSError:
            continue
    return out


def _thread_stats(pid: int) -> dict[int, list[str]]:
    """``/proc/PID/task/TID/stat`` fields after the command name, by thread id."""
    return {tid: text.rsplit(")", 1)[1].split() for tid, text in _thread_files(pid, "stat").items()}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by thread id."""
    return {tid: (int(f[11]) + int(f[12])) / _TICK for tid, f in _thread_stats(pid).items()}


def thread_minor_faults(pid: int) -> dict[int, int]:
    """Minor page faults of each thread of ``pid``: pages the kernel had to map (and zero) on first touch."""
    return {tid: int(f[7]) for tid, f in _thread_stats(pid).items()}


def thread_sleeps(pid: int) -> dict[int, int]:
    """Voluntary context switches of each thread of ``pid``: times it blocked (a futex, a lock, I/O)."""
    key = "\nvoluntary_ctxt_switches:"  # the newline keeps it from matching nonvoluntary_ctxt_switches
    return {tid: int(text.split(key, 1)[1].split()[0]) for tid, text in _thread_files(pid, "status").items()
            if key in text}


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by OS thread id (py-spy dump), pool threads folded into their pool's name."""
    spy = shutil.which("py-spy")
    if spy is None:
        return {}
    done = subprocess.run([spy, "dump", "--json", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    try:
        threads = json.loads(done.stdout)
    except ValueError:
        return {}
    names = {}
    for t in threads:
        name = t.get("thread_name") or "?"
        names[t["os_thread_id"]] = name.rsplit("_", 1)[0] if name.startswith(("rmserve-pre", "asyncio")) else name
    return names


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, keys in STAGES:
            if any(k in frame for k in keys):
                return stage
    return "other"


def stage_shares(path: str) -> dict[str, float]:
    """Share of py-spy's raw GIL samples per stage (idle leaves dropped)."""
    counts: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, n = line.rsplit(" ", 1)
            frames = stack.split(";")
            if not any(idle in frames[-1] for idle in IDLE_LEAVES):
                counts[stage_of(frames[1:])] += int(n)
    total = sum(counts.values()) or 1
    return {stage: n / total for stage, n in counts.most_common()}


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from rmserve.models import default_model_path

    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--responses", type=int, default=512, help="responses per round per system")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `rmserve serve` argument(s)")
    parser.add_argument("--baseline-src", metavar="DIR",
                        help="also run `rmserve serve` from this source tree (e.g. `git archive main | tar -x -C DIR`) "
                        "as rmserve-baseline, in the same rounds")
    parser.add_argument("--py-spy-record", metavar="FILE", help="py-spy --gil raw samples of rmserve's first round")
    parser.add_argument("--categories", metavar="FILE", nargs="*", default=[],
                        help="only print the stage shares of these py-spy raw files (no servers started)")
    args = parser.parse_args(argv)
    if args.categories:
        shares = [stage_shares(p) for p in args.categories]
        print("| stage | " + " | ".join(args.categories) + " |\n|---|" + "---:|" * len(shares))
        for stage in sorted({s for sh in shares for s in sh}, key=lambda s: -shares[0].get(s, 0)):
            print(f"| {stage} | " + " | ".join(f"{100 * sh.get(stage, 0):.1f}%" for sh in shares) + " |")
        return 0
    model = os.path.abspath(default_model_path())
    factory = WorkloadFactory(AutoTokenizer.from_pretrained(model), group_size=8)
    seed = [1000]

    def bodies(n: int) -> list[list[bytes]]:
        seed[0] += 1
        groups = split_groups(factory.build("grpo", n, seed=seed[0]).groups, args.concurrency)
        return [[json.dumps({"items": [it]}).encode() for it in g] for g in groups]

    extra = [tok for a in args.server_arg for tok in a.split()]
    systems = {"floor": [sys.executable, "-m", "bench.floor_server", "--port", "{port}"],
               "rmserve": rmserve_argv(model, *extra)}
    envs = {name: thread_env(1) for name in systems}
    if args.baseline_src:
        systems["rmserve-baseline"] = systems["rmserve"]
        src = os.path.abspath(args.baseline_src)
        path = os.pathsep.join([src, os.path.join(src, "clients", "python")])
        envs["rmserve-baseline"] = {**thread_env(1), "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    servers = {name: ServerProcess(name, argv, os.path.join("/tmp", f"bench-cpu-{name}.log"), env=envs[name])
               for name, argv in systems.items()}
    rows: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.launch()
        for server in servers.values():
            server.wait_ready()
            asyncio.run(drive(server.url, bodies(128), concurrency=args.concurrency))
        for r in range(args.rounds):
            for name in (list(servers) if r % 2 == 0 else list(reversed(servers))):
                server, load = servers[name], bodies(args.responses)
                spy = None
                if args.py_spy_record and name == "rmserve" and r == 0 and shutil.which("py-spy"):
                    spy = subprocess.Popen([shutil.which("py-spy"), "record", "--pid", str(server.pid), "--rate", "250",
                                            "--gil", "--threads", "--format", "raw", "-o", args.py_spy_record],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                threads0, cpu0 = thread_cpu(server.pid), cpu_seconds(server.pid)
                result = asyncio.run(drive(server.url, load, concurrency=args.concurrency))
                threads1, cpu1 = thread_cpu(server.pid), cpu_seconds(server.pid)
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(60)
                names = thread_names(server.pid)
                per: dict[str, float] = collections.defaultdict(float)
                for tid, seconds in threads1.items():
                    used = seconds - threads0.get(tid, 0.0)
                    per[names.get(tid, f"thread {tid}")] += used * 1000 / max(result.ok, 1)
                row = {"cpu_ms": (cpu1 - cpu0) * 1000 / max(result.ok, 1), "rps": result.responses_per_s,
                       "errors": len(result.errors), "load": os.getloadavg()[0],
                       "threads": {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.005}}
                rows[name].append(row)
                print(f"round {r + 1} {name}: {row['cpu_ms']:.2f} CPU ms/response, {row['rps']:.1f} r/s, "
                      f"{row['errors']} errors, load {row['load']:.1f}; by thread: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row["threads"].items()), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    mean = {name: sum(r["cpu_ms"] for r in rs) / len(rs) for name, rs in rows.items()}
    print(f"\nCPU ms/response (mean of {args.rounds} rounds, {args.concurrency} in flight, load average "
          f"{os.getloadavg()[0]:.1f}): floor {mean['floor']:.2f}, rmserve {mean['rmserve']:.2f}; "
          f"floor / rmserve = {mean['floor'] / mean['rmserve']:.3f}"
          + (f"; rmserve-baseline {mean['rmserve-baseline']:.2f} (floor / baseline = "
             f"{mean['floor'] / mean['rmserve-baseline']:.3f})" if "rmserve-baseline" in mean else ""))
    if args.py_spy_record and os.path.exists(args.py_spy_record):
        for stage, share in stage_shares(args.py_spy_record).items():
            print(f"  {stage}: {100 * share:.1f}% of GIL samples")
    return 1 if any(r["errors"] for rs in rows.values() for r in rs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
