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
from sparse_transfer.sweep.search import INFRASTRUCTURE_RETRIES, CellSearch

EPOCHS = 20


def _search(root: Path) -> CellSearch:
    cell = Cell("dense", "digits_5to9", "linear", "quickstart_cnn", "dense", 0.0, "x")
    space = {"lr": LogUniform(distribution="loguniform", low=0.001, high=0.2), "epochs": EPOCHS}
    return bare_search(root, [cell], space)


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
    (trial,) = search.ledger.trials(plan.search)
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
    (trial,) = search.ledger.trials(plan.search)
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["outcome"] == {
        "failure": "infrastructure",
        "error": f"its worker died {INFRASTRUCTURE_RETRIES + 1} times in a row at epoch 3",
    }
