"""The paper specs: all eight exist, validate, say what they reproduce, what it costs and how to
run it, and hold the paper's grid (every catalog entry of the paper's raw results for the
architecture, the 12 datasets, the paper's hyperparameters and seeds), checked against the
packaged reference (sparse_transfer/reference/paper_hyperparameters.yaml)."""

from __future__ import annotations

import re
import subprocess

import pytest
from sweep_helpers import CLI, REPO

from sparse_transfer.config import load_spec
from sparse_transfer.config.spec import Choice, LogUniform
from sparse_transfer.data.paper import PAPER_DATASETS
from sparse_transfer.models.catalog import CATALOG
from sparse_transfer.reference import paper_hyperparameters, paper_value

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
    assert "GPU-hours:" in header and "benchmarks/gpu.py" in header  # measured, not guessed
    assert f"sparse-transfer sweep sweeps/{path.name}" in header
    assert "--dry-run" in header
    assert ("Reproduces the paper's" in header) != ("Beyond the paper" in header)
    spec = load_spec(path)
    assert spec.resources.precision == "fp32-strict"  # as the authors trained: no TF32
    assert "Precision: fp32-strict" in header


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_header_cites_the_raw_results_a_clone_ships(path):
    header = path.read_text().split("\nname:")[0]
    cited = re.findall(r"[\w/]+/raw_results/\w+\.csv", header)
    assert cited, header
    for citation in cited:
        assert (REPO / citation).is_file(), citation


def test_the_reference_holds_the_authors_configs():
    """The values of the authors' configs (configs/imagenet_transfer_small_lr.yaml: lr 0.001;
    configs/imagenet_transfer.yaml, for aircraft and cars: lr 0.01; the preextract config for
    linear: lr 0.01), written out here so a wrong edit of the reference fails too."""
    full, linear = (paper_hyperparameters()["modes"][m] for m in ("full", "linear"))
    assert full["lr"] == 0.001 and full["dataset_overrides"] == {
        "aircraft": {"lr": 0.01},
        "cars": {"lr": 0.01},
    }
    assert linear["lr"] == 0.01 and linear["dataset_overrides"] == {}
    for mode in (full, linear):
        assert (mode["momentum"], mode["weight_decay"], mode["batch_size"]) == (0.9, 5e-4, 64)
        assert (mode["epochs"], mode["lr_schedule"]) == (150, "authors_step")
    assert (full["normalization"], linear["normalization"]) == ("dataset", "imagenet")


@pytest.mark.parametrize(("arch", "mode"), GRIDS)
def test_fixed_specs_hold_the_papers_grid_and_hyperparameters(arch, mode):
    spec = load_spec(REPO / "sweeps" / f"paper_{arch}_{mode}.yaml")
    paper = {n for n in CATALOG.names() if n.startswith(f"{arch}.")}
    paper = {n for n in paper if CATALOG.get(n).in_paper_results}
    assert {u.catalog for u in spec.upstream} == paper
    assert sorted(spec.datasets) == PAPER_12 and spec.modes == [mode]
    assert len(spec.seeds) == paper_value(mode, "cifar10", "seeds")
    assert not spec.searches
    for dataset in spec.datasets:
        space = spec.space(mode, dataset)
        for name in ("lr", "momentum", "weight_decay", "batch_size", "epochs", "label_smoothing"):
            assert space[name] == paper_value(mode, dataset, name), (dataset, name)
        assert space["lr_schedule"] == "authors_step" == paper_value(mode, dataset, "lr_schedule")
    expected = {"full": (0.01, 0.001), "linear": (0.01, 0.01)}[mode]  # the authors' configs
    assert (spec.space(mode, "aircraft")["lr"], spec.space(mode, "cifar10")["lr"]) == expected


def test_the_step_schedule_is_the_authors_51_50_49_epochs():
    """The authors' ExponentialLR steps in on_epoch_end after 0-indexed epochs 50 and 100
    (policies/trainers.py:134-137 with `epochs: [50, 50, 150]`): 51, 50 and 49 epochs at lr,
    lr/10 and lr/100. Counted here from the lr each epoch trains at."""
    import torch

    import sparse_transfer.pruning  # noqa: F401  (transfer.loop and pruning import each other)
    from sparse_transfer.transfer.loop import make_schedule

    hparams = {"epochs": 150, "lr_schedule": "authors_step"}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.001)
    schedule = make_schedule(optimizer, hparams)
    lrs = []
    for _ in range(150):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    counts = [sum(lr == pytest.approx(0.001 * 0.1**k) for lr in lrs) for k in range(3)]
    assert counts == [51, 50, 49]
    assert lrs[50] == 0.001 and lrs[51] == pytest.approx(1e-4)
    assert lrs[100] == pytest.approx(1e-4) and lrs[101] == pytest.approx(1e-5)


def test_a_bare_step_schedule_is_refused_naming_the_authors_one():
    from sparse_transfer.config.space import check_space

    with pytest.raises(ValueError, match="unknown schedule 'step'.*authors_step"):
        check_space("full", {"lr_schedule": "step"})


@pytest.mark.parametrize(("arch", "mode"), GRIDS)
def test_tuned_specs_search_the_same_grid_per_cell(arch, mode):
    fixed = load_spec(REPO / "sweeps" / f"paper_{arch}_{mode}.yaml")
    tuned = load_spec(REPO / "sweeps" / f"paper_{arch}_{mode}_tuned.yaml")
    assert [u.catalog for u in tuned.upstream] == [u.catalog for u in fixed.upstream]
    assert tuned.datasets == fixed.datasets and tuned.seeds == fixed.seeds
    assert tuned.searches and tuned.early_stopping.scheduler == "asha"
    space = tuned.space(mode)
    assert isinstance(space["lr"], LogUniform) and isinstance(space["weight_decay"], LogUniform)
    for dataset in tuned.datasets:
        lr, paper_lr = tuned.space(mode, dataset)["lr"], paper_value(mode, dataset, "lr")
        assert isinstance(lr, LogUniform)
        if mode == "full":  # centred on the paper's lr (geometrically)
            assert lr.low * lr.high == pytest.approx(paper_lr**2), dataset
        assert lr.low < paper_lr < lr.high, dataset
        # the paper's fixed configuration is the first trial of every cell
        (first,) = tuned.enqueued(mode, dataset)
        assert first["lr"] == paper_lr and first["weight_decay"] == 5e-4, dataset
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


@pytest.mark.parametrize("mode", ["full", "linear"])
def test_normalization_is_the_papers_for_the_mode(mode):
    """Full finetuning normalizes with each dataset's own statistics, linear finetuning with
    ImageNet's (the reference's `normalization`), for every published upstream's preprocessing."""
    from sparse_transfer.data.source import transfer_preprocessing
    from sparse_transfer.reference import IMAGENET_STATS

    rule = paper_hyperparameters()["modes"][mode]["normalization"]
    for entry in {CATALOG.get(n).preprocessing for n in CATALOG.names()}:
        for name in PAPER_12:
            dataset = PAPER_DATASETS.get(name)
            pre = transfer_preprocessing(dataset, entry, mode)
            if rule == "dataset":
                assert (pre.mean, pre.std) == (dataset.stats.mean, dataset.stats.std), name
            else:
                assert list(pre.mean) == IMAGENET_STATS["mean"], name
                assert list(pre.std) == IMAGENET_STATS["std"], name
            assert pre.interpolation == entry.interpolation  # the rest stays the upstream's
