"""Server subprocesses: start on a free port, wait until ready, read /proc, always stop; and the machine they ran on.

Each server runs in its own session (so stopping it stops anything it spawned) and, on Linux,
with a parent-death signal, so a killed benchmark does not leave servers behind. ``ServerProcess``
is a context manager: the server is stopped on any exit, exceptions included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a server that should use ``threads`` torch threads (same as the in-process ceiling)."""
    return {
        "OMP_NUM_THREADS": str(threads),  # torch's intra-op pool reads this at start-up
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
    }


try:  # looked up here, in the parent: between fork and exec only the call itself runs
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the benchmark process dies


# ── /proc readings ─────────────────────────────────────────────────────────────────────────────


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the process's peak resident set size."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib / 1024


def rss_mib(pid: int) -> float | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process (all threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > clear_refs``, Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ── the process ────────────────────────────────────────────────────────────────────────────────


@dataclass
class ServerProcess:
    """``argv`` with ``{port}`` in it is filled with a free port."""

    name: str
    argv: list[str]
    log_path: str
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    start_timeout_s: float = 600.0
    port: int = 0
    proc: subprocess.Popen | None = None
    started_s: float = 0.0  # seconds from launch to ready
    _launched: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def command(self) -> list[str]:
        return [a.replace("{port}", str(self.port)) for a in self.argv]

    def start(self) -> ServerProcess:
        """Launch and wait until ready (stopping it again if it never gets there)."""
        return self.launch().wait_ready()

    def launch(self) -> ServerProcess:
        self.port = self.port or free_port()
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        log = open(self.log_path, "wb")  # the child keeps its own copy of the descriptor
        self._launched = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, cwd=REPO, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
        )
        log.close()
        return self

    def wait_ready(self) -> ServerProcess:
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - self._launched
        return self

    def _wait_ready(self) -> None:
        end = time.monotonic() + self.start_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was ready; "
                                       f"log {self.log_path}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + self.ready_path).status_code == 200:
                        return
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} was not ready after {self.start_timeout_s:.0f} s; "
                           f"log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the server's process group (a graceful drain), SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ServerProcess", "free_port", "thread_env", "peak_rss_mib", "rss_mib", "cpu_seconds", "reset_peak_rss"]


def machine_info() -> dict:
    import torch
    import transformers

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    mem = None
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            mem = round(int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 2**20, 1)
    git = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True)
        git = {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads_default": torch.get_num_threads(), "git": git,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
