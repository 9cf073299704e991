"""``rmserve serve --backend vllm`` as a process: the flags, the model loaded in the server's loader thread
with vLLM's default compilation, rewards equal to the transformers backend's, and a SIGTERM that leaves
no vLLM engine process behind. Runs in .venv-vllm (``make test-vllm``); skipped elsewhere."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from rmserve.models import load_reward_model
from rmserve.models.types import ScoreItem
from tests.vllm.conftest import TOLERANCE, assert_apart, record, skip_without_vllm

skip_without_vllm()
import psutil  # noqa: E402  (a vLLM dependency: installed wherever vLLM is)

ITEMS = [ScoreItem(prompt=f"How many objects are in picture {k}?", response=f"There are {k} objects." * (k + 1))
         for k in range(6)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_the_vllm_backend(checkpoints, tmp_path):
    path = checkpoints["rm_plain"]
    port = free_port()
    log_path = tmp_path / "server.log"
    argv = [sys.executable, "-m", "rmserve", "serve", "--model", path, "--port", str(port), "--backend", "vllm",
            "--dtype", "float32", "--vllm-max-model-len", "1024", "--vllm-enable-prefix-caching",
            "--vllm-tensor-parallel-size", "1", "--vllm-gpu-memory-utilization", "0.5", "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            end = time.monotonic() + 300
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < end, "not ready after 300 s:\n" + log_path.read_text()[-3000:]
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            (info,) = client.get("/v1/models").json()["data"]
            body = {"items": [{"prompt": it.prompt, "response": it.response} for it in ITEMS]}
            reply = client.post("/v1/score", json=body)
        assert reply.status_code == 200, reply.text
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # vLLM's engine-core process (and its worker)
        proc.send_signal(signal.SIGTERM)  # the server alone: its own shutdown must stop vLLM's processes
        code = proc.wait(60)
        deadline = time.monotonic() + 30
        while [c for c in children if _alive(c)] and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [c.pid for c in children if _alive(c)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the process group
    assert info["device"] == "vllm:cpu" and info["max_length"] == 1024 and info["dtype"] == "float32"
    want = [o.reward for o in load_reward_model(path).score(ITEMS, batch_size=1)]
    assert_apart(want, "rm: /v1/score items")
    got = [o["reward"] for o in reply.json()["items"]]
    worst = max(abs(g - w) for g, w in zip(got, want, strict=True))
    record("rm: `rmserve serve --backend vllm` (compiled) /v1/score", worst)
    assert worst <= TOLERANCE
    assert code == 0, log_path.read_text()[-3000:]
    assert not left, f"vLLM processes left after the server exited: {left}"


def _alive(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
