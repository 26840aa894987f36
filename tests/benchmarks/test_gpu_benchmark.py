"""benchmarks/gpu.py runs in the suite, so the one command to run on a GPU never rots:
`--device cpu --quick` prints the CPU goals, and `--table` then runs the GPU table's own code
(every row, the verdicts and the projections) at tiny sizes on the CPU. Its goals are read
from the benchmark's own run, not asserted here: timing under a loaded machine would make
them flaky."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, str(ROOT / "benchmarks/gpu.py"), "--device", "cpu", "--quick"]


def _rate(line: str, before: str = "") -> float:
    """The images/s that follow `before` on a table line."""
    (value,) = re.findall(rf"{before} +([0-9.]+) img/s", line)
    return float(value)


@pytest.mark.slow
def test_the_cpu_benchmark_prints_its_ratios_then_runs_every_row_of_the_gpu_table():
    run = subprocess.run(
        [*COMMAND, "--table", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    for name in ("host cost per image new/old", "masked/dense"):
        (value,) = [m.group(1) for m in map(re.compile(rf"^{name}: ([0-9.]+)$").match, lines) if m]
        assert float(value) > 0
    assert any(line.startswith("  paper_resnet50_full: train 2,439.2M") for line in lines)
    assert "GPU table: not measured on this device" in run.stdout

    table = lines[lines.index("training steps (dense vs 90% masked; images/s, ms/step, MFU)") :]
    for arch in ("resnet50", "mobilenetv1"):
        for precision in ("fp32-strict", "fp32", "bf16"):
            for kind in ("dense", "masked"):
                (line,) = [x for x in table if x.split()[:3] == [arch, precision, kind]]
                assert _rate(line) > 0 and "ms/step" in line
            assert any(x.strip().startswith(f"{arch} {precision} masked/dense: ") for x in table)
            assert any(x.strip().startswith(f"eval forward {arch} {precision}: ") for x in table)
    assert sum("bf16 masked, eager" in x or "bf16 masked, torch.compile" in x for x in table) == 2
    for kind in ("cifar", "0.2MP", "0.8MP"):
        (line,) = [x for x in table if x.split()[:1] == [kind] and "new/old" in x]
        assert _rate(line, " old") > 0 and _rate(line, " new") > 0
        assert any(x.startswith(f"  {kind}: model ") and "-bound" in x for x in table)
    assert sum(re.fullmatch(r"  0\.[28]MP: +[0-9]+ img/s", x) is not None for x in table) == 2
    assert any(x.startswith("two trials sharing one device") for x in table)
    specs = sorted(p.stem for p in (ROOT / "sweeps").glob("paper_*.yaml"))
    projected = [x.split()[0] for x in table if "GPU-h new" in x]
    assert projected == [s for s in specs for _ in ("spec", "bf16")]


def test_the_table_on_a_cpu_needs_quick():
    run = subprocess.run([*COMMAND[:-1], "--table"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "--table on a CPU needs --quick" in run.stderr
