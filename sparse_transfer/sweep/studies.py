"""Each cell's two Optuna studies in the ledger, its search and its final runs, opened by name
when asked for, and the ledger look-ups of one trial. The searcher keeps no Optuna object per
cell: a `Study` per cell held about 0.5 kB per trial at 100,000 trials
(benchmarks/sweep_core.py scale), and opening one by name is O(1) (ledger.py)."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from sparse_transfer.config.spec import HYPERPARAMETERS
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.sweep.plans import FINAL, SEARCH, CellPlan, Settings, TrialKey

__all__ = ["SETTLED", "TOLD", "Studies"]

TOLD = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# The sampler of every study that samples nothing more: final runs (enqueued with every value
# fixed), and a cell's search once it is over. One shared: each sampler's own random state
# is about 3 KB, 0.6 GB at 100,000 cells.
SETTLED = optuna.samplers.RandomSampler(seed=0)
_NO_PRUNING = optuna.pruners.NopPruner()  # final runs are never stopped early


class Studies:
    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        self.settings = settings
        # One pruner for every cell: successive halving with fixed rungs keeps no state of its
        # own (its rungs are in each study). Without early stopping, no pruner at all
        # (Optuna's default would be MedianPruner).
        self.pruner = settings.pruner() if settings.pruner else _NO_PRUNING
        self._ids: dict[TrialKey, int] = {}  # storage ids of trials not told yet

    def create(self, plan: CellPlan) -> int:
        """Opens (or creates) the cell's studies at a start; the number of search trials its
        ledger already holds."""
        existing = 0
        if plan.searched:
            search = self.ledger.study(plan.cell.id, pruner=self.pruner, sampler=SETTLED)
            existing = len(self.ledger.trials(search))
            if existing == 0:
                with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    search.set_metric_names([self.settings.metric])
                # search.enqueue (e.g. the paper's configuration) first; a resumed study already
                # holds them, waiting or asked, so they are never enqueued twice
                for params in self.settings.enqueue.get(plan.cell.id, []):
                    search.enqueue_trial(params, skip_if_exists=True)
        self.ledger.study(plan.cell.id, final=True, sampler=SETTLED, pruner=_NO_PRUNING)
        return existing

    def search(self, plan: CellPlan) -> optuna.Study:
        name = self.ledger.study_name(plan.cell.id)
        return optuna.Study(name, self.ledger.storage, plan.sampler or SETTLED, self.pruner)

    def final(self, plan: CellPlan) -> optuna.Study:
        name = self.ledger.study_name(plan.cell.id, final=True)
        return optuna.Study(name, self.ledger.storage, SETTLED, _NO_PRUNING)

    def of(self, plan: CellPlan, phase: str) -> optuna.Study:
        return self.search(plan) if phase == SEARCH else self.final(plan)

    def trials(self, plan: CellPlan, phase: str, states=None) -> list[FrozenTrial]:
        if phase == SEARCH and not plan.searched:
            return []
        study_id = self._study_id(plan, phase)
        return self.ledger.storage.get_all_trials(study_id, deepcopy=False, states=states)

    def storage_id(self, plan: CellPlan, key: TrialKey) -> int:
        if key not in self._ids:
            self._ids[key] = self.ledger.storage.get_trial_id_from_study_id_trial_number(
                self._study_id(plan, key.phase), key.number
            )
        return self._ids[key]

    def _study_id(self, plan: CellPlan, phase: str) -> int:
        name = self.ledger.study_name(plan.cell.id, final=phase == FINAL)
        return self.ledger.storage.get_study_id_from_name(name)

    def forget(self, key: TrialKey) -> None:
        """The trial is told: never looked up by key again (bounded state)."""
        self._ids.pop(key, None)

    def frozen(self, plan: CellPlan, key: TrialKey) -> FrozenTrial:
        return self.ledger.storage.get_trial(self.storage_id(plan, key))

    def hparams(self, plan: CellPlan, key: TrialKey, trial: FrozenTrial | None = None) -> dict:
        """The trial's hyperparameters, every default filled in (`trial`: its frozen trial,
        when the caller has it already)."""
        if trial is None:
            trial = self.frozen(plan, key)
        if key.phase == FINAL:
            return {**HYPERPARAMETERS, **trial.user_attrs["hparams"]}
        return {**HYPERPARAMETERS, **plan.fixed, **trial.params}
