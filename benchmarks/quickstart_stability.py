"""Is the quickstart's headline stable from run to run? Runs it N times, each with its own
search seed and final-run seeds, in fresh directories, and prints each run's wall time and the
summary's deltas side by side, with the spread (max - min) per row.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/quickstart_stability.py --runs 3

Same seeds would only show that a run is reproducible; other seeds show whether the headline
depends on them. Wall times depend on what else the machine runs: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def run_once(index: int, workdir: Path) -> tuple[float, pd.DataFrame]:
    seeds = [3 * index + k for k in range(3)]
    command = [
        sys.executable,
        "-m",
        "sparse_transfer.cli",
        "quickstart",
        "--set",
        f"search.seed={index}",
        "--set",
        f"seeds={seeds}",
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"run {index} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (summary,) = workdir.glob("sparse-transfer-runs/sweeps/*/report/summary.csv")
    return wall, pd.read_csv(summary, keep_default_na=False, na_values=[""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    deltas = {}
    for index in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as workdir:
            wall, summary = run_once(index, Path(workdir))
        load = os.getloadavg()[0]
        print(f"run {index}: {wall:.0f} s wall (load average {load:.1f})", flush=True)
        key = summary.set_index(["mode", "method", "sparsity"])
        deltas[f"run {index}"] = key["mean_delta_pts"]
    table = pd.DataFrame(deltas)
    table["spread"] = table.max(axis=1) - table.min(axis=1)
    print("\nmean delta vs dense (points), per run:")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
