"""Helpers for the operations tests: a real ``rmserve serve`` process on loopback, its RSS, direct scores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.serving import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    grpc_target: str | None
    log_path: str

    def rss_mb(self) -> float:
        """Resident memory of the server process, from /proc (0 once it has exited)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


@contextmanager
def rmserve_process(model_dir: str, *args: str, forward_sleep_ms: float = 0.0, grpc: bool = False,
                    ready_timeout_s: float = 120.0) -> Iterator[ServerProcess]:
    """``rmserve serve`` (through tests/ops_server.py) on free loopback ports, ready; SIGTERM on exit."""
    port = free_port()
    grpc_port = free_port() if grpc else None
    argv = [sys.executable, "-m", "tests.ops_server", "--forward-sleep-ms", str(forward_sleep_ms), "serve",
            "--model", model_dir, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *args]
    if grpc_port:
        argv += ["--grpc-port", str(grpc_port)]
    log = tempfile.NamedTemporaryFile("w", prefix="rmserve-ops-", suffix=".log", delete=False)
    env = {**os.environ, "RMSERVE_API_KEY": "", "RMSERVE_API_KEY_FILE": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}" if grpc_port else None,
                           log.name)
    try:
        end = time.monotonic() + ready_timeout_s
        while True:
            assert proc.poll() is None, f"rmserve serve exited early:\n{server.log()}"
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, f"rmserve serve never became ready:\n{server.log()}"
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def direct_rewards(model_dir: str, pairs: list[tuple[str, str]]) -> list[float]:
    """Rewards computed in this process, one item at a time, without the server (the reference)."""
    from rmserve.models import load_reward_model
    from rmserve.models.types import ScoreItem

    model = load_reward_model(model_dir)
    return [model.score_batch([model.encode(ScoreItem(response=r, prompt=p))])[0].reward for p, r in pairs]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
