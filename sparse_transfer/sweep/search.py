"""Per-cell hyperparameter search: one Optuna study per cell behind one Tune `Searcher`.

Tune sees a single searcher, but each cell keeps its own Optuna study (persisted in the sweep's
SQLite database) and its own budget of `trials_per_cell`; cells are served round-robin, so a
strong cell can never take trials from a weak one. Trials that ASHA stops before their last
epoch are told to Optuna as PRUNED, so TPE does not learn from truncated curves as if complete.

The searcher keeps no saved state of its own: Tune writes a searcher's state and its trial list
to separate files and uploads them one by one in the background, so after a crash (on S3
especially) they can be from different moments. At the first step of every run, restored or
not, it rebuilds its state from the trial list Tune holds and from Optuna (`reconcile`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import Searcher, SearchGenerator

from sparse_transfer.config.spec import (
    HYPERPARAMETERS,
    Choice,
    IntRange,
    LogUniform,
    SpaceValue,
    Uniform,
)
from sparse_transfer.storage import Storage
from sparse_transfer.sweep.cells import Cell

__all__ = [
    "CellSearcher",
    "OptunaLedger",
    "PlannedRuns",
    "ReconciledSearch",
    "optuna_storage",
    "study_name",
    "to_distributions",
]


def to_distributions(space: dict[str, SpaceValue]) -> tuple[dict[str, BaseDistribution], dict]:
    """(searched distributions, fixed values) of a spec's search space."""
    searched, fixed = {}, {}
    for name, value in space.items():
        if isinstance(value, LogUniform):
            searched[name] = FloatDistribution(value.low, value.high, log=True)
        elif isinstance(value, Uniform):
            searched[name] = FloatDistribution(value.low, value.high)
        elif isinstance(value, IntRange):
            searched[name] = IntDistribution(value.low, value.high, step=value.step)
        elif isinstance(value, Choice):
            searched[name] = CategoricalDistribution(value.choices)
        else:
            fixed[name] = value
    return searched, fixed


def optuna_storage(sweep_dir: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}")


def study_name(sweep_id: str, cell: Cell) -> str:
    # The sweep id makes names unique: reusing a name on persistent storage would merge sweeps.
    return f"{sweep_id}/{cell.id}"


def _epochs(hparams: dict) -> int:
    return int(hparams.get("epochs", HYPERPARAMETERS["epochs"]))


