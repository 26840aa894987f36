"""A trial whose worker dies is handed out again; only deaths that get it nowhere count
against it. Driven through the real searcher, ledger and MLflow record (Tune's calls made by
the test: which trial died when is what is tested)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from ledger_helpers import bare_search

from sparse_transfer.config.space import LogUniform
from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.failures import CELL_DEATHS, INFRASTRUCTURE_RETRIES
from sparse_transfer.sweep.plans import SEARCH
from sparse_transfer.sweep.search import CellSearch

EPOCHS = 20


def _search(root: Path, **settings) -> CellSearch:
    cell = Cell("dense", "digits_5to9", "linear", "quickstart_cnn", "dense", 0.0, "x")
    space = {"lr": LogUniform(distribution="loguniform", low=0.001, high=0.2), "epochs": EPOCHS}
    return bare_search(root, [cell], space, **settings)


def _attempt(search: CellSearch, n: int, epochs: range) -> str:
    """The trial handed out as Tune trial `t<n>`, reporting `epochs`, then its worker dies."""
    config = search.suggest(f"t{n}")
    assert config not in (None, "FINISHED"), f"attempt {n}: the trial was not handed out again"
    for epoch in epochs:
        search.record(f"t{n}", {"epoch": epoch, "val_top1": 50.0})
    search.on_trial_complete(f"t{n}", error=True)
    return config["trial"]["key"]


def _state(search: CellSearch) -> str:
    (plan,) = search.plans
    (trial,) = search.studies.trials(plan, SEARCH)
    return trial.state.name


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_deaths_after_progress_never_use_up_a_trial(tmp_path):
    """A spot node taken back again and again while the trial gets on: always retried."""
    search = _search(tmp_path)
    keys = {_attempt(search, n, range(n + 1, n + 2)) for n in range(2 * INFRASTRUCTURE_RETRIES)}
    assert len(keys) == 1  # the same trial each time, never a new one
    assert _state(search) == "RUNNING"
    config = search.suggest("last")
    for epoch in range(2 * INFRASTRUCTURE_RETRIES + 1, EPOCHS + 1):
        search.record("last", {"epoch": epoch, "val_top1": 60.0})
    search.on_trial_complete("last", {"epoch": EPOCHS, "val_top1": 60.0})
    assert config["trial"]["key"] in keys and _state(search) == "COMPLETE"


def test_deaths_that_get_nowhere_fail_the_trial_by_reason(tmp_path):
    """A trial that kills its own worker at epoch 3 every time: told FAIL, with why."""
    search = _search(tmp_path)
    _attempt(search, 0, range(1, 4))
    for n in range(1, INFRASTRUCTURE_RETRIES + 1):
        _attempt(search, n, range(1, 4))  # from its saved state at 0: no further
    (plan,) = search.plans
    (trial,) = search.studies.trials(plan, SEARCH)
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["outcome"] == {
        "failure": "infrastructure",
        "error": f"its worker died {INFRASTRUCTURE_RETRIES + 1} times in a row at epoch 3",
    }


def test_deaths_in_a_row_are_counted_across_driver_restarts(tmp_path):
    """The count lives in the ledger: a driver restarted between deaths goes on from it."""
    search = _search(tmp_path)
    _attempt(search, 0, range(1, 4))
    for n in range(1, 5):
        _attempt(search, n, range(1, 4))
    search.ledger.close()
    search = _search(tmp_path)  # the driver restarted: the trial is in flight again
    for n in range(5, INFRASTRUCTURE_RETRIES + 1):
        _attempt(search, n, range(1, 4))
    assert _state(search) == "FAIL"


def test_a_cell_whose_every_attempt_dies_fails_by_name(tmp_path):
    """Every trial of the cell is killed at the same epoch (out of memory there): the cell
    fails, named, after CELL_DEATHS deaths in all, instead of trying new trials forever."""
    search = _search(tmp_path, trials_per_cell=100, max_failures_per_cell=100)
    for n in range(10 * CELL_DEATHS):
        config = search.suggest(f"t{n}")
        if config in (None, "FINISHED"):
            break
        for epoch in range(1, 4):
            search.record(f"t{n}", {"epoch": epoch, "val_top1": 50.0})
        search.on_trial_complete(f"t{n}", error=True)
    assert search.finished
    (plan,) = search.plans
    assert plan.failed.startswith(f"its trials' workers died {CELL_DEATHS + 1} times")
    assert search.failed_cells() == {plan.cell.id: plan.failed}
    failed = search.studies.search(plan).user_attrs["failed"]
    assert failed == plan.failed  # in the ledger, for the report
