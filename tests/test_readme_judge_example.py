"""README "Try it: a tiny judge end to end" runs as printed: its bash block (build, serve, curl) and its
Python block, with only the port and the checkpoint's directory changed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.serving import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example_blocks() -> tuple[str, str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme.split("#### Try it: a tiny judge end to end", 1)[1]
    bash = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    return bash, python


def test_the_readme_judge_example_works_as_printed(tmp_path):
    bash, python = example_blocks()
    port, checkpoint = free_port(), str(tmp_path / "tiny-judge")

    def local(text: str) -> str:
        return text.replace("/tmp/tiny-judge", checkpoint).replace("8000", str(port))

    build, serve, *rest = bash.strip().split("\n")
    curl_command = local("\n".join(line for line in rest if not line.startswith("#")))
    assert build.startswith(".venv/bin/python examples/tiny_judge.py") and serve.startswith(".venv/bin/rmserve serve")
    assert curl_command.startswith("curl ")
    subprocess.run([sys.executable, *local(build).split()[1:]], cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    argv = [sys.executable, "-m", "rmserve", *local(serve).split("&")[0].split()[1:], "--port", str(port),
            "--log-level", "warning"]
    env = {**os.environ, "RMSERVE_API_KEY": "", "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "clients",
                                                                                                 "python")])}
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        end = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            assert time.monotonic() < end, "rmserve serve never became ready"
            time.sleep(0.2)
        served = json.loads(subprocess.run(["bash", "-c", curl_command], check=True, capture_output=True, text=True,
                                           timeout=120).stdout)
        printed = subprocess.run([sys.executable, "-c", local(python)], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True, timeout=120).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    [item] = served["items"]
    assert 1 <= item["reward"] <= 5 and len(item["judgments"]) == 4
    shown = re.search(r"# \{\"items\":\[\{\"reward\":([\d.]+)", bash).group(1).rstrip(".")
    assert f"{item['reward']:.6f}".startswith(shown)  # the README's printed reward
    reward, answers = printed.strip().split(" ", 1)
    assert float(reward) == pytest.approx(item["reward"], abs=1e-3)
    assert answers == repr([j["answer"] for j in item["judgments"]])
    assert printed.strip() == re.search(r"# (\d.*)$", python.strip()).group(1)  # exactly what the README prints
