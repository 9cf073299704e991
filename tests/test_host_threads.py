"""torch's intra-op threads within the container's CPU quota (rmserve/host_threads.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rmserve.config import ServerConfig, load_config
from rmserve.host_threads import cpu_quota_cores, torch_threads


def _tree(tmp_path, files: dict[str, str], cgroup: str):
    for rel, text in files.items():
        path = tmp_path / "fs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    (tmp_path / "cgroup").write_text(cgroup)
    return str(tmp_path / "fs"), str(tmp_path / "cgroup")


@pytest.mark.parametrize(
    "files, cgroup, cores",
    [
        ({"cpu.max": "max 100000"}, "0::/\n", None),  # v2, no limit
        ({"cpu.max": "150000 100000"}, "0::/\n", 1.5),  # v2 at the namespace root (docker --cpus 1.5)
        ({"kubepods/pod1/cpu.max": "400000 100000", "kubepods/cpu.max": "max 100000", "cpu.max": "max 100000"},
         "0::/kubepods/pod1\n", 4.0),  # v2, the process's own cgroup
        ({"kubepods/pod1/cpu.max": "max 100000", "kubepods/cpu.max": "200000 100000"},
         "0::/kubepods/pod1\n", 2.0),  # v2: the tightest ancestor
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu:/\n", None),  # v1, none
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu:/\n", 3.0),  # v1 root
        ({"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"},
         "3:cpu,cpuacct:/docker/abc\n0::/\n", 0.5),  # v1, combined mount, nested path
        ({"cpu.max": "garbage"}, "0::/\n", None),
        ({}, "", None),  # no cgroup files at all (macOS, a bare chroot)
    ],
)
def test_cpu_quota_reads_cgroup_v1_and_v2(tmp_path, files, cgroup, cores):
    root, proc = _tree(tmp_path, files, cgroup)
    assert cpu_quota_cores(root, proc) == cores


def test_the_flag_wins_then_omp_num_threads_then_the_quota():
    assert torch_threads(3, {"OMP_NUM_THREADS": "8"}, 1.0, 64).threads == 3
    assert torch_threads(None, {"OMP_NUM_THREADS": "8"}, 1.0, 64).threads is None  # torch already read it
    choice = torch_threads(None, {}, 3.5, 64)
    assert choice.threads == 4 and "quota 3.5" in choice.reason  # a partial CPU still gets a thread
    assert torch_threads(None, {}, 0.25, 64).threads == 1
    assert torch_threads(None, {}, 8.0, 4).threads is None  # the quota is not the limit: torch's default stands
    assert torch_threads(None, {}, None, 4).threads is None


def test_torch_threads_is_a_server_setting_validated_at_startup():
    assert ServerConfig().torch_threads is None
    assert load_config({}, env={"RMSERVE_TORCH_THREADS": "2"}).torch_threads == 2
    with pytest.raises(ValueError, match="torch_threads must be >= 1"):
        load_config({"torch_threads": 0}, env={})


def _run(code: str, env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=full,
                         check=True)
    return out.stdout.strip()


def test_the_serve_and_score_commands_set_torchs_threads_before_loading():
    """In a fresh process: `rmserve serve --torch-threads 1` and a quota of one CPU both reach torch."""
    code = """
import sys, torch
from rmserve import cli, host_threads
import rmserve.server.shutdown as shutdown
shutdown.serve = lambda app, config: 0  # no server: only the start-up path
if sys.argv[-1] == "quota":
    host_threads.cpu_quota_cores = lambda *a, **k: 1.0
    argv = ["serve", "--model", "/nowhere"]
elif sys.argv[-1] == "score":  # the threads are set before the load, which then fails on /nowhere
    argv = ["score", "--model", "/nowhere", "--input", "x", "--output", "y", "--torch-threads", "1"]
else:
    argv = ["serve", "--model", "/nowhere", "--torch-threads", "1"]
before = torch.get_num_threads()
try:
    cli.main(argv)
except Exception:
    pass
print(before, torch.get_num_threads())
"""
    for mode in ("flag", "quota", "score"):
        before, after = _run(code.replace("sys.argv[-1]", repr(mode)), {}).split()
        if int(before) == 1:
            pytest.skip("torch already uses one thread here: nothing to lower")
        assert int(after) == 1, mode
    assert _run(code.replace("sys.argv[-1]", "'quota'"), {"OMP_NUM_THREADS": "2"}).split() == ["2", "2"]


def test_single_threaded_torch_here_keeps_a_thread_from_forming_a_team():
    """A fresh process: a second thread's big torch op forms an OpenMP team (a helper OS thread), unless the
    thread called single_threaded_torch_here first; the main thread keeps its count either way."""
    code = """
import os, threading, torch
from rmserve.host_threads import single_threaded_torch_here
x = torch.randn(8, 3, 360, 640)
def os_threads():
    return len(os.listdir("/proc/self/task"))
def run(setup):
    out, done = {}, threading.Event()
    def body():
        out["set"] = single_threaded_torch_here() if setup else None
        out["here"] = torch.get_num_threads()
        before = os_threads()
        torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True)
        out["new_threads"] = os_threads() - before
        done.wait()
    t = threading.Thread(target=body)
    t.start()
    while "new_threads" not in out:
        pass
    done.set()
    t.join()
    return out
import json
main = torch.get_num_threads()
print(json.dumps([main, run(True), run(False), torch.get_num_threads()]))
"""
    main, with_setup, without, main_after = json.loads(_run(code, {"OMP_NUM_THREADS": "2"}))
    assert main == main_after == 2  # the process-wide count is untouched
    assert with_setup == {"set": True, "here": 1, "new_threads": 0}
    assert without["here"] == 2 and without["new_threads"] >= 1  # the team this guards against
