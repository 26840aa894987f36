"""Under CI, a test that skips because a file is missing fails instead.

A user's clone must run every test the project has: a check that quietly skips when a file
outside the repository is absent (as the paper-table tests once did, looking for `../shared`)
hides itself from exactly the runs that matter. A skip names a missing file when its reason
says so ("not found", "no such file", "missing", "does not exist") or names a path that does
not exist. Skips for what a machine lacks (a tool, a privilege) are left alone, and so is
every skip outside CI.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

MISSING_WORDS = re.compile(r"not found|no such file|missing|does not exist|SPARSE_TRANSFER_SHARED")
PATH_LIKE = re.compile(r"(?:\.{0,2}/)?(?:[\w.-]+/)+[\w.-]+")


def names_a_missing_file(reason: str) -> bool:
    if MISSING_WORDS.search(reason):
        return True
    return any(not Path(token).exists() for token in PATH_LIKE.findall(reason))


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and under_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if names_a_missing_file(reason):
        report.outcome = "failed"
        report.longrepr = f"under CI a test may not skip for a missing file: {reason}"
