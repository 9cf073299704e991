"""A second SIGTERM/SIGINT exits at once: the first only starts draining (readiness off, listeners open for
--shutdown-delay-s), the second does not wait for that delay or the drain budget. A real ``rmserve serve``."""

from __future__ import annotations

import signal
import time

import httpx

from tests.ops import rmserve_process

DELAY_S = 30.0  # what the first signal alone would wait before even draining


def test_a_second_signal_exits_at_once(default_model_dir):
    """SIGTERM, then Ctrl-C (SIGINT): both signals are handled, one process start (the default suite's time)."""
    with rmserve_process(default_model_dir, "--shutdown-delay-s", str(DELAY_S), "--drain-timeout-s", "30") as server:
        proc = server.proc
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        while httpx.get(server.url + "/readyz", timeout=2).status_code != 503:  # draining, still listening
            assert time.monotonic() < end, server.log()
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, server.log()  # the first signal alone keeps it up for the delay
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=DELAY_S / 2)
        took = time.monotonic() - sent
        log = server.log()
    assert took < 5.0, (took, log)
    assert "second SIGINT: exiting now" in log, log
    assert code is not None
