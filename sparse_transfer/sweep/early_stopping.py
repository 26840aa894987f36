"""Early stopping within a cell, in the ledger: each epoch's score of a search trial is stored
as its intermediate value, and the cell's pruner (Optuna's `SuccessiveHalvingPruner`, which
writes its rungs through the same storage) decides whether the trial stops there. Tune's
scheduler (scheduling.py) asks, through the searcher, at every result.

A decision is written to the ledger before the trial stops, with the rung it was taken at, so
a crash in between still ends the trial PRUNED at that rung (the searcher reads `pruned_at`
at its next start)."""

from __future__ import annotations

from sparse_transfer import metrics as M
from sparse_transfer.sweep.failures import FAILURE
from sparse_transfer.sweep.plans import SEARCH, CellPlan, Settings, TrialKey
from sparse_transfer.sweep.studies import Studies

__all__ = ["EarlyStopping", "outcome"]


class EarlyStopping:
    def __init__(self, studies: Studies, settings: Settings) -> None:
        self.studies = studies
        self.settings = settings
        self.pruned: set[TrialKey] = set()  # stopped early, not told yet

    def record(self, plan: CellPlan, key: TrialKey, result: dict) -> bool:
        """One epoch's result of a running trial: True when its cell's pruner stops it here."""
        if key in self.pruned:  # a result Tune had in flight when it stopped the trial
            return True
        metric = self.settings.metric
        if key.phase != SEARCH or metric not in result or not plan.searched:
            return False
        ledger = self.studies.ledger
        storage, storage_id = ledger.storage, self.studies.storage_id(plan, key)
        step = int(result[M.EPOCH])
        if step not in storage.get_trial(storage_id).intermediate_values:
            storage.set_trial_intermediate_value(storage_id, step, float(result[metric]))
        if self.settings.pruner is None or step >= int(self.studies.hparams(plan, key)["epochs"]):
            return False  # no early stopping, or the last epoch: nothing left to stop
        # The rung the pruner records and the decision reach S3 together: a crash in between
        # would lose the decision but keep the rung.
        with ledger.backend.atomic():
            study = self.studies.search(plan)
            if not study.pruner.prune(study, storage.get_trial(storage_id)):
                return False
            storage.set_trial_user_attr(storage_id, "pruned_at", step)
            storage.set_trial_user_attr(storage_id, "outcome", outcome(result))
        self.pruned.add(key)
        return True


def outcome(result: dict) -> dict:
    """What the ledger keeps of a trial's last result: numbers and the failure, if any."""
    keep = {
        k: v for k, v in result.items() if isinstance(v, int | float) and not k.startswith("_")
    }
    for name in (FAILURE, "error", "node", "dataset"):
        if name in result:
            keep[name] = str(result[name])[:2000]
    return keep
