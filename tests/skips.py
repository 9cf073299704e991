"""Skip policy: a skip must be a fact about the machine, never a way for a suite to pass unseen.

- ``optional_import(name, reason)``: a test needing an optional package skips only when that
  package is *not installed at all*. If it is installed, it is imported normally, so a missing
  import inside it (vLLM without one of its own dependencies) is an error, not a skip. With
  ``--require=NAME`` (``make test-vllm`` passes ``--require=vllm``) even "not installed" is an
  error: the suite was run to test that package.
- ``--fail-all-skipped`` (``.ci/run`` sets it through ``PYTEST_ADDOPTS``): a session in which
  something was skipped and no test ran (every test skipped, or every module skipped while being
  imported) fails, with the reasons; ``-rs`` lists every skip.

Loaded by tests/conftest.py, and usable alone as a plugin (``-p tests.skips``; its own test does).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import pytest

_REQUIRED: set[str] = set()


def pytest_addoption(parser) -> None:
    group = parser.getgroup("rmserve skips")
    group.addoption("--require", action="append", default=[], metavar="PACKAGE",
                    help="an optional package this run must test: not installed is an error, not a skip")
    group.addoption("--fail-all-skipped", action="store_true",
                    help="fail the session if it collected tests and every one was skipped (CI)")


def pytest_configure(config) -> None:
    _REQUIRED.clear()
    for value in config.getoption("--require", default=[]) or []:
        _REQUIRED.update(name.strip() for name in value.split(",") if name.strip())


def optional_import(name: str, reason: str) -> ModuleType:
    """Import ``name``; skip (with ``reason``) only when it is not installed and not ``--require``d."""
    __tracebackhide__ = True  # the skip is reported at the caller's line, not here
    if importlib.util.find_spec(name) is None:
        if name in _REQUIRED:
            raise ImportError(f"{name} is required in this run (--require={name}) but not installed: {reason}")
        pytest.skip(reason, allow_module_level=True)
    return importlib.import_module(name)  # installed: any error inside it is a failure


def pytest_sessionfinish(session, exitstatus) -> None:
    if not session.config.getoption("--fail-all-skipped", default=False):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    ran = sum(len(reporter.stats.get(key, [])) for key in ("passed", "failed", "error", "xfailed", "xpassed"))
    # A module skipped while importing collects nothing (exit 5); skipped tests collect and exit 0.
    if ran == 0 and reporter.stats.get("skipped") and exitstatus in (pytest.ExitCode.OK,
                                                                      pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter.write_sep("!", "every test was skipped (--fail-all-skipped): this suite tested nothing",
                           red=True)
