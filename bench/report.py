"""Turn bench results into the acceptance ratios, a markdown report and a bar chart."""

from __future__ import annotations

import statistics

LABELS = {
    "rmserve": "rmserve",
    "rmserve-no-share": "rmserve, no sharing",
    "rmserve-soak": "rmserve, soak (2x, fresh)",
    "naive": "naive (bs=1/request)",
    "ceiling": "ceiling",
    "ceiling-share": "ceiling + sharing",
}
ORDER = list(LABELS)

# (workload, numerator, denominator, goal or None, what it shows)
RATIOS = [
    ("text", "rmserve", "ceiling", 0.8, "serving overhead (HTTP, queue, padding) vs pure compute"),
    ("text", "rmserve", "naive", None, "cross-request batching vs one forward per request"),
    ("image", "rmserve", "ceiling", 0.8, "serving overhead vs pure compute"),
    ("image", "rmserve", "naive", None, "cross-request batching vs one forward per request"),
    ("grpo", "rmserve", "naive", 2.0, "batching + prefix sharing vs one forward per request"),
    ("grpo", "rmserve", "ceiling", 1.6, "sharing beats the best possible unshared batching"),
    ("grpo", "rmserve", "rmserve-no-share", 1.5, "what prefix sharing alone buys"),
    ("grpo", "rmserve", "ceiling-share", None, "serving overhead vs the sharing ceiling"),
]

NAIVE_NOTE = (
    "rmserve / naive on single samples has no floor on a 2-core CPU: there a batch-size-1 forward "
    "already keeps both cores busy (intra-op threads split each matmul), so batching across requests "
    "only buys larger, more efficient matmuls and fewer per-call overheads, and pays some padding; on a "
    "GPU a batch-size-1 forward leaves the device mostly idle and batching is worth several times. Prefix "
    "sharing (GRPO) removes work instead, so its gain shows on any hardware."
)


def _rates(results: dict, workload: str, system: str) -> dict[int, float]:
    """A system's responses/s per round (one round, 0, unless the run had ``--repeat``)."""
    out: dict[int, float] = {}
    for row in results["rows"]:
        if (row["workload"] == workload and row["system"] == system and "error" not in row
                and row.get("responses_per_s") is not None):
            out.setdefault(row.get("round", 0), row["responses_per_s"])
    return out


def _rate(results: dict, workload: str, system: str) -> float | None:
    rates = _rates(results, workload, system)
    return statistics.median(rates.values()) if rates else None


def ratios(results: dict) -> list[dict]:
    """Each goal's ratio; with rounds, the median of the per-round ratios (numerator and denominator of a
    ratio always from the same round), the rounds' values beside it."""
    out = []
    for workload, num, den, goal, meaning in RATIOS:
        a, b = _rates(results, workload, num), _rates(results, workload, den)
        if not a and not b:
            continue
        per_round = [a[k] / b[k] for k in sorted(a) if b.get(k)]
        value = statistics.median(per_round) if per_round else None
        entry = {"workload": workload, "ratio": f"{num} / {den}", "value": value, "goal": goal,
                 "ok": None if goal is None or value is None else value >= goal, "meaning": meaning}
        if len(per_round) > 1:
            entry["rounds"] = per_round
        out.append(entry)
    return out


def latency_checks(results: dict) -> list[dict]:
    """rmserve's p99 against 3 x (max wait + one batch's compute at the server's max batch size).

    One batch's compute comes from the ceiling's batch-size sweep: the mean batch time at the
    largest size tried that is <= the row's max batch size (with sharing for sharing rows)."""
    out = []
    for row in results["rows"]:
        if not row["system"].startswith("rmserve") or "error" in row or row.get("p99_ms") is None:
            continue
        wl = row["workload"]
        sharing = wl == "grpo" and row["system"] != "rmserve-no-share" and results.get("share_prefix_flag")
        trials = {int(bs): t for bs, t in results["sweeps"].get(f"{wl}/ceiling{'-share' if sharing else ''}",
                                                                  {}).items()}
        if not trials:
            continue
        max_batch = row.get("max_batch_size", results["server_max_batch_size"])
        max_wait = row.get("max_wait_ms", results["server_max_wait_ms"])
        size = max([bs for bs in trials if bs <= max_batch] or [min(trials)])
        bound = 3 * (max_wait + trials[size]["batch_ms"])
        out.append({"workload": wl, "system": row["system"], **({"round": row["round"]} if "round" in row else {}),
                    "p99_ms": row["p99_ms"], "bound_ms": bound,
                    "max_wait_ms": max_wait, "batch_size": size, "batch_ms": trials[size]["batch_ms"],
                    "ok": row["p99_ms"] <= bound})
    return out


