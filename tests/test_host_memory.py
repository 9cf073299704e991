"""rmserve/host_memory.py: a forward's freed memory is reused, not page-faulted back in.

Each case runs in a fresh interpreter: mallopt settings are process-wide and would leak into other tests.
The workload is a forward's allocation pattern (matmuls, an activation, blocks of 3-11 MB made and freed
every step) on a thread other than the main one, as the server's worker is. With glibc's defaults it page-faults
tens of thousands of times per repetition here. Once ``retain_freed_memory`` has run, the steady state
should fault (almost) never.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from rmserve.host_memory import SETTINGS, retain_freed_memory

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt and per-thread fault counts are glibc / Linux")

WORKLOAD = """
import json, resource, sys, threading
import torch
torch.set_num_threads(1)
if sys.argv[1] == "retain":
    from rmserve.host_memory import retain_freed_memory
    applied = retain_freed_memory()
    assert applied, "nothing applied"
faults = []
def forward_steps():
    for _ in range(3):
        start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(20):  # every block made and freed each step, as a forward's activations are
            h = torch.randn(2048, 512)
            y = torch.nn.functional.silu(h @ torch.randn(512, 1376)) @ torch.randn(1376, 512)
            del h, y
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - start)
thread = threading.Thread(target=forward_steps)
thread.start()
thread.join()
print(json.dumps(faults))
"""


def faults_per_repetition(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_instead_of_faulted_back():
    default, retained = faults_per_repetition("default"), faults_per_repetition("retain")
    # The comparison is only meaningful if the default really faults in steady state (it did: 13,000-27,000).
    assert min(default[1:]) > 2000, default
    assert max(retained[1:]) < 100, (retained, default)  # the first repetition grows the arena once


def test_a_users_own_malloc_variables_win():
    every = {variable: "0" for _, _, variable in SETTINGS.values()}
    assert retain_freed_memory(every) == {}  # all set by the user: mallopt is never called
    code = ("import json; from rmserve.host_memory import retain_freed_memory; "
            "print(json.dumps(retain_freed_memory({'MALLOC_TRIM_THRESHOLD_': '0', 'MALLOC_TOP_PAD_': '0'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == {"mmap_threshold": SETTINGS["mmap_threshold"][1]}


def test_rmserve_serve_applies_it_unless_told_not_to(default_model_dir):
    import os
    import signal
    import time

    from rmserve.config import ServerConfig, load_config
    from tests.serving import free_port

    assert ServerConfig().retain_host_memory is True
    assert load_config({}, env={"RMSERVE_RETAIN_HOST_MEMORY": "0"}).retain_host_memory is False
    argv = [sys.executable, "-m", "rmserve", "serve", "--model", default_model_dir, "--port", str(free_port()),
            "--log-level", "info"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RMSERVE_API_KEY": ""})
    lines = []
    try:
        end = time.monotonic() + 60
        for line in proc.stdout:  # the line comes before the model loads
            lines.append(line)
            if "host memory:" in line or time.monotonic() > end:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    want = str({name: value for name, (_, value, _) in SETTINGS.items()})
    assert any(f"host memory: freed memory kept for reuse ({want})" in line for line in lines), "".join(lines)
