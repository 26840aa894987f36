"""The suite's guard against tests that skip for want of a file (tests/skip_guard.py), run on
an inner pytest session with and without CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

INNER = """
import pytest

def test_skips_for_a_missing_file():
    pytest.skip("paper raw results not found (set SPARSE_TRANSFER_SHARED)")

def test_skips_naming_an_absent_path():
    pytest.skip("no reference at /nonexistent/shared/reference/paper_raw_results")

def test_skips_for_what_the_machine_lacks():
    pytest.skip("no Chromium here (apt-get install chromium)")

@pytest.mark.parametrize("method", ["dense"])
def test_skips_for_a_case_that_does_not_apply(method):
    pytest.skip(f"{method} has no parameters")
"""


def _run_inner(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "conftest.py").write_text("from skip_guard import pytest_runtest_makereport\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_skip_for_a_missing_file_fails(tmp_path, ci):
    out = _run_inner(tmp_path, ci)
    assert "2 failed, 2 skipped" in out, out
    assert "FAILED test_inner.py::test_skips_for_a_missing_file" in out
    assert "FAILED test_inner.py::test_skips_naming_an_absent_path" in out
    assert "under CI a test may not skip for a missing file" in out


def test_outside_ci_every_skip_stays_a_skip(tmp_path):
    assert "4 skipped" in _run_inner(tmp_path, None)
