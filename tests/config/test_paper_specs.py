"""The paper specs: all eight exist, validate, say what they reproduce, what it costs and how to
run it, and hold the paper's grid (every catalog entry of the paper's raw results for the
architecture, the 12 datasets, the paper's hyperparameters and seeds)."""

from __future__ import annotations

import subprocess

import pytest
from sweep_helpers import CLI, REPO

from sparse_transfer.config import load_spec
from sparse_transfer.config.spec import Choice, LogUniform
from sparse_transfer.data.paper import PAPER_DATASETS
from sparse_transfer.models.catalog import CATALOG

GRIDS = [(arch, mode) for arch in ("resnet50", "mobilenetv1") for mode in ("full", "linear")]
PAPER_SPECS = [
    REPO / "sweeps" / f"paper_{arch}_{mode}{suffix}.yaml"
    for arch, mode in GRIDS
    for suffix in ("", "_tuned")
]
PAPER_12 = sorted(n for n in PAPER_DATASETS.names() if n != "image_folder")


def test_sparse_transfer_validate_passes_on_every_paper_spec():
    done = subprocess.run(
        [*CLI, "validate", *map(str, PAPER_SPECS)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok (") == 8


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_header_says_what_it_reproduces_the_gpu_hours_and_the_command(path):
    header = path.read_text().split("\nname:")[0]
    assert "GPU-hours: about" in header
    assert f"sparse-transfer sweep sweeps/{path.name}" in header
    assert "--dry-run" in header
    assert ("Reproduces the paper's" in header) != ("Beyond the paper" in header)


@pytest.mark.parametrize(("arch", "mode"), GRIDS)
def test_fixed_specs_hold_the_papers_grid_and_hyperparameters(arch, mode):
    spec = load_spec(REPO / "sweeps" / f"paper_{arch}_{mode}.yaml")
    paper = {n for n in CATALOG.names() if n.startswith(f"{arch}.")}
    paper = {n for n in paper if CATALOG.get(n).in_paper_results}
    assert {u.catalog for u in spec.upstream} == paper
    assert sorted(spec.datasets) == PAPER_12 and spec.modes == [mode]
    assert len(spec.seeds) == (3 if mode == "full" else 5)
    assert not spec.searches
    for dataset in spec.datasets:
        space = spec.space(mode, dataset)
        vehicles = mode == "full" and dataset in ("aircraft", "cars")
        assert space["lr"] == (0.1 if vehicles else 0.01), dataset
        assert (space["momentum"], space["weight_decay"]) == (0.9, 5e-4)
        assert (space["batch_size"], space["epochs"], space["lr_schedule"]) == (64, 150, "step")


@pytest.mark.parametrize(("arch", "mode"), GRIDS)
def test_tuned_specs_search_the_same_grid_per_cell(arch, mode):
    fixed = load_spec(REPO / "sweeps" / f"paper_{arch}_{mode}.yaml")
    tuned = load_spec(REPO / "sweeps" / f"paper_{arch}_{mode}_tuned.yaml")
    assert [u.catalog for u in tuned.upstream] == [u.catalog for u in fixed.upstream]
    assert tuned.datasets == fixed.datasets and tuned.seeds == fixed.seeds
    assert tuned.searches and tuned.early_stopping.scheduler == "asha"
    space = tuned.space(mode)
    assert isinstance(space["lr"], LogUniform) and isinstance(space["weight_decay"], LogUniform)
    assert space["lr"].low <= 0.01 <= space["lr"].high, "the paper's lr is in the search space"
    if mode == "full":
        assert isinstance(space["label_smoothing"], Choice)


def test_a_dry_run_spec_is_the_same_grid_at_a_tiny_cost():
    spec = load_spec(REPO / "sweeps" / "paper_resnet50_full_tuned.yaml")
    dry = spec.as_dry_run()
    assert dry.dry_run and dry.name == "paper_resnet50_full_tuned-dryrun"
    assert dry.tracking.experiment == "paper_resnet50_full_tuned-dryrun"
    assert [u.catalog for u in dry.upstream] == [u.catalog for u in spec.upstream]
    assert dry.datasets == spec.datasets and dry.seeds == spec.seeds[:1]
    assert dry.search.trials_per_cell == 1 and dry.early_stopping.scheduler == "none"
    for dataset in dry.datasets:
        space = dry.space("full", dataset)
        assert space["epochs"] == 1 and space["batch_size"] == 8
        assert space["lr"] == spec.space("full", dataset)["lr"]
