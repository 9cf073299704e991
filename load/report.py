"""The load report: locust's CSVs (+ server timings, run metadata) -> report.md and report.png.

    python -m load.report load/results          # re-render from the files `make load` left there

Reads, for each protocol P that ran (``rest``, ``grpc``): ``P_final_stats.csv`` (totals and
latency percentiles per endpoint, written by the locust files at exit; else locust's own
``P_stats.csv``), ``P_stats_history.csv`` (the 1 s timeline), ``P_final_failures.csv``,
``P_timings.json`` (the server's own x-queue-time-ms / x-inference-time-ms per endpoint) and
``run.json`` (command, model, machine, server batch sizes).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass

PROTOCOLS = ("rest", "grpc")


@dataclass
class EndpointRow:
    protocol: str
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    max_ms: float | None

    @property
    def is_total(self) -> bool:
        return self.name == "Aggregated"


def _num(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_stats(path: str, protocol: str) -> list[EndpointRow]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(EndpointRow(
                protocol=protocol, method=r["Type"], name=r["Name"], requests=int(r["Request Count"]),
                failures=int(r["Failure Count"]), rps=float(r["Requests/s"]), p50=_num(r["50%"]),
                p95=_num(r["95%"]), p99=_num(r["99%"]), max_ms=_num(r["Max Response Time"]),
            ))
    return rows


def read_history(path: str) -> list[dict[str, float]]:
    """The aggregated timeline: seconds since start, users, req/s, failures/s, p50, p95 (ms)."""
    out: list[dict[str, float]] = []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    if not rows:
        return out
    t0 = int(rows[0]["Timestamp"])
    for r in rows:
        out.append({"t": int(r["Timestamp"]) - t0, "users": int(r["User Count"]), "rps": float(r["Requests/s"]),
                    "fails": float(r["Failures/s"]), "p50": _num(r["50%"]), "p95": _num(r["95%"])})
    return out


def _first(directory: str, *names: str) -> str | None:
    return next((os.path.join(directory, n) for n in names if os.path.exists(os.path.join(directory, n))), None)


def read_failures(path: str | None) -> list[tuple[str, str, int]]:
    if path is None:
        return []
    with open(path, newline="") as f:
        return [(r["Name"], r["Error"], int(r["Occurrences"])) for r in csv.DictReader(f)]


def _load_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def collect(results_dir: str) -> dict:
    data: dict = {"run": _load_json(os.path.join(results_dir, "run.json")), "protocols": {}}
    for protocol in PROTOCOLS:
        stats = _first(results_dir, f"{protocol}_final_stats.csv", f"{protocol}_stats.csv")
        if stats is None:
            continue
        history = os.path.join(results_dir, f"{protocol}_stats_history.csv")
        data["protocols"][protocol] = {
            "rows": read_stats(stats, protocol),
            "history": read_history(history) if os.path.exists(history) else [],
            "failures": read_failures(
                _first(results_dir, f"{protocol}_final_failures.csv", f"{protocol}_failures.csv")
            ),
            "timings": _load_json(os.path.join(results_dir, f"{protocol}_timings.json")),
        }
    return data


def markdown(data: dict) -> str:
    run = data["run"]
    lines = ["# rmserve load report", ""]
    if run:
        model = run.get("model", {})
        lines += [
            f"- when: {run.get('started', '?')}; machine: {run.get('machine', '?')}",
            f"- server: `{run.get('server_command', '?')}`",
            f"- model: {model.get('id', '?')} ({model.get('family', '?')}, {model.get('device', '?')}, "
            f"{model.get('dtype', '?')}, heads {', '.join(model.get('heads', []))}"
            f"{', UNTRAINED' if model.get('untrained') else ''})",
            f"- load: locust {run.get('locust_version', '?')}, {run.get('users', '?')} users "
            f"(GrpoUser : MixedUser = 3 : 1), spawn rate {run.get('spawn_rate', '?')}/s, {run.get('time', '?')} "
            f"per protocol, workload `{run.get('workload_args') or 'defaults'}`; client and server share the "
            "machine's cores",
            "",
        ]
    for protocol, entry in data["protocols"].items():
        rows = entry["rows"]
        total = next((r for r in rows if r.is_total), None)
        title = "REST" if protocol == "rest" else "gRPC"
        lines += [f"## {title}", ""]
        if total is not None:
            share = 100 * total.failures / total.requests if total.requests else 0.0
            lines += [f"{total.requests} requests, {total.rps:.1f} requests/s, {total.failures} failures "
                      f"({share:.2f}%).", ""]
        batches = run.get("server_batches", {}).get(protocol)
        if batches:
            lines += [f"Server: {batches['batches']} forward passes, mean batch size {batches['mean_size']:.1f} "
                      "items (from /metrics).", ""]
        lines += ["| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms "
                  "| server queue p50/p95 ms | server inference p50/p95 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(rows, key=lambda r: (r.is_total, r.name)):
            t = entry["timings"].get(r.name)
            queue = f"{t['queue_ms_p50']:.0f} / {t['queue_ms_p95']:.0f}" if t else "-"
            infer = f"{t['inference_ms_p50']:.0f} / {t['inference_ms_p95']:.0f}" if t else "-"
            name = "**all**" if r.is_total else f"`{r.name}`"
            lines.append(f"| {name} | {r.requests} | {r.failures} | {r.rps:.1f} | {_ms(r.p50)} | {_ms(r.p95)} | "
                         f"{_ms(r.p99)} | {_ms(r.max_ms)} | {queue} | {infer} |")
        lines.append("")
        if entry["failures"]:
            lines += ["Failures:", ""]
            lines += [f"- `{name}` x{count}: {error[:160]}" for name, error, count in entry["failures"][:10]]
            lines.append("")
    lines += ["![throughput and latency](report.png)", ""]
    return "\n".join(lines)


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(data["protocols"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colours = {"rest": "tab:blue", "grpc": "tab:orange"}
    for protocol in protocols:
        history = data["protocols"][protocol]["history"]
        t = [h["t"] for h in history]
        label = "REST" if protocol == "rest" else "gRPC"
        axes[0].plot(t, [h["rps"] for h in history], color=colours[protocol], label=f"{label} req/s")
        if any(h["fails"] for h in history):
            axes[0].plot(t, [h["fails"] for h in history], color=colours[protocol], ls=":", label=f"{label} fails/s")
        axes[1].plot(t, [h["p50"] for h in history], color=colours[protocol], label=f"{label} p50")
        axes[1].plot(t, [h["p95"] for h in history], color=colours[protocol], ls="--", label=f"{label} p95")
    axes[0].set(title="throughput", xlabel="seconds", ylabel="requests/s")
    axes[1].set(title="latency (10 s window)", xlabel="seconds", ylabel="ms")
    bars = [r for p in protocols for r in data["protocols"][p]["rows"] if not r.is_total and r.requests]
    labels = [f"{'gRPC' if r.protocol == 'grpc' else 'REST'} {r.name}" for r in bars]
    width = 0.27
    for i, (key, colour) in enumerate((("p50", "tab:green"), ("p95", "tab:olive"), ("p99", "tab:red"))):
        axes[2].barh([y + (i - 1) * width for y in range(len(bars))], [getattr(r, key) or 0 for r in bars],
                     height=width, color=colour, label=key)
    axes[2].set_yticks(range(len(bars)), labels, fontsize=8)
    axes[2].invert_yaxis()
    axes[2].set(title="latency per endpoint", xlabel="ms")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results_dir: str) -> str:
    """Render report.md and report.png in ``results_dir``; returns the markdown."""
    data = collect(results_dir)
    if not data["protocols"]:
        raise FileNotFoundError(f"no locust CSVs (rest_stats.csv / grpc_stats.csv) in {results_dir}")
    text = markdown(data)
    with open(os.path.join(results_dir, "report.md"), "w") as f:
        f.write(text)
    plot(data, os.path.join(results_dir, "report.png"))
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(write(args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
