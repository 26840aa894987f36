"""The searcher's state is bounded: per cell it keeps plain counts, never an Optuna object, and
what it tracks per trial goes once the trial is told (benchmarks/sweep_core.py `scale` measures
the memory at 100,000 trials)."""

from __future__ import annotations

import gc

import optuna
from ledger_helpers import bare_search, drive

from sparse_transfer.config.space import LogUniform
from sparse_transfer.sweep.cells import Cell

CELLS = 40


def _live(kind: type) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


def test_the_searcher_keeps_no_optuna_object_per_cell_and_nothing_per_told_trial(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies_before = _live(optuna.Study)
    samplers_before = _live(optuna.samplers.TPESampler)
    cells = [
        Cell(f"u{i}", "digits_5to9", "linear", "quickstart_cnn", "dense", 0.0, "x")
        for i in range(CELLS)
    ]
    space = {"lr": LogUniform(distribution="loguniform", low=0.001, high=0.2), "epochs": 2}
    search = bare_search(
        tmp_path,
        cells,
        space,
        record=False,
        trials_per_cell=3,
        max_concurrent=5,
        max_failures_per_cell=1,
        seeds=[0],
    )
    assert _live(optuna.samplers.TPESampler) - samplers_before == CELLS  # one per searching cell

    def result_of(config: dict, epoch: int) -> dict:
        score = 100 * config["hparams"]["lr"] * epoch
        return {"epoch": epoch, "val_top1": score, "test_top1": score}

    ids = drive(search, result_of)
    assert ids == CELLS * (3 + 1)
    assert _live(optuna.Study) == studies_before  # studies are opened by name when asked
    assert _live(optuna.samplers.TPESampler) == samplers_before  # every search is over
    assert len({id(plan.searched) for plan in search.plans}) == 1  # one space, shared
    told = (search.live, search.studies._ids, search.failures.reached, search.budget.live)
    assert not any(told), told
    assert not search.early_stopping.pruned and not search.queue.orphans
    search.ledger.close()
