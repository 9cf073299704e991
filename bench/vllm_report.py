"""results.md of the vLLM comparison (bench/vllm_compare.py) from its results.json."""

from __future__ import annotations

import statistics

WHAT = {
    "vllm-server": "vLLM's OpenAI server, POST /pooling (states, no reward head)",
    "rmserve-vllm": "rmserve --backend vllm, per-item dispatch (default)",
    "rmserve-vllm-batch": "rmserve --backend vllm --dispatch batch",
    "rmserve-hf": "rmserve, transformers backend",
    "vllm-offline": "LLM.encode over all items at once (prefix cache reset)",
    "hf-ceiling": "transformers in-process, best batch size",
}


def _ms(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _rounds(values: list[float]) -> str:
    """One value, or the median of several with the rounds after it."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"


def pivot(results: dict) -> list[str]:
    """responses/s, one line per (prefix caching, workload), one column per system (README-sized); with
    several rounds, each cell is their median followed by the rounds."""
    systems = [s for s in WHAT if s in results.get("systems", WHAT)]
    lines = ["| prefix caching | workload | " + " | ".join(systems) + " |",
             "|---|---|" + "---:|" * len(systems)]
    keys = dict.fromkeys((r["prefix_caching"], r["workload"]) for r in results["rows"])
    for prefix, workload in keys:
        rates: dict[str, list[float]] = {}
        for r in results["rows"]:
            if (r["prefix_caching"], r["workload"]) == (prefix, workload):
                rates.setdefault(r["system"], []).append(r["responses_per_s"])
        cells = [_rounds(rates[s]) if s in rates else "not run" for s in systems]
        lines.append(f"| {'on' if prefix else 'off'} | {workload} | " + " | ".join(cells) + " |")
    return lines


def write_report(results: dict) -> str:
    m, s, engine = results["machine"], results["settings"], results["vllm_engine"]
    load = results["load_average"]
    lines = [
        "# rmserve on vLLM vs vLLM (CPU, text reward model)", "",
        (f"Command: `{results['command']}` (`make bench-vllm`)" if not results.get("cut_short") else
         "Rendered with `python -m bench.vllm_compare --from-partial` from the partial.json of a run cut short "
         "(the run's command and load: the note below)"), "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}; Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}; git {m['git'].get('commit')}; {m['date']}",
        "- Load on the machine: "
        + ("the note below" if results.get("cut_short") else
           f"load average {load['start'][0]:.1f} at start, {load['end'][0]:.1f} at end on {m['cores']} cores "
           "(the benchmark's own processes included; on a shared machine other work adds to it)")
        + ". Every configuration ran back to back in this one invocation; compare rows within this run only.",
        f"- Model: `{results['model']['name']}` ({results['model']['family']}, hidden {results['model']['hidden']}, "
        f"max length {results['model']['max_length']}), fp32, random weights; rmserve's MLP reward head.",
        f"- Load: {s['responses']} responses per workload, {s['concurrency']} requests in flight, one item per "
        f"request; `grpo_text`: groups of {s['group_size']} responses to one prompt, sent together. The same token "
        "ids everywhere: rmserve encodes the texts; vLLM server and offline get those ids.",
        f"- vLLM engines (all alike): dtype {engine['dtype']}, max_model_len {engine['max_model_len']}, "
        f"enforce_eager {engine['enforce_eager']}, "
        f"step budget {engine.get('max_num_batched_tokens', 'vLLM default')} tokens / "
        f"{engine.get('max_num_seqs', 'vLLM default')} seqs, "
        f"VLLM_CPU_KVCACHE_SPACE={engine['VLLM_CPU_KVCACHE_SPACE']} GiB, "
        "prefix caching per row; vLLM's default CPU thread binding (VLLM_CPU_OMP_THREADS_BIND=auto): its worker "
        "binds one OpenMP thread to one core and reserves the other core for the engine and the frontend. "
        f"transformers (rmserve-hf, hf-ceiling): {s['threads']} torch threads.",
        f"- Wall time {results['wall_s'] / 60:.1f} min." if results["wall_s"] == results["wall_s"] else
        "- **Cut short**: the run was stopped before every configuration ran (see `not run` below); the rows "
        "are what it measured, from its partial.json (rewards were not kept there: no reward column).",
        *([f"- {results['note']}"] if results.get("note") else []), "",
        "## responses/s", "", *pivot(results), "",
        "## Throughput", "",
        "| prefix caching | workload | system | responses/s | seconds | p50 ms | p99 ms "
        "| max reward diff vs rmserve-hf | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    rounds = len({row.get("round", 1) for row in results["rows"]}) > 1
    for row in results["rows"]:
        diff = row.get("max_reward_diff_vs_rmserve_hf")
        note = WHAT.get(row["system"], "")
        system = f"{row['system']} (round {row.get('round', 1)})" if rounds else row["system"]
        if row["system"] == "hf-ceiling":
            note += f" ({row['batch_size']})"
        lines.append(
            f"| {'on' if row['prefix_caching'] else 'off'} | {row['workload']} | {system} | "
            f"**{row['responses_per_s']:.2f}** | {row['seconds']:.1f} | {_ms(row.get('p50_ms'))} | "
            f"{_ms(row.get('p99_ms'))} | {'-' if diff is None else f'{diff:.1e}'} | {note} |")
    lines += ["", "## Ratios", "",
              "| prefix caching | workload | ratio | value (median, then each round) | goal | verdict |",
              "|---|---|---|---:|---:|---|"]
    for r in results["ratios"]:
        goal = "-" if r["goal"] is None else f">= {r['goal']}"
        lines.append(f"| {'on' if r['prefix_caching'] else 'off'} | {r['workload']} | {r['ratio']} | "
                     f"{_rounds(r.get('rounds') or [r['value']])} | {goal} | {r['verdict'] or '-'} |")
    if results.get("vllm_binding"):
        lines += ["", "## vLLM's thread binding (from its logs)", "", "```", *results["vllm_binding"][:4], "```"]
    return "\n".join(lines) + "\n"


__all__ = ["write_report"]
