"""The skip policy (tests/skips.py) that keeps a suite from passing while testing nothing: every skip is
listed (-rs), a session whose every test skipped fails under --fail-all-skipped (what .ci/run sets), and
an optional package named by --require, or broken inside, is an error rather than a skip."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pytest(tmp_path, source: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repo's config: only the plugin under test
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.skips", "-rs",
           "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_probe.py"), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)]), "PYTEST_ADDOPTS": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)


SKIPPED_MODULE = """
from tests.skips import optional_import
optional_import("rmserve_no_such_package", "the probe package is not installed")
def test_a(): pass
def test_b(): pass
"""
SKIPPED_TESTS = """
from tests.skips import optional_import
def test_a(): optional_import("rmserve_no_such_package", "the probe package is not installed")
def test_b(): optional_import("rmserve_no_such_package", "the probe package is not installed")
"""


def test_a_session_that_skipped_everything_fails_in_ci_and_says_why(tmp_path):
    plain = run_pytest(tmp_path, SKIPPED_TESTS)
    assert plain.returncode == 0, plain.stdout  # a developer's run: a skip is not an error
    for source in (SKIPPED_TESTS, SKIPPED_MODULE):
        ci = run_pytest(tmp_path, source, "--fail-all-skipped")
        assert ci.returncode == 1, ci.stdout
        assert "SKIPPED" in ci.stdout and "the probe package is not installed" in ci.stdout
        assert "every test was skipped" in ci.stdout


def test_some_tests_ran_is_not_all_skipped(tmp_path):
    source = "import pytest\ndef test_runs(): pass\n@pytest.mark.skip(reason='machine lacks X')\ndef test_s(): pass\n"
    out = run_pytest(tmp_path, source, "--fail-all-skipped")
    assert out.returncode == 0, out.stdout
    assert "SKIPPED [1]" in out.stdout and "machine lacks X" in out.stdout and "1 passed, 1 skipped" in out.stdout


def test_a_required_package_that_is_missing_is_an_error(tmp_path):
    out = run_pytest(tmp_path, SKIPPED_MODULE, "--require=rmserve_no_such_package")
    assert out.returncode == 2, out.stdout  # collection error: the suite was run to test that package
    assert "rmserve_no_such_package is required in this run" in out.stdout and "skipped" not in out.stdout


def test_an_installed_package_failing_inside_is_an_error_not_a_skip(tmp_path):
    # Installed (find_spec sees it) but one of its own imports is missing: vLLM without a dependency.
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import rmserve_no_such_dependency\n")
    out = run_pytest(tmp_path, SKIPPED_MODULE.replace("rmserve_no_such_package", "brokenpkg"))
    assert out.returncode == 2, out.stdout
    assert "ModuleNotFoundError" in out.stdout and "rmserve_no_such_dependency" in out.stdout
    assert "skipped" not in out.stdout
