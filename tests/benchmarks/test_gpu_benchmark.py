"""benchmarks/gpu.py --device cpu --quick runs in the suite, so the one command to run on a
GPU never rots. Its goals are read from the benchmark's own run, not asserted here: timing
under a loaded machine would make them flaky."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_cpu_benchmark_prints_its_two_ratios_for_scripts():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu.py"), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    for name in ("host cost per image new/old", "masked/dense"):
        (value,) = [m.group(1) for m in map(re.compile(rf"^{name}: ([0-9.]+)$").match, lines) if m]
        assert float(value) > 0
    assert any(line.startswith("  paper_resnet50_full: train 2,439.2M") for line in lines)
    assert "GPU table: not measured on this device" in run.stdout