class CellSearcher(Searcher):
    def __init__(
        self,
        *,
        sweep_dir: Path,
        backup: str,
        sweep_id: str,
        cells: list[Cell],
        spaces: dict[str, dict[str, SpaceValue]],  # cell id -> its search space
        trials_per_cell: int,
        max_concurrent: int,
        sampler: str,
        seed: int,
        metric: str,
        base_config: dict,
        enqueue: dict[str, list[dict]] | None = None,  # cell id -> its first trials' params
    ) -> None:
        super().__init__(metric=metric, mode="max")
        self.sweep_dir = Path(sweep_dir)
        # The Optuna database is copied to remote storage after every ask and tell, so the
        # copy always knows at least the trials that Tune's (later) snapshot knows.
        self.backup = Storage(backup)
        self.sweep_id = sweep_id
        self.cells = cells
        self.spaces = spaces
        self.trials_per_cell = trials_per_cell
        # Limited here rather than by Tune's ConcurrencyLimiter, whose restored count of live
        # trials may include trials Tune lost: they would hold their slots forever.
        self.max_concurrent = max_concurrent
        self.sampler = sampler
        self.seed = seed
        self.base_config = base_config
        self.enqueue = enqueue or {}
        # Tune trial id -> (cell index, Optuna trial number, epochs the trial was asked to run)
        self.assigned: dict[str, tuple[int, int, int]] = {}
        self.asked = [0] * len(cells)
        self.live: set[str] = set()  # Tune trial ids suggested and not yet complete
        self.reconciled = False
        self._studies: dict[int, optuna.Study] = {}

    # Optuna studies hold database connections: never pickle them, reopen on demand.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_studies"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._studies = {}

    def study(self, index: int) -> optuna.Study:
        if index not in self._studies:
            study = optuna.create_study(
                storage=optuna_storage(self.sweep_dir),
                study_name=study_name(self.sweep_id, self.cells[index]),
                direction="maximize",
                sampler=self._make_sampler(index),
                load_if_exists=True,
            )
            # search.enqueue: the first asks of a new study get these params; a resumed study
            # already holds them (waiting or asked), so they are never enqueued twice
            if not study.get_trials(deepcopy=False):
                for params in self.enqueue.get(self.cells[index].id, []):
                    study.enqueue_trial(params, skip_if_exists=True)
            self._studies[index] = study
        return self._studies[index]

    def _make_sampler(self, index: int) -> optuna.samplers.BaseSampler:
        seed = self.seed + index
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        startup = max(1, min(10, self.trials_per_cell // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)

    def suggest(self, trial_id: str) -> dict | None:
        if not self.reconciled:
            raise RuntimeError(
                "CellSearcher asked for a trial before it saw Tune's trial list: "
                "run it as ReconciledSearch, with its reconciler among the callbacks"
            )
        open_cells = [i for i, n in enumerate(self.asked) if n < self.trials_per_cell]
        if not open_cells:
            return Searcher.FINISHED
        if len(self.live) >= self.max_concurrent:
            return None
        index = min(open_cells, key=lambda i: (self.asked[i], i))  # round-robin over cells
        cell = self.cells[index]
        searched, fixed = to_distributions(self.spaces[cell.id])
        trial = self.study(index).ask(searched)
        trial.set_user_attr("tune_trial_id", trial_id)
        self.asked[index] += 1
        hparams = {**fixed, **trial.params}
        self.assigned[trial_id] = (index, trial.number, _epochs(hparams))
        self.live.add(trial_id)
        self.backup.upload("optuna.db")
        return {
            "trial": {
                **self.base_config,
                **cell.to_dict(),
                "cell": cell.id,
                "phase": "search",
                "hparams": hparams,
                "seed": self.seed,
                "optuna_trial": trial.number,
            }
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.assigned and self.metric in result:
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        """Record the epoch's score as an Optuna intermediate value (learning curves in
        optuna-dashboard; the value a PRUNED trial is told with)."""
        index, number, _ = self.assigned[trial_id]
        study = self.study(index)
        storage_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, number
        )
        step = int(result["epoch"])
        if step not in study._storage.get_trial(storage_id).intermediate_values:
            optuna.trial.Trial(study, storage_id).report(float(result[self.metric]), step)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self.live.discard(trial_id)
        if trial_id not in self.assigned:
            return
        index, number, epochs = self.assigned[trial_id]
        study = self.study(index)
        if study.trials[number].state.is_finished():
            return  # already told (a resumed trial can complete twice in Tune's eyes)
        if error or not result or self.metric not in result:
            study.tell(number, state=TrialState.FAIL)
            self.backup.upload("optuna.db")
            return
        # Tune skips on_trial_result for the result that made the scheduler stop the trial.
        self._report(trial_id, result)
        if int(result["epoch"]) < epochs:
            study.tell(number, state=TrialState.PRUNED)  # stopped early by ASHA
        else:
            study.tell(number, float(result[self.metric]))
        self.backup.upload("optuna.db")

    def reconcile(self, trials: list) -> None:
        """Rebuild the searcher's state from the trials Tune holds (`ray.tune.Trial`s: none in
        a new run, its restored snapshot after a crash) and make Optuna agree with them.

        The snapshot is a few seconds old. An Optuna trial it does not know of was either
        still running (its Tune trial is lost: mark it FAIL, a new trial takes its place) or
        already told (it finished between snapshot and crash: it counts against the cell's
        budget, so the budget is spent exactly once). Unfinished trials of the snapshot are
        resumed by Tune: they are live again."""
        index_of = {cell.id: i for i, cell in enumerate(self.cells)}
        self.assigned, self.live = {}, set()
        for trial in trials:
            settings = trial.config["trial"]
            index = index_of[settings["cell"]]
            number = int(settings["optuna_trial"])
            self.assigned[trial.trial_id] = (index, number, _epochs(settings["hparams"]))
            if not trial.is_finished():
                self.live.add(trial.trial_id)
        self.asked = [0] * len(self.cells)
        for index, _, _ in self.assigned.values():
            self.asked[index] += 1
        known = {(index, number) for index, number, _ in self.assigned.values()}
        for index in range(len(self.cells)):
            study = self.study(index)
            for trial in study.get_trials(deepcopy=False):
                if (index, trial.number) in known:
                    continue
                if trial.state == TrialState.RUNNING:
                    study.tell(trial.number, state=TrialState.FAIL)
                elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    self.asked[index] += 1
        self.backup.upload("optuna.db")
        self.reconciled = True

    # Tune's file of searcher state is not written: see the module docstring.
    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        self.reconciled = False  # until the reconciler hands over Tune's restored trials


class PlannedRuns(Searcher):
    """The final phase: one trial per plan entry (a cell's best configuration x a seed), handed
    out in order. Like CellSearcher it keeps no saved state: `reconcile` learns from Tune's
    trial list, and from the runs MLflow holds as finished, which entries already ran, so a
    run lost in a crash is started again and no run happens twice."""

    def __init__(
        self,
        plan: list[dict],
        max_concurrent: int,
        finished: Callable[[], set[tuple[str, str]]],
    ) -> None:
        super().__init__()  # no metric: it searches nothing
        self.plan = plan
        self.max_concurrent = max_concurrent
        self.finished = finished  # (cell, seed) of the final runs MLflow holds as finished
        self.started: set[tuple[str, str]] = set()
        self.live: set[str] = set()
        self.reconciled = False

    @staticmethod
    def key(settings: dict) -> tuple[str, str]:
        return settings["cell"], str(settings["seed"])

    def suggest(self, trial_id: str) -> dict | None:
        if not self.reconciled:
            raise RuntimeError("PlannedRuns asked for a trial before it saw Tune's trial list")
        pending = [entry for entry in self.plan if self.key(entry) not in self.started]
        if not pending:
            return Searcher.FINISHED
        if len(self.live) >= self.max_concurrent:
            return None
        self.started.add(self.key(pending[0]))
        self.live.add(trial_id)
        return {"trial": pending[0]}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self.live.discard(trial_id)

    def reconcile(self, trials: list) -> None:
        self.started = {self.key(t.config["trial"]) for t in trials} | self.finished()
        self.live = {t.trial_id for t in trials if not t.is_finished()}
        self.reconciled = True

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        self.reconciled = False


class ReconciledSearch(SearchGenerator):
    """Tune's search algorithm around a searcher that rebuilds its state with `reconcile`
    (CellSearcher, PlannedRuns), and alone says when the search is done.

    Tune restores the algorithm's trial counter and `finished` flag from a file of its own,
    uploaded apart from the trial list: after a crash they may count trials that Tune lost,
    and the replacements for those would never be asked for. Its `reconciler` callback hands
    the searcher Tune's trial list at the first step of a run, before Tune asks for a trial."""

    def __init__(self, searcher: CellSearcher | PlannedRuns) -> None:
        super().__init__(searcher)
        self.reconciler = _Reconciler(searcher)

    def is_finished(self) -> bool:
        return self._finished

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._finished = False  # the reconciled searcher answers FINISHED if nothing is left


class _Reconciler(Callback):
    # Pickled with the Tuner in the same object graph as the search algorithm, so a restored
    # Tuner's callback still holds the restored searcher.
    def __init__(self, searcher: CellSearcher | PlannedRuns) -> None:
        self.searcher = searcher
        self._done = False

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_done": False}

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self._done:  # the first step, also after a restore
            self._done = True
            self.searcher.reconcile(trials)


class OptunaLedger:
    """Answers, from a run's tags, whether Optuna already holds that trial's result."""

    def __init__(self, sweep_dir: Path, sweep_id: str) -> None:
        self.sweep_dir, self.sweep_id = Path(sweep_dir), sweep_id

    def __call__(self, tags: dict) -> bool:
        if "optuna_trial" not in tags:
            return False  # final runs are not searched: a lost one is simply run again
        study = optuna.load_study(
            study_name=f"{self.sweep_id}/{tags['cell']}", storage=optuna_storage(self.sweep_dir)
        )
        state = study.trials[int(tags["optuna_trial"])].state
        return state in (TrialState.COMPLETE, TrialState.PRUNED)
