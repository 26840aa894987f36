"""Tune's scheduler and stopper for the sweep: thin, each defers to the search (search.py),
which decides from the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

if TYPE_CHECKING:
    from sparse_transfer.sweep.search import CellSearch

__all__ = ["FailFastStop", "LedgerPruning"]


class LedgerPruning(FIFOScheduler):
    """Tune's scheduler: each result goes to the search, whose per-cell pruner may stop it."""

    def __init__(self, search: CellSearch) -> None:
        super().__init__()
        self.search = search

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        stop = self.search.record(trial.trial_id, result)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "Successive halving per cell, from the ledger"


class FailFastStop(Stopper):
    def __init__(self, search: CellSearch) -> None:
        self.search = search

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.search.stopping
