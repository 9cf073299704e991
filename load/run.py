"""`make load`: start a local rmserve, load it with locust (REST, then gRPC), stop it, write a report.

    python -m load.run                                   # 8 users, 60 s per protocol -> load/results/
    python -m load.run --users 16 --time 30s --protocols rest
    python -m load.run --server-arg=--model=/path/to/ckpt --server-arg=--max-wait-ms=10
    python -m load.run --locust-arg=--image-mode=inline --locust-arg=--group-size=16

Everything stays on 127.0.0.1: the server binds loopback only and locust targets it. The run is
bounded: locust stops itself after ``--time`` (and is killed ``--grace`` seconds later if it has
not), the server gets SIGTERM (then SIGKILL) when the run ends, however it ends. To load a
remote server instead, run the locust files directly with ``--host`` (README "Load testing").

Outputs in ``--out``: ``{rest,grpc}_*.csv`` (locust), ``{rest,grpc}_timings.json`` (server-reported
queue/inference times), ``run.json``, ``server.log``, ``report.md`` and ``report.png`` (load/report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from load import report

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HOST = "127.0.0.1"  # loopback only, by design
LOCUSTFILES = {"rest": "locustfile_rest.py", "grpc": "locustfile_grpc.py"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def seconds(duration: str) -> float:
    """locust's run-time syntax: 90, 90s, 2m, 1h30m."""
    if re.fullmatch(r"\d+(\.\d+)?", duration):
        return float(duration)
    parts = re.findall(r"(\d+)\s*([hms])", duration)
    if not parts or "".join(n + u for n, u in parts) != duration.replace(" ", ""):
        raise ValueError(f"bad duration {duration!r}; use e.g. 60s, 2m, 1h30m")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def _die_with_parent() -> None:  # in the child, between fork and exec (Linux): no orphaned servers
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Server:
    """``rmserve serve`` on loopback as a child process (own session); always stopped on exit."""

    def __init__(self, port: int, grpc_port: int, args: list[str], log_path: str):
        self.url = f"http://{HOST}:{port}"
        self.command = [sys.executable, "-m", "rmserve", "serve", "--port", str(port), "--grpc-port", str(grpc_port),
                        "--log-level", "warning", *args, "--host", HOST]  # last --host wins: never exposed
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")  # noqa: SIM115  (closed in __exit__)
        self.process = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if _get(self.url + "/readyz", timeout=2)[0] == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # drains: finishes admitted work
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


def batch_counters(url: str, headers: dict) -> tuple[float, float]:
    """(forward passes, items in them) so far, from the server's rmserve_batch_size histogram."""
    status, body = _get(url + "/metrics", headers=headers)
    values = {"rmserve_batch_size_count": 0.0, "rmserve_batch_size_sum": 0.0}
    for line in body.decode().splitlines() if status == 200 else []:
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name in values:  # summed over the models served (series labelled model="...")
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["rmserve_batch_size_count"], values["rmserve_batch_size_sum"]


def run_locust(protocol: str, target: str, args: argparse.Namespace) -> int:
    prefix = os.path.join(args.out, protocol)
    for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv", "_final_stats.csv",
                   "_final_failures.csv", "_timings.json"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(prefix + suffix)
    command = [
        sys.executable, "-m", "locust", "-f", os.path.join(HERE, LOCUSTFILES[protocol]), "--host", target,
        "--headless", "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.time, "--stop-timeout", "10",
        "--csv", prefix, "--csv-full-history", "--only-summary", "--exit-code-on-error", "0",
        "--timings-json", prefix + "_timings.json", "--loglevel", "WARNING", *args.locust_arg,
    ]
    print(f"[load] {protocol}: {args.users} users for {args.time} against {target}", flush=True)
    with open(os.path.join(args.out, f"{protocol}_locust.log"), "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_die_with_parent)
        try:
            return process.wait(timeout=seconds(args.time) + args.grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"locust ({protocol}) did not stop within {args.time} + {args.grace} s") from None


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return f"{platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} at start"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="locust users (GrpoUser : MixedUser = 3 : 1)")
    parser.add_argument("--spawn-rate", type=float, default=4, help="users started per second")
    parser.add_argument("--time", default="60s", help="load duration per protocol (locust -t syntax)")
    parser.add_argument("--protocols", default="rest,grpc", help="comma list of rest, grpc")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder")
    parser.add_argument("--port", type=int, default=0, help="REST port (0: a free one)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: a free one)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `rmserve serve` flag (repeat)")
    parser.add_argument("--locust-arg", action="append", default=[], help="extra locust flag (repeat)")
    parser.add_argument("--ready-timeout", type=float, default=300, help="seconds to wait for /readyz")
    parser.add_argument("--grace", type=float, default=60, help="seconds past --time before locust is killed")
    args = parser.parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not protocols or set(protocols) - set(LOCUSTFILES):
        parser.error(f"--protocols: choose from {', '.join(LOCUSTFILES)}")
    if args.users < 1 or args.spawn_rate <= 0:
        parser.error("--users must be >= 1 and --spawn-rate > 0")
    seconds(args.time)  # validate early
    os.makedirs(args.out, exist_ok=True)
    port, grpc_port = args.port or free_port(), args.grpc_port or free_port()
    api_key = os.environ.get("RMSERVE_API_KEY", "")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info = {"started": started, "machine": machine(), "users": args.users, "spawn_rate": args.spawn_rate,
            "time": args.time, "workload_args": " ".join(args.locust_arg), "server_batches": {}}
    from importlib.metadata import version

    info["locust_version"] = version("locust")
    with Server(port, grpc_port, args.server_arg, os.path.join(args.out, "server.log")) as server:
        info["server_command"] = " ".join(["rmserve", *server.command[3:]])
        print(f"[load] starting {info['server_command']}", flush=True)
        server.wait_ready(args.ready_timeout)
        status, body = _get(server.url + "/v1/models", headers=headers)
        if status == 200:
            models = json.loads(body)["data"]
            info["model"] = next((m for m in models if m.get("default")), models[0])
        for protocol in protocols:
            target = server.url if protocol == "rest" else f"grpc://{HOST}:{grpc_port}"
            before = batch_counters(server.url, headers)
            code = run_locust(protocol, target, args)
            after = batch_counters(server.url, headers)
            if code not in (0, 1):
                raise RuntimeError(f"locust ({protocol}) exited with {code}; see {args.out}/{protocol}_locust.log")
            batches, items = after[0] - before[0], after[1] - before[1]
            info["server_batches"][protocol] = {"batches": batches, "mean_size": items / batches if batches else 0.0}
            if server.process.poll() is not None:
                raise RuntimeError(f"server died during the {protocol} run:\n{server.log_tail()}")
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(info, f, indent=2)
    text = report.write(args.out)
    print(text)
    print(f"[load] report: {os.path.relpath(os.path.join(args.out, 'report.md'), REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
