"""The vLLM comparison (``make bench-vllm``): rmserve on vLLM against vLLM itself, on one text reward model.

    python -m bench.vllm_compare [--responses 320] [--concurrency 64] [--out bench/results/vllm-cpu]

Systems, every one fed the same token ids (rmserve's encoder makes them once; rmserve gets the texts that
encode to exactly those ids, the others the ids):
    vllm-server        vLLM's own OpenAI server, ``POST /pooling`` (task embed: the last token's state)
    rmserve-vllm       ``rmserve serve --backend vllm`` (per-item dispatch: each item to AsyncLLM at once)
    rmserve-vllm-batch the same with ``--dispatch batch`` (rmserve's batches, one vLLM submission each)
    rmserve-hf         ``rmserve serve`` on the transformers backend
    vllm-offline       ``LLM.encode`` over all items at once in a process of its own (bench/vllm_offline.py)
    hf-ceiling         transformers in-process, ``score_batch`` at the best batch size (bench/ceiling.py)
Workloads: ``text`` (single samples, one per request) and ``grpo_text`` (G responses sharing a prompt, a
group's requests sent together), each with prefix caching on and off (vLLM's ``enable_prefix_caching``;
rmserve-hf and the ceiling: ``--share-prefix``). Load: ``--concurrency`` requests in flight (bench/client.py).
Every vLLM engine gets equal settings (dtype, context length, prefix caching, eager mode, the step budget of
``--max-num-batched-tokens``/``--max-num-seqs``, the KV cache of VLLM_CPU_KVCACHE_SPACE, vLLM's default
OpenMP binding); the configurations run back to back in this one invocation, so ratios within a run compare
like with like on a shared machine. ``--repeat N`` runs the whole sequence N times: each round's ratios are
taken within that round, and the verdicts are on their medians (one run moves a vLLM row by ~5% here).
Results: ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.ceiling import encode_workload, sweep, to_score_item
from bench.client import RawHTTP, SendFailed, drive, drive_with
from bench.model import MODELS, ensure_model, load_in_process
from bench.servers import REPO, ServerProcess, machine_info, thread_env
from bench.workloads import TEXT_WORKLOADS, WorkloadFactory

# The vLLM systems back to back (the load on a shared machine drifts less between neighbours).
SYSTEMS = ("vllm-server", "rmserve-vllm", "rmserve-vllm-batch", "vllm-offline", "rmserve-hf", "hf-ceiling")
GOALS = {  # (numerator, denominator): goal, from issue #15 item 3
    ("rmserve-vllm", "vllm-server"): 1.0,
    ("rmserve-vllm", "vllm-offline"): 0.97,
    ("rmserve-hf", "hf-ceiling"): 0.9,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Compare:
    round_no = 1  # which --repeat round the rows being added belong to (1-based)

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.model_dir = args.model_dir or ensure_model(MODELS["text"])
        from rmserve.models import load_reward_model

        self.encoder = load_reward_model(self.model_dir, weights=False)
        factory = WorkloadFactory(self.encoder.tokenizer, group_size=args.group_size)
        self.workloads = {name: factory.build(name, args.responses, seed=args.seed) for name in TEXT_WORKLOADS}
        self.warm = factory.build("grpo_text", args.warmup, seed=args.seed + 1)
        self.ids = {name: [[self.encoder.encode(to_score_item(it)).input_ids for it in g] for g in w.groups]
                    for name, w in self.workloads.items()}
        self.warm_ids = [self.encoder.encode(to_score_item(it)).input_ids for it in self.warm.items]
        self.rows: list[dict] = []
        self.log_dir = tempfile.mkdtemp(prefix="rmserve-vllm-bench-")
        self.binding: list[str] = []

    # ── engine settings shared by every vLLM system ───────────────────────────────────────────
    def engine_settings(self, prefix: bool) -> dict:
        return {"dtype": "float32", "max_model_len": self.encoder.max_length, "enable_prefix_caching": prefix,
                "enforce_eager": self.args.enforce_eager, "max_num_batched_tokens": self.args.max_num_batched_tokens,
                "max_num_seqs": self.args.max_num_seqs}

    def vllm_env(self) -> dict[str, str]:
        return {**thread_env(self.args.threads), "VLLM_CPU_KVCACHE_SPACE": str(self.args.kv_cache_gib),
                "VLLM_LOGGING_LEVEL": "INFO"}

    # ── systems ────────────────────────────────────────────────────────────────────────────
    def server(self, system: str, prefix: bool) -> ServerProcess:
        log_path = os.path.join(self.log_dir, f"{system}-{'on' if prefix else 'off'}.log")
        py = sys.executable
        if system == "vllm-server":
            from rmserve.models.vllm_backend import stage_checkpoint

            stage = stage_checkpoint(self.model_dir)
            argv = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", stage, "--served-model-name", "rm",
                    "--host", "127.0.0.1", "--port", "{port}", "--runner", "pooling", "--convert", "embed",
                    "--pooler-config", json.dumps({"seq_pooling_type": "LAST", "use_activation": False}),
                    "--dtype", "float32", "--max-model-len", str(self.encoder.max_length),
                    "--enable-prefix-caching" if prefix else "--no-enable-prefix-caching"]
            argv += ["--enforce-eager"] if self.args.enforce_eager else []
            argv += ["--max-num-batched-tokens", str(self.args.max_num_batched_tokens),
                     "--max-num-seqs", str(self.args.max_num_seqs)]
            # rmserve's keep-alive (75 s) instead of vLLM's 5 s: a GRPO group waits for 8 free slots, and a
            # connection idle that long would be closed under the client's next request.
            env = {**self.vllm_env(), "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "75"}
            return ServerProcess(system, argv, log_path, env=env, ready_path="/health")
        argv = [py, "-m", "rmserve", "serve", "--model", self.model_dir, "--port", "{port}", "--log-level", "warning",
                "--request-timeout-s", "0"]
        if system == "rmserve-hf":
            argv += ["--share-prefix" if prefix else "--no-share-prefix"]
            return ServerProcess(system, argv, log_path, env=thread_env(self.args.threads))
        argv += ["--backend", "vllm", "--dispatch", "batch" if system == "rmserve-vllm-batch" else "per_item",
                 "--vllm-enable-prefix-caching" if prefix else "--no-vllm-enable-prefix-caching"]
        argv += ["--vllm-enforce-eager"] if self.args.enforce_eager else []
        argv += ["--vllm-max-num-batched-tokens", str(self.args.max_num_batched_tokens),
                 "--vllm-max-num-seqs", str(self.args.max_num_seqs)]
        return ServerProcess(system, argv, log_path, env=self.vllm_env())

    async def load_vllm_server(self, url: str, groups: list[list[list[int]]]):
        raw = RawHTTP(url, 1800.0)

        async def send(ids: list[int]):
            body = json.dumps({"model": "rm", "input": ids, "task": "embed", "use_activation": False}).encode()
            status, headers, content = await raw.post("/pooling", body)
            if status != 200:
                raise SendFailed(f"HTTP {status}: {content[:300].decode(errors='replace')}")
            state = json.loads(content)["data"][0]["data"]
            if len(state) != self.encoder.hidden_size:
                raise SendFailed(f"a pooled state of {len(state)} values, expected {self.encoder.hidden_size}")
            return float("nan"), headers  # the raw server has no reward head: states only

        try:
            return await drive_with(send, groups, concurrency=self.args.concurrency)
        finally:
            await raw.aclose()

    def run_server(self, system: str, prefix: bool) -> None:
        log(f"{system}, prefix caching {'on' if prefix else 'off'}: starting")
        with self.server(system, prefix) as server:
            log(f"{system}: ready after {server.started_s:.0f} s")
            self.note_binding(server.log_path)
            for name in ("warmup", *self.workloads):
                if system == "vllm-server":
                    groups = [[ids] for ids in self.warm_ids] if name == "warmup" else self.ids[name]
                    result = asyncio.run(self.load_vllm_server(server.url, groups))
                else:
                    work = self.warm if name == "warmup" else self.workloads[name]
                    result = asyncio.run(drive(server.url, work.bodies(), concurrency=self.args.concurrency,
                                               timeout_s=1800.0))
                if result.errors:
                    raise RuntimeError(f"{system} {name}: {len(result.errors)} errors, e.g. {result.errors[:2]}")
                if name != "warmup":
                    self.add(system, name, prefix, result.seconds, len(result.rewards), result.summary(),
                             [r for r in result.rewards if r == r] or None)

    def run_offline(self, prefix: bool) -> None:
        log(f"vllm-offline, prefix caching {'on' if prefix else 'off'}")
        job = {"model_dir": self.model_dir, "engine": self.engine_settings(prefix), "warmup": self.warm_ids,
               "workloads": {name: [x for g in groups for x in g] for name, groups in self.ids.items()}}
        job_path = os.path.join(self.log_dir, "offline-job.json")
        out_path = os.path.join(self.log_dir, "offline-out.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        log_path = os.path.join(self.log_dir, f"vllm-offline-{'on' if prefix else 'off'}.log")
        with open(log_path, "wb") as log_file:
            subprocess.run([sys.executable, "-m", "bench.vllm_offline", job_path, out_path], cwd=REPO, check=True,
                           env={**os.environ, **self.vllm_env()}, stdout=log_file, stderr=subprocess.STDOUT)
        self.note_binding(log_path)
        with open(out_path) as f:
            for name, res in json.load(f).items():
                self.add("vllm-offline", name, prefix, res["seconds"], res["responses"], {}, res["rewards"])

    def run_ceiling(self, prefix: bool) -> None:
        model = load_in_process(self.model_dir, self.args.threads)
        for name, work in self.workloads.items():
            share = prefix and name == "grpo_text"
            done = next((r for r in self.rows if (r["system"], r["workload"], r["round"])
                         == ("hf-ceiling", name, self.round_no)), None)
            if done is not None and not share and not done["shared"]:  # sharing only changes groups: reuse
                self.add("hf-ceiling", name, prefix, done["seconds"], done["responses"],
                         {k: done[k] for k in ("batch_size", "sweep", "shared")}, done["_rewards"])
                continue
            groups = encode_workload(model, work)
            runs = sweep(model, groups, list(self.args.batch_sizes), share=share)
            best = max(runs.values(), key=lambda r: r.responses_per_s)
            log(f"hf-ceiling {name} share={share}: " + ", ".join(f"{bs}: {r.responses_per_s:.2f}"
                                                              for bs, r in runs.items()))
            self.add("hf-ceiling", name, prefix, best.seconds, best.responses,
                     {"batch_size": best.batch_size, "sweep": {bs: r.responses_per_s for bs, r in runs.items()},
                      "shared": share},
                     best.rewards)

    def note_binding(self, log_path: str) -> None:
        with contextlib.suppress(OSError), open(log_path, errors="replace") as f:
            for line in f:  # vLLM's CPU worker logs its OpenMP binding (vllm/utils/ompmultiprocessing.py)
                keys = ("OMP_THREADS_BIND", "core ids", "reserved")
                if "ompmultiprocessing" in line and any(k in line for k in keys):
                    self.binding.append(line.split("] ", 1)[-1].strip())

    def add(self, system: str, workload: str, prefix: bool, seconds: float, responses: int, extra: dict,
            rewards: list[float] | None) -> None:
        row = {"system": system, "workload": workload, "prefix_caching": prefix, "round": self.round_no,
               "responses": responses, "seconds": seconds, "responses_per_s": responses / seconds if seconds else 0.0,
               **extra}
        row["_rewards"] = rewards
        self.rows.append(row)
        log(f"{system} {workload} prefix={'on' if prefix else 'off'} round {self.round_no}: "
            f"{row['responses_per_s']:.2f} r/s")

    # ── the run ────────────────────────────────────────────────────────────────────────────
    def run(self) -> dict:
        started = time.time()
        load_start = os.getloadavg()
        for round_no in range(1, self.args.repeat + 1):  # every configuration once per round
            self.round_no = round_no
            for prefix in self.args.prefix_caching:
                for system in self.args.systems:
                    if system == "vllm-offline":
                        self.run_offline(prefix)
                    elif system == "hf-ceiling":
                        self.run_ceiling(prefix)
                    else:
                        self.run_server(system, prefix)
                    self.save_partial()
        self.check_rewards()
        return self.summary(time.time() - started, load_start)

    def summary(self, wall_s: float, load_start: tuple) -> dict:
        return {"command": "python -m bench.vllm_compare " + " ".join(sys.argv[1:]), "machine": machine_info(),
                "load_average": {"start": load_start, "end": os.getloadavg()}, "wall_s": wall_s,
                "settings": {k: v for k, v in vars(self.args).items() if k != "systems"}, "systems": self.args.systems,
                "model": {"dir": self.model_dir, "name": self.encoder.name, "family": self.encoder.family_name,
                          "max_length": self.encoder.max_length, "hidden": self.encoder.hidden_size},
                "vllm_engine": {**self.engine_settings(True), "enable_prefix_caching": "per row",
                                "VLLM_CPU_KVCACHE_SPACE": self.args.kv_cache_gib},
                "vllm_binding": sorted(set(self.binding)), "token_ids_identical": True,
                "rows": [{k: v for k, v in r.items() if k != "_rewards"} for r in self.rows],
                "ratios": self.ratios()}

    def save_partial(self) -> None:
        """The rows so far (a run cut short still leaves its measurements)."""
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "partial.json"), "w") as f:
            json.dump({"rows": self.rows, "binding": self.binding, "log_dir": self.log_dir}, f, indent=1)

    @classmethod
    def from_partial(cls, args: argparse.Namespace, partial: dict) -> Compare:
        """The rows of a run cut short (its partial.json), to report what it measured."""
        from rmserve.models import load_reward_model

        compare = cls.__new__(cls)
        compare.args, compare.rows, compare.binding = args, list(partial["rows"]), list(partial.get("binding", []))
        compare.model_dir = args.model_dir or ensure_model(MODELS["text"])
        compare.encoder = load_reward_model(compare.model_dir, weights=False)
        compare.workloads = dict.fromkeys(TEXT_WORKLOADS)
        for row in compare.rows:
            row.setdefault("_rewards", None)
            row.setdefault("round", 1)
        compare.check_rewards()
        return compare

    def check_rewards(self) -> None:
        """Max |reward - rmserve-hf's| per row (same items, same order): the systems scored the same thing."""
        for row in self.rows:
            ref = next((r["_rewards"] for r in self.rows if r["system"] == "rmserve-hf"
                        and (r["workload"], r["prefix_caching"], r["round"])
                        == (row["workload"], row["prefix_caching"], row["round"])), None)
            if ref is not None and row["_rewards"] is not None and len(ref) == len(row["_rewards"]):
                row["max_reward_diff_vs_rmserve_hf"] = max(abs(a - b) for a, b in zip(row["_rewards"], ref,
                                                                                       strict=True))

    def rates(self, system: str, workload: str, prefix: bool) -> dict[int, float]:
        """responses/s by round."""
        return {r["round"]: r["responses_per_s"] for r in self.rows
                if (r["system"], r["workload"], r["prefix_caching"]) == (system, workload, prefix)}

    def ratios(self) -> list[dict]:
        pairs = [*GOALS, ("rmserve-vllm", "rmserve-vllm-batch"), ("rmserve-vllm", "rmserve-hf")]
        out = []
        for prefix in self.args.prefix_caching:
            for workload in self.workloads:
                for num, den in pairs:
                    a, b = self.rates(num, workload, prefix), self.rates(den, workload, prefix)
                    # Each round's ratio is taken within that round (the two ran minutes apart); the verdict
                    # is on their median, so one noisy round neither passes nor fails a goal by itself.
                    rounds = [a[k] / b[k] for k in sorted(a) if b.get(k)]
                    if not rounds:
                        continue
                    value = statistics.median(rounds)
                    goal = GOALS.get((num, den))
                    out.append({"workload": workload, "prefix_caching": prefix, "ratio": f"{num} / {den}",
                                "value": value, "rounds": rounds, "goal": goal,
                                "verdict": None if goal is None else ("PASS" if value >= goal else "FAIL")})
        return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_compare", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--responses", type=int, default=320, help="responses per workload (default: 320)")
    parser.add_argument("--warmup", type=int, default=16, help="warm-up responses per system (default: 16)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all)")
    parser.add_argument("--kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE per engine")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                        help="vLLM without torch.compile, for every vLLM system alike (default: on)")
    # Set for every vLLM system alike: left to vLLM, its OpenAI server takes half the CPU step budget of
    # its LLM class (2048 tokens and 128 seqs vs 4096 and 256), so offline ran bigger steps than the servers.
    parser.add_argument("--max-num-batched-tokens", type=int, default=4096,
                        help="vLLM tokens per engine step, every vLLM system (default: 4096, LLM's CPU default)")
    parser.add_argument("--max-num-seqs", type=int, default=256,
                        help="vLLM sequences per engine step, every vLLM system (default: 256, LLM's CPU default)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32],
                        help="the ceiling's batch sizes (default: 1,8,32)")
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS))
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every configuration; ratios are medians of per-round ratios (default: 1)")
    parser.add_argument("--prefix-caching", type=lambda s: [{"on": True, "off": False}[x] for x in s.split(",")],
                        default=[True, False], help="on,off (default: both)")
    parser.add_argument("--model-dir", help="a text rmserve checkpoint (default: the bench's ~22M text model)")
    parser.add_argument("--out", default="bench/results/vllm-cpu")
    parser.add_argument("--note", default="", help="a line for the report (e.g. how a cut run was completed)")
    parser.add_argument("--from-partial", action="store_true",
                        help="write the report of a run cut short from OUT/partial.json (what it measured)")
    args = parser.parse_args(argv)
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_partial:
        with open(os.path.join(args.out, "partial.json")) as f:
            partial = json.load(f)
        if isinstance(partial, list):  # an older partial.json: rows only, no rewards
            partial = {"rows": partial}
        results = Compare.from_partial(args, partial).summary(float("nan"), os.getloadavg())
        results["cut_short"] = True
        results["note"] = args.note
        results["load_average"]["note"] = "both taken when the report was written, not during the run"
    else:
        results = Compare(args).run()
    from bench.vllm_report import write_report

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(write_report(results))
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(args.out, "partial.json"))
    log(f"wrote {args.out}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
