"""`sparse-transfer compare` end to end on the quickstart world: a sweep with every
hyperparameter fixed and a tuned one, then the comparison checked against numbers computed
here by hand from the final runs in MLflow (Kendall's tau by counting pairs)."""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import child_runs, small_spec

from sparse_transfer.analysis.compare import kendall_tau
from sparse_transfer.sweep import run_sweep

CLI = [sys.executable, "-m", "sparse_transfer.cli"]
UPSTREAM = [
    {"name": name, "arch": "quickstart_cnn", "method": method, "sparsity": sparsity,
     "zoo": f"quickstart/{name}"}
    for name, method, sparsity in (
        ("dense", "dense", 0.0),
        ("gmp_70", "gmp", 0.7),
        ("gmp_90", "gmp", 0.9),
        ("magnitude_90", "magnitude", 0.9),
    )
]  # fmt: skip


def _sweep(tmp_path: Path, zoo_dir: Path, name: str, space: dict, trials: int):
    spec = small_spec(
        tmp_path / name,
        zoo_dir,
        name=name,
        upstream=UPSTREAM,
        modes=["linear"],
        search_space={"linear": space},
        search={"trials_per_cell": trials, "max_concurrent_trials": 2},
    )
    return run_sweep(spec, log=lambda _: None)


@pytest.fixture(scope="module")
def sweeps(ray_runtime, zoo_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    fixed = _sweep(tmp, zoo_dir, "fixed", {"lr": 0.1, "epochs": 3}, 1)
    tuned = _sweep(
        tmp,
        zoo_dir,
        "tuned",
        {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}, "epochs": 3},
        3,
    )
    return tmp, fixed, tuned


def _by_hand(state) -> dict[tuple[str, float], float]:
    """(method, sparsity) -> mean over datasets of (mean over seeds - dense mean over seeds)."""
    seeds: dict[tuple, list[float]] = defaultdict(list)
    for run in child_runs(state.tracking_uri, state.experiment, state.sweep_id):
        tags = run.data.tags
        if tags.get("phase") == "final" and run.info.status == "FINISHED":
            key = (tags["method"], float(tags["sparsity"]), tags["dataset"])
            seeds[key].append(run.data.metrics["test_top1"])
    means = {key: statistics.fmean(values) for key, values in seeds.items()}
    dense = {d: v for (m, _, d), v in means.items() if m == "dense"}
    deltas: dict[tuple, list[float]] = defaultdict(list)
    for (method, sparsity, dataset), value in means.items():
        if method != "dense":
            deltas[(method, sparsity)].append(value - dense[dataset])
    return {key: statistics.fmean(values) for key, values in deltas.items()}


def _tau_by_hand(a: list[float], b: list[float]) -> float:
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    n = concordant + discordant
    return (concordant - discordant) / math.sqrt((n + ties_a) * (n + ties_b))


@pytest.mark.slow
def test_compare_of_a_fixed_and_a_tuned_sweep(sweeps) -> None:
    tmp, fixed, tuned = sweeps
    # the fixed sweep searched nothing; the tuned one searched every cell
    fixed_runs = child_runs(fixed.tracking_uri, fixed.experiment, fixed.sweep_id)
    assert {r.data.tags["phase"] for r in fixed_runs} == {"final"}
    out = tmp / "out"
    done = subprocess.run(
        [*CLI, "compare", str(fixed.sweep_dir), str(tuned.sweep_dir), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for name in ("compare.csv", "compare_cells.csv", "compare.png", "compare.html"):
        assert (out / name).is_file()

    rankings = pd.read_csv(out / "compare.csv", keep_default_na=False, na_values=[""])
    left, right = _by_hand(fixed), _by_hand(tuned)
    items = sorted(left)
    assert len(rankings) == len(items) == 3
    got = {(r.method, r.sparsity): r for r in rankings.itertuples(index=False)}
    for item in items:
        assert got[item].fixed_mean_delta_pts == pytest.approx(left[item], abs=1e-9)
        assert got[item].tuned_mean_delta_pts == pytest.approx(right[item], abs=1e-9)
        # rank 1 is the smallest loss
        better = sum(left[other] > left[item] for other in items)
        assert got[item].fixed_rank == better + 1
    tau = _tau_by_hand([left[i] for i in items], [right[i] for i in items])
    assert rankings["kendall_tau"].tolist() == pytest.approx([tau] * len(items))
    low, high = rankings["tau_ci_low"].iloc[0], rankings["tau_ci_high"].iloc[0]
    assert -1 <= low <= high <= 1
    title = f"quickstart_cnn linear: Kendall's tau {tau:+.2f} (95% interval {low:+.2f} to"
    assert title in done.stdout

    cells = pd.read_csv(out / "compare_cells.csv")
    assert len(cells) == 4  # every cell, dense included, under both sweeps
    assert cells[["fixed_top1", "tuned_top1"]].notna().all().all()
    page = (out / "compare.html").read_text()
    assert "Kendall&#x27;s tau" in page and 'src="data:image/png;base64,' in page


def test_kendall_tau_against_pair_counting() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.integers(0, 4, size=6).astype(float)
        b = rng.integers(0, 4, size=6).astype(float)
        if len(set(a)) > 1 and len(set(b)) > 1:
            assert float(kendall_tau(a, b)) == pytest.approx(_tau_by_hand(list(a), list(b)))


def test_titles_name_the_group_and_the_interval() -> None:
    from sparse_transfer.analysis.compare import compare, tau_title

    def table(losses):
        rows = [("dense", 0.0, d, s, 90.0 + i + int(s)) for i, d in enumerate("ab") for s in "01"]
        rows += [
            (m, 0.9, d, s, 90.0 + i + int(s) - loss)
            for m, loss in losses.items()
            for i, d in enumerate("ab")
            for s in "01"
        ]
        frame = pd.DataFrame(rows, columns=["method", "sparsity", "dataset", "seed", "top1"])
        return frame.assign(arch="net", mode="full")

    rankings, _ = compare(table({"x": 1, "y": 2, "z": 3}), table({"x": 3, "y": 2, "z": 1}))
    assert rankings["kendall_tau"].tolist() == [-1.0] * 3
    assert tau_title(rankings).startswith("net full: Kendall's tau -1.00 (95% interval -1.00 to")


@pytest.mark.slow
def test_compare_of_sweep_directories_reads_their_ledgers_not_mlflow(sweeps) -> None:
    """The ledger is the truth: with both sweeps' MLflow stores gone, `compare` of their
    directories gives the same rankings as with them (read from MLflow above)."""
    tmp, fixed, tuned = sweeps
    args = [*CLI, "compare", str(fixed.sweep_dir), str(tuned.sweep_dir)]
    with_mlflow = subprocess.run([*args, "--out", str(tmp / "a")], capture_output=True, text=True)
    assert with_mlflow.returncode == 0, with_mlflow.stderr
    stores = {Path(s.tracking_uri.removeprefix("sqlite:///")) for s in (fixed, tuned)}
    for store in stores:
        store.rename(store.with_suffix(".away"))
    try:
        done = subprocess.run([*args, "--out", str(tmp / "b")], capture_output=True, text=True)
    finally:
        for store in stores:
            store.with_suffix(".away").rename(store)
    assert done.returncode == 0, done.stderr
    assert f"sweep {fixed.sweep_id} (its ledger" in (tmp / "b" / "compare.html").read_text()
    for name in ("compare.csv", "compare_cells.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp / "a" / name), pd.read_csv(tmp / "b" / name))
