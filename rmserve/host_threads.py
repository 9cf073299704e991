"""Host threads: as many torch intra-op threads as the CPU the process may actually use.

torch sizes its OpenMP team from the cores it can see (the affinity mask). A container's CPU limit
(``docker --cpus``, a Kubernetes ``limits.cpu``) is a CFS quota instead, which torch does not read: on a
64-core node with a 4-CPU limit, 64 threads take turns on 4 CPUs' worth of time, and every parallel
region waits for threads the quota has paused. Measured on the bench's text model with a 1-CPU quota on a
2-core VM (bench/README.md, "CPU quota"): 14.8 responses/s with 2 threads, 16.3 with 1.

``torch_threads`` decides, in this order: ``--torch-threads`` if given; nothing if ``OMP_NUM_THREADS`` is
set (the user, or k8s/base/deployment.yaml, already chose); otherwise torch's default capped at the cgroup
quota rounded up (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the tightest of
the process's cgroup and its ancestors). No quota: torch's default stands.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

log = logging.getLogger("rmserve.host_threads")

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(root: str, rel: str) -> list[str]:
    """``root/rel`` and each parent directory up to ``root``, deepest first; just ``root`` when rel is unknown."""
    parts = [p for p in rel.strip("/").split("/") if p]
    dirs = [os.path.join(root, *parts[:k]) for k in range(len(parts), 0, -1)]
    return [d for d in dirs if os.path.isdir(d)] + [root]


def _cgroup_paths(proc_cgroup: str) -> tuple[str, str]:
    """(v2 path, v1 cpu-controller path) of this process, from ``/proc/self/cgroup``; "" when absent."""
    v2 = v1 = ""
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def cpu_quota_cores(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs' worth of time the process's cgroup quota allows (e.g. 1.5), or None when there is no quota."""
    v2_path, v1_path = _cgroup_paths(proc_cgroup)
    quotas = []
    for d in _ancestors(root, v2_path):
        fields = (_read(os.path.join(d, "cpu.max")) or "").split()
        if len(fields) == 2 and fields[0] != "max" and fields[0].isdigit() and fields[1].isdigit():
            quotas.append(int(fields[0]) / max(int(fields[1]), 1))
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = os.path.join(root, mount)
        if not os.path.isdir(base):
            continue
        for d in _ancestors(base, v1_path):
            quota, period = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
            if quota and period and quota.lstrip("-").isdigit() and period.isdigit() and int(quota) > 0:
                quotas.append(int(quota) / max(int(period), 1))
        break
    return min(quotas) if quotas else None


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # what to set; None = leave torch's own choice
    reason: str


def torch_threads(flag: int | None, environ: dict[str, str], quota: float | None, default: int) -> ThreadChoice:
    """The intra-op thread count to set (see the module docstring for the order)."""
    if flag is not None:
        return ThreadChoice(flag, "--torch-threads")
    if environ.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(None, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS'].strip()}")
    if quota is not None and math.ceil(quota) < default:
        return ThreadChoice(max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g} below torch's {default}")
    return ThreadChoice(None, f"torch's default ({default})" + ("" if quota is None else f", quota {quota:g}"))


def apply_torch_threads(flag: int | None = None) -> ThreadChoice:
    """Decide and set torch's intra-op threads; call before any torch work (the model load)."""
    import torch

    choice = torch_threads(flag, dict(os.environ), cpu_quota_cores(), torch.get_num_threads())
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    log.info("torch threads: %d (%s)", torch.get_num_threads(), choice.reason)
    return choice


def _openmp_runtime():
    """The OpenMP runtime torch loaded (libgomp or Intel's libiomp5), found in this process's memory map."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if ("libgomp" in line or "libiomp" in line) and line.split()[-1].startswith("/")})
    except OSError:
        return None
    for path in paths:
        try:
            return ctypes.CDLL(path)  # already loaded: the same library torch calls, not a second copy
        except OSError:
            continue
    return None


def single_threaded_torch_here() -> bool:
    """This thread's torch ops run on this thread alone: no OpenMP team of its own (other threads keep theirs).

    For threads that run torch ops beside the forward, such as the preprocessing pool's video resizes
    (models/video_processors.py). A team they formed would stay alive as long as the thread, and two teams
    make libgomp put the forward's threads to sleep between ops (bench/README.md, "One OpenMP team").
    ``torch.set_num_threads`` would not do: it also changes the count every later thread starts with, so
    this sets the thread's own OpenMP count, after torch's per-thread initialisation (which would
    overwrite it). Returns False where no OpenMP runtime is loaded (nothing to do)."""
    import torch

    torch.get_num_threads()  # torch's lazy per-thread init, first
    runtime = _openmp_runtime()
    if runtime is None:
        return False
    runtime.omp_set_num_threads(1)
    return torch.get_num_threads() == 1


__all__ = ["ThreadChoice", "apply_torch_threads", "cpu_quota_cores", "single_threaded_torch_here", "torch_threads"]