def soak_verdict(first: dict, soak: dict, first_timeline: list, timeline: list) -> dict:
    """The soak's "flat" verdict from the measured run's row and the 2x fresh run's row (same process).

    The image, vision and prompt caches are LRUs bounded in bytes (256/256/64 MiB by default); a 2x run of
    fresh images fills them further by design (~0.3 MiB per 224x224 image). What must not grow is
    everything else: the verdict is on peak RSS growth minus the caches' own growth (``cache_mib``, read
    from the server's /metrics), within max(32 MiB, 5% of the first peak); raw growth is reported beside it.
    """
    growth = (soak["peak_rss_mib"] or 0) - (first["peak_rss_mib"] or 0)
    cache_growth = soak.get("cache_mib", 0.0) - first.get("cache_mib", 0.0)
    tolerance = max(32.0, 0.05 * (first["peak_rss_mib"] or 0))
    tail = [mib for _, mib in timeline[len(timeline) * 2 // 3:]]
    return {
        "responses": [first["responses"], soak["responses"]],
        # A leak raises the typical RSS too; a bigger worst-case batch only raises the peak.
        "median_rss_mib": [statistics.median([mib for _, mib in first_timeline] or [0]),
                           statistics.median(tail or [0])],
        "peak_rss_mib": [first["peak_rss_mib"], soak["peak_rss_mib"]],
        "rss_end_mib": [first["rss_end_mib"], soak["rss_end_mib"]],
        "cache_mib": [first.get("cache_mib"), soak.get("cache_mib")],
        "growth_mib": growth, "cache_growth_mib": cache_growth, "growth_excl_caches_mib": growth - cache_growth,
        "tolerance_mib": tolerance, "flat": growth - cache_growth <= tolerance,
        "timeline_mib": {"measured": first_timeline[::2], "soak": timeline[::2]},
    }


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict(ok) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def _row_note(row: dict) -> str:
    if "error" in row:
        lines = [line.strip() for line in row["error"].splitlines() if line.strip()]
        last = f" ... {lines[-1][:150]}" if len(lines) > 1 else ""  # the log's last line: usually the cause
        return ("ERROR: " + lines[0][:150] + last).replace("|", "/") if lines else "ERROR"
    parts = []
    if row["kind"] == "ceiling":
        parts.append(f"one batch {_f(row['batch_ms'], 0)} ms")
    if row.get("server_mean_batch"):
        parts.append(f"server batches: {_f(row['server_mean_batch'])} items, {_f(row['server_batch_ms'], 0)} ms")
    if row.get("max_abs_reward_diff") is not None:
        parts.append(f"max abs reward diff vs ceiling {row['max_abs_reward_diff']:.1e}")
    if row.get("server_cpu_s") and row.get("seconds"):
        parts.append(f"server CPU {_f(row['server_cpu_s'] / row['seconds'], 2)} cores, "
                     f"client {_f(row['client_cpu_s'] / row['seconds'], 2)}")
    if row.get("errors"):
        parts.append(f"{row['errors']} failed requests: {row['first_errors'][0][:100]}")
    return "; ".join(parts)


def _sorted_rows(results: dict) -> list[dict]:
    order = {w: i for i, w in enumerate(("text", "image", "grpo"))}
    return sorted(results["rows"], key=lambda r: (order.get(r["workload"], 9), r.get("round", 0),
                                                  ORDER.index(r["system"]) if r["system"] in ORDER else 1.5))


def table(results: dict) -> str:
    lines = ["| workload | system | responses | seconds | responses/s | p50 ms | p99 ms | peak RSS MiB | batch "
             "| notes |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in _sorted_rows(results):
        batch = row.get("batch_size") or ("1" if row["system"] == "naive" else "dyn")
        system = LABELS.get(row["system"], row["system"]) + (f" (round {row['round'] + 1})" if "round" in row else "")
        lines.append(
            f"| {row['workload']} | {system} | {_f(row.get('responses'))} "
            f"| {_f(row.get('seconds'))} | **{_f(row.get('responses_per_s'), 2)}** | {_f(row.get('p50_ms'), 0)} "
            f"| {_f(row.get('p99_ms'), 0)} | {_f(row.get('peak_rss_mib'), 0)} | {batch} | {_row_note(row)} |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    m, model = results["machine"], results["model"]
    git = m.get("git") or {}
    out = [
        f"# rmserve benchmark ({results['preset']})",
        "",
        f"Command: `{results['command']}`" + (" (`make bench`)" if results["preset"] == "full" else ""),
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}; Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}; git {git.get('commit', '?')}"
        f"{' (dirty)' if git.get('dirty') else ''}; {m['date']}",
        f"- Load average (1/5/15 min) at start {_loads(results['load_average']['start'])}, at end "
        f"{_loads(results['load_average']['end'])} (a busy machine lowers every row; compare within one run)",
        f"- Model: `{model['name']}`: Qwen2.5-VL architecture, {model['params'] / 1e6:.1f}M parameters "
        f"({model['vision_params'] / 1e6:.1f}M vision), {model['dtype']}, "
        f"{results.get('device', 'cpu').upper()}, random weights",
        f"- Threads: torch uses {results['threads']} threads in every system (servers: OMP_NUM_THREADS/"
        f"MKL_NUM_THREADS; naive and ceiling also torch.set_num_threads). Client: bench/client.py's raw "
        f"keep-alive HTTP/1.1 client (0.1-0.4 ms of CPU a request; httpx costs 1-3 ms), "
        f"{results['concurrency']} requests in flight, one item per request, on the same machine.",
        f"- rmserve: `rmserve serve` defaults (max batch {results['server_max_batch_size']}, max wait "
        f"{results['server_max_wait_ms']} ms) + `--log-level warning`"
        + (f" + `{' '.join(results['server_args'])}`" if results["server_args"] else "")
        + "; GRPO rows: `--share-prefix` / `--no-share-prefix`.",
        f"- Workloads: {_tokens(results)}; GRPO: G={results['group_size']} responses per prompt+image, each its "
        "own request, a group's requests sent together, groups back to back.",
        f"- Wall time {results['wall_s'] / 60:.1f} min.",
        "",
        "## Throughput, latency, memory",
        "",
        table(results),
        "",
        "## Ratios (acceptance)",
        "",
        "| workload | ratio | value | goal | verdict | what it shows |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in results["ratios"]:
        goal = f">= {r['goal']}" if r["goal"] is not None else "none"
        rounds = (f" (median of {len(r['rounds'])} rounds: {', '.join(f'{v:.2f}' for v in r['rounds'])})"
                  if r.get("rounds") else "")
        out.append(f"| {r['workload']} | {r['ratio']} | {_f(r['value'], 2)}{rounds} | {goal} | {_verdict(r['ok'])} "
                   f"| {r['meaning']} |")
    out += ["", NAIVE_NOTE, "", "## Latency: p99 vs 3 x (max wait + one batch's compute)", "",
            "One batch's compute: the ceiling's mean batch time at the server's max batch size (or the "
            "largest size tried below it), from the batch-size sweep.", "",
            "| workload | system | p99 ms | max wait ms | one batch ms (size) | bound ms | verdict |",
            "|---|---|---:|---:|---:|---:|---|"]
    for r in results["latency"]:
        system = LABELS.get(r["system"], r["system"]) + (f" (round {r['round'] + 1})" if "round" in r else "")
        out.append(f"| {r['workload']} | {system} | {_f(r['p99_ms'], 0)} "
                   f"| {_f(r['max_wait_ms'])} | {_f(r['batch_ms'], 0)} ({r['batch_size']}) | {_f(r['bound_ms'], 0)} "
                   f"| {_verdict(r['ok'])} |")
    soak = results.get("soak")
    out += ["", "## Memory: GRPO soak", ""]
    if soak:
        caches = soak.get("cache_mib") or [None, None]
        out.append(
            f"rmserve (sharing) ran {soak['responses'][0]} responses, then {soak['responses'][1]} fresh ones on the "
            f"same process: peak RSS {_f(soak['peak_rss_mib'][0], 0)} -> {_f(soak['peak_rss_mib'][1], 0)} MiB "
            f"(growth {_f(soak['growth_mib'], 0)} MiB, of which the bounded image + vision + prompt caches "
            f"{_f(soak.get('cache_growth_mib'), 0)} MiB: {_f(caches[0], 0)} -> {_f(caches[1], 0)} MiB held); growth "
            f"outside the caches {_f(soak.get('growth_excl_caches_mib', soak['growth_mib']), 0)} MiB, tolerance "
            f"{_f(soak['tolerance_mib'], 0)} MiB: **{'flat' if soak['flat'] else 'GROWING'}**. RSS at the end of each: "
            f"{_f(soak['rss_end_mib'][0], 0)} / {_f(soak['rss_end_mib'][1], 0)} MiB; median RSS during the first run "
            f"{_f(soak['median_rss_mib'][0], 0)} MiB, during the soak's last third {_f(soak['median_rss_mib'][1], 0)} "
            "MiB (a leak raises both; a larger worst-case batch only the peak). The caches are LRUs bounded in bytes "
            "(`--image-cache-mb`, `--vision-cache-mb`, `--prompt-cache-mb`: 256, 256 and 64 MiB by default), "
            "so their share stops at the bound.")
    else:
        out.append("not run")
    out += ["", "## Ceiling batch-size sweep (calibration slice)", "",
            "| workload / system | responses/s by batch size |", "|---|---|"]
    for key, trials in results["sweeps"].items():
        cells = ", ".join(f"{bs}: {_f(t['responses_per_s'], 2)}" for bs, t in trials.items())
        out.append(f"| {key} | {cells} |")
    if results["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(out) + "\n"


def _loads(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _tokens(results: dict) -> str:
    parts = []
    for name, t in results.get("tokens", {}).items():
        p, i, r = t["prompt_tokens_incl_image"], t["image_tokens"], t["response_tokens"]
        image = f" incl. {i[0]} image tokens (224x224)" if i[1] else ""
        parts.append(f"{name}: prompt {p[0]}-{p[1]} tokens{image}, response {r[0]}-{r[1]}")
    return "; ".join(parts) or "-"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w for w in ("text", "image", "grpo") if any(r["workload"] == w for r in results["rows"])]
    seen = list(dict.fromkeys(r["system"] for r in results["rows"]))
    systems = [s for s in ORDER + [s for s in seen if s not in ORDER] if s != "rmserve-soak" and s in seen]
    fig, ax = plt.subplots(figsize=(10, 5))
    colours = {system: f"C{i}" for i, system in enumerate(systems)}
    width = 0.8 / max(1, len(systems))
    labelled = set()
    for i, wl in enumerate(workloads):
        present = [(s, _rate(results, wl, s)) for s in systems]
        present = [(s, r) for s, r in present if r is not None]
        for j, (system, rate) in enumerate(present):  # centred on the workload's tick, no gaps
            x = i + (j - (len(present) - 1) / 2) * width
            bars = ax.bar([x], [rate], width, color=colours[system],
                          label=None if system in labelled else LABELS.get(system, system))
            labelled.add(system)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(workloads)), [{"text": "text only", "image": "image single", "grpo":
                                           f"GRPO (G={results['group_size']})"}[w] for w in workloads])
    ax.set_ylabel("responses / s")
    m = results["machine"]
    ax.set_title(f"rmserve vs naive vs ceiling: {results['model']['params'] / 1e6:.0f}M Qwen2.5-VL RM, fp32, "
                 f"{m['cores']}-core CPU, {results['threads']} torch thread{'s' if results['threads'] != 1 else ''}")
    handles, names = ax.get_legend_handles_labels()
    rank = {LABELS.get(s, s): i for i, s in enumerate(systems)}
    pairs = sorted(zip(names, handles, strict=True), key=lambda p: rank.get(p[0], 99))
    ax.legend([h for _, h in pairs], [n for n, _ in pairs], fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Re-render results.md and results.png from a results.json (e.g. after changing this file)."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", help="path to results.json")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    results["ratios"], results["latency"] = ratios(results), latency_checks(results)
    out = os.path.dirname(os.path.abspath(args.results))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    plot(results, os.path.join(out, "results.png"))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ratios", "latency_checks", "markdown", "table", "plot", "NAIVE_NOTE"]
