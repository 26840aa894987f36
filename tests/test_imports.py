"""Each package imports on its own, in a fresh interpreter: no import cycle hides behind the
order in which the test suite happens to import things."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["sparse_transfer.transfer.loop", "sparse_transfer.pruning", "sparse_transfer.sweep.runner"],
)
def test_module_imports_alone(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
