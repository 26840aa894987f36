"""What runs next, decided from the ledger alone: one Tune `Searcher` over every cell's search
and final runs (the plan's data is in plans.py; Tune's thin scheduler and stopper, which
defer to it, in scheduling.py).

Resume rule: a trial RUNNING in the ledger is in flight, and is handed to Tune again (it
continues from its saved state); a trial the ledger holds as told is never run again. Tune's
own saved state is never restored, so it cannot disagree with the ledger.

Per cell: `trials_per_cell` search trials that end COMPLETE or PRUNED (cells served
round-robin, so a strong cell never takes a weak one's trials); a trial that fails for its
own reasons is told FAIL and replaced, up to `max_failures_per_cell`, past which the cell
fails by name. A trial whose node was lost (Tune reports an error: the worker died) is not
told: it is handed out again from its last saved state, so the budget is unchanged (deaths
are counted in the ledger, per trial and per cell, and capped). Whose fault a failure is,
and what follows, is failures.py's to decide. Once a
cell's search is told in full, its final runs (the best configuration x each seed) are
planned in the same ledger and start at once: no phase barrier. Early stopping is Optuna's
`SuccessiveHalvingPruner` of each cell's study, deciding from the intermediate values and
rungs stored in the ledger, so a restore keeps every rung recorded before the crash.

Private or version-fragile parts of Ray, Optuna and MLflow the sweep relies on, each checked
against Ray 2.60.0, Optuna 5.1.0 and MLflow 3.17.2 on 2026-12-03 (pinned in pyproject.toml;
tests/test_internals.py fails when one is gone):
- Tune calls the scheduler's `on_trial_result` for every result, and the search algorithm's
  `on_trial_complete` with the last result when a trial ends (documented Searcher/Scheduler
  contracts; no order between callbacks is assumed).
- `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE` (runner.py): Tune copies the driver's
  AWS_* credentials into every trial's runtime env, which Ray logs in plain text; there is no
  public switch, so the runner removes the AWS_* names from that module-level set.
- Ray's logger names `ray.tune.analysis.experiment_analysis` (runner.py) and
  `ray._private.authentication.authentication_token_setup` (console.py), and the phrases
  console.py filters out of Ray's and MLflow's log lines.
- Optuna: `FrozenStudy._study_id`, read once per start in ledger.py to find studies by name
  in O(1) (a study has no public id), and ledger.py's `JournalStorage` subclass, which
  replaces its `__init__` and `create_new_study` (and answers `has_study` and
  `get_study_id_from_name`) over a subclass of its private `JournalStorageReplayResult`
  whose `_apply_create_study` keeps study ids by name. Otherwise studies and trials
  are read and written through `optuna.Study` and the public `BaseStorage` methods; the
  ledger's file is a public `BaseJournalBackend`, and the suite runs Optuna's own storage
  contract tests against it. Optuna's `SuccessiveHalvingPruner` writes its rungs through the
  study's storage, which is what makes them survive a restore.
- MLflow's SQL store keeps one metric row per (key, timestamp, step, value), so a batch the
  outbox sends twice adds nothing (tracking/outbox.py); the experiment tag
  `mlflow.experimentKind` opens MLflow 3's UI on the runs table.
"""

from __future__ import annotations

import heapq
import warnings
import zlib
from collections import deque

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from sparse_transfer import metrics as M
from sparse_transfer.config.spec import HYPERPARAMETERS, SpaceValue
from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.failures import FAILURE, Failures
from sparse_transfer.sweep.finals import FinalQueue, final_run_cost
from sparse_transfer.sweep.gpu_budget import GpuBudget
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.sweep.plans import (
    BY_DATASET,
    FINAL,
    SEARCH,
    CellPlan,
    Settings,
    TrialKey,
    to_distributions,
)

__all__ = ["CellSearch"]

TOLD = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# The sampler of every study that samples nothing more: final runs (enqueued with every value
# fixed), and a cell's search once it is over. One shared: each sampler's own random state
# is about 3 KB, 0.6 GB at 100,000 cells (benchmarks/sweep_core.py scale).
_SETTLED = optuna.samplers.RandomSampler(seed=0)
_NO_PRUNING = optuna.pruners.NopPruner()  # final runs are never stopped early


class CellSearch(Searcher):
    def __init__(
        self,
        ledger: Ledger,
        cells: list[Cell],
        spaces: dict[str, dict[str, SpaceValue]],
        settings: Settings,
        base_config: dict,
        events,  # sparse_transfer.sweep.events.TrialEvents: MLflow and the console
    ) -> None:
        super().__init__()
        self.ledger = ledger
        self.settings = settings
        self.base_config = base_config
        self.events = events
        self.plans = []
        for cell in cells:
            searched, fixed = to_distributions(spaces[cell.id])
            self.plans.append(CellPlan(cell, searched, fixed))
        self.live: dict[str, TrialKey] = {}  # Tune trial id -> trial
        self.storage_ids: dict[TrialKey, int] = {}
        self.pruned: set[TrialKey] = set()
        self.reached: dict[TrialKey, int] = {}  # the last epoch a trial reported
        self.orphans: deque[TrialKey] = deque()  # in flight in the ledger, not in Tune
        self.waiting_finals = FinalQueue()  # planned, unstarted final runs: longest first
        # (search trials told or running, cell index) of cells that may take another search
        # trial, least-served first: an entry whose count is stale is skipped when met, so
        # picking a cell stays O(log cells) however large the grid.
        self.open_cells: list[tuple[int, int]] = []
        self.budget = GpuBudget(settings.gpu_hours_budget)
        self.failures = Failures(settings.max_failures_per_cell)
        self.halted = ""  # why the sweep must pause (a full disk), to resume once fixed
        self._done_upto = 0  # cells before this one have their final runs told (`finished`)

    def __getstate__(self) -> dict:  # Tune pickles its search algorithm; we never restore it
        return {}

    @property
    def stopping(self) -> bool:
        """The sweep stops: its first trials all failed (fail-fast), or it halts (a full disk)."""
        return self.failures.fail_fast or bool(self.halted)

    # -- start: derive everything from the ledger ----------------------------------------------

    def start(self) -> None:
        for index, plan in enumerate(self.plans):
            if plan.searched:
                plan.search = self._search_study(index)
                self._load_search(index, plan)
            plan.final = self.ledger.study(
                plan.cell.id, final=True, sampler=_SETTLED, pruner=_NO_PRUNING
            )
            self._load_finals(index, plan)
            self._maybe_plan_finals(index)
            if plan.search_over:  # over before this start
                self._settle(plan)
            self._reopen(index)

    def _search_study(self, index: int) -> optuna.Study:
        plan = self.plans[index]
        # Without early stopping, no pruner at all (Optuna's default would be MedianPruner).
        pruner = self.settings.pruner() if self.settings.pruner else optuna.pruners.NopPruner()
        study = self.ledger.study(plan.cell.id, pruner=pruner)
        existing = len(self.ledger.trials(study))
        study.sampler = self._sampler(index, existing)
        if existing == 0:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self.settings.metric])
            # search.enqueue (e.g. the paper's configuration) first; a resumed study already
            # holds them, waiting or asked, so they are never enqueued twice
            for params in self.settings.enqueue.get(plan.cell.id, []):
                study.enqueue_trial(params, skip_if_exists=True)
        return study

    def _sampler(self, index: int, existing: int) -> optuna.samplers.BaseSampler:
        # Seeded by what the study already holds: a resumed sampler must not propose its
        # startup trials again (optuna#3255), yet a fresh sweep is reproducible.
        seed = zlib.crc32(f"{self.settings.seed}/{index}/{existing}".encode())
        if self.settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        startup = max(1, min(10, self.settings.trials_per_cell // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)

    def _load_search(self, index: int, plan: CellPlan) -> None:
        for trial in self.ledger.trials(plan.search):
            key = TrialKey(index, SEARCH, trial.number)
            plan.deaths += trial.user_attrs.get("deaths", 0)
            if trial.state in TOLD:
                self.budget.tell(trial.user_attrs.get("outcome", {}))
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                plan.done += 1
                self.failures.succeeded()
            elif trial.state == TrialState.FAIL:
                self._search_failed(plan, trial.user_attrs.get("outcome", {}))
            elif trial.state == TrialState.RUNNING:
                plan.running += 1
                if "pruned_at" in trial.user_attrs:  # decided, but the tell was lost
                    self.pruned.add(key)
                    self._config(key)  # re-attaches its MLflow run
                    self._tell(key, trial.user_attrs.get("outcome", {}))
                else:
                    self.orphans.append(key)
        failed = plan.search.user_attrs.get("failed")
        if failed:
            plan.failed = failed

    def _load_finals(self, index: int, plan: CellPlan) -> None:
        trials = self.ledger.trials(plan.final)
        plan.finals_planned = bool(trials) and len(trials) >= len(self.settings.seeds)
        for trial in trials:
            plan.deaths += trial.user_attrs.get("deaths", 0)
            if trial.state == TrialState.WAITING:
                self.waiting_finals.add(index, self._final_cost(plan, trial.user_attrs["hparams"]))
                plan.finals_open += 1
            elif trial.state == TrialState.RUNNING:
                self.orphans.append(TrialKey(index, FINAL, trial.number))
                plan.finals_open += 1
            else:
                self.budget.tell(trial.user_attrs.get("outcome", {}))
                if trial.state == TrialState.FAIL:
                    self.failures.errored(plan, trial.user_attrs.get("outcome", {}))
                else:
                    self.failures.succeeded()
        failed = plan.final.user_attrs.get("failed")
        if failed:
            plan.failed = failed

    # -- Tune's questions ---------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        if self.stopping:
            return Searcher.FINISHED
        if len(self.live) >= self.settings.max_concurrent:
            return None
        key = self._next()
        if key is None:
            return Searcher.FINISHED if self.finished else None
        self.live[trial_id] = key
        return {"trial": self._config(key)}

    def _next(self) -> TrialKey | None:
        if self.orphans:
            return self.orphans.popleft()
        if self.waiting_finals:
            index = self.waiting_finals.take()
            return TrialKey(index, FINAL, self.plans[index].final.ask().number)
        while self.open_cells:
            served, index = self.open_cells[0]
            plan = self.plans[index]
            if self._is_open(plan) and served == plan.done + plan.running:
                break
            heapq.heappop(self.open_cells)  # stale: the cell's count moved, or it closed
        else:
            return None
        if self._check_gpu_budget():
            return None
        heapq.heappop(self.open_cells)
        trial = plan.search.ask(plan.searched)
        plan.running += 1
        self._reopen(index)
        return TrialKey(index, SEARCH, trial.number)

    @staticmethod
    def _final_cost(plan: CellPlan, hparams: dict) -> int:
        return final_run_cost(plan.cell.dataset, int({**HYPERPARAMETERS, **hparams}["epochs"]))

    def _is_open(self, plan: CellPlan) -> bool:
        return (
            bool(plan.searched)
            and not plan.search_over
            and (plan.done + plan.running < self.settings.trials_per_cell)
        )

    def _reopen(self, index: int) -> None:
        """The cell's count changed: queue it again if it may take another search trial."""
        plan = self.plans[index]
        if self._is_open(plan):
            heapq.heappush(self.open_cells, (plan.done + plan.running, index))

    @property
    def finished(self) -> bool:
        if self.live or self.orphans or self.waiting_finals:  # O(1) while anything runs
            return False
        # A cell once done stays done: the scan goes on from the first cell not done yet, so
        # asking again and again costs O(cells) over the whole sweep, not per question.
        while self._done_upto < len(self.plans):
            plan = self.plans[self._done_upto]
            if not (plan.search_over and plan.finals_open == 0):
                return False
            self._done_upto += 1
        return True

    def _config(self, key: TrialKey) -> dict:
        plan = self.plans[key.cell]
        trial = self._frozen(key)
        if key.phase == SEARCH:
            hparams = {**HYPERPARAMETERS, **plan.fixed, **trial.params}
            seed = self.settings.seed
        else:
            hparams, seed = trial.user_attrs["hparams"], trial.user_attrs["seed"]
        hparams = {**HYPERPARAMETERS, **hparams}
        config = {
            **self.base_config,
            **self.base_config.get(BY_DATASET, {}).get(plan.cell.dataset, {}),
            **plan.cell.to_dict(),
            "cell": plan.cell.id,
            "phase": key.phase,
            "key": str(key),
            "hparams": hparams,
            "seed": seed,
            "save_epochs": self.settings.save_epochs if key.phase == SEARCH else [],
        }
        if key.phase == SEARCH:
            config["optuna_trial"] = key.number
        self.events.started(str(key), config)
        return config

    # -- results -------------------------------------------------------------------------

    def record(self, trial_id: str, result: dict) -> bool:
        """One epoch's result: logged, its score stored in the ledger as an intermediate value;
        True when the cell's pruner stops the trial here."""
        key = self.live.get(trial_id)
        if key is None or M.EPOCH not in result:
            return False
        if key in self.pruned:  # a result Tune had in flight when it stopped the trial
            return True
        self.events.epoch(str(key), result)
        self.reached[key] = max(self.reached.get(key, 0), int(result[M.EPOCH]))
        self.budget.running(key, result)
        plan = self.plans[key.cell]
        metric = self.settings.metric
        if key.phase != SEARCH or metric not in result or plan.search is None:
            return False
        storage = self.ledger.storage
        storage_id = self._storage_id(key)
        step = int(result[M.EPOCH])
        if step not in storage.get_trial(storage_id).intermediate_values:
            storage.set_trial_intermediate_value(storage_id, step, float(result[metric]))
        if self.settings.pruner is None or step >= int(self._hparams(key)["epochs"]):
            return False  # no early stopping, or the last epoch: nothing left to stop
        # The rung the pruner records and the decision reach S3 together: a crash in between
        # would lose the decision but keep the rung.
        with self.ledger.backend.atomic():
            if not plan.search.pruner.prune(plan.search, storage.get_trial(storage_id)):
                return False
            # Recorded before the trial stops: a crash now still ends in PRUNED at this rung.
            storage.set_trial_user_attr(storage_id, "pruned_at", step)
            storage.set_trial_user_attr(storage_id, "outcome", _outcome(result))
        self.pruned.add(key)
        return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # `record`, called by the scheduler, sees every result

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        key = self.live.pop(trial_id, None)
        if key is None:
            return
        self.budget.ended(key)
        result = result or {}
        if error:  # the worker died (a lost node, a killed process): not the trial's fault
            self._died(key)
            return
        if result.get(FAILURE) == "disk_full":  # every trial would fail the same way: halt
            self.halted = self.halted or str(result.get("error", "no space left on device"))
            self.orphans.append(key)
            return
        epochs = int(self._hparams(key)["epochs"])
        if FAILURE in result or key in self.pruned or int(result.get(M.EPOCH, 0)) >= epochs:
            self._tell(key, _outcome(result))
        elif not self.stopping:
            self.orphans.append(key)  # stopped for no reason of its own: run it again

    def _died(self, key: TrialKey) -> None:
        """A worker death, counted in the ledger (per trial, and so per cell): retried from
        the trial's saved state while it gets further, or within its limits."""
        plan = self.plans[key.cell]
        storage, storage_id = self.ledger.storage, self._storage_id(key)
        death = self.failures.died(plan, self._frozen(key).user_attrs, self.reached.get(key, 0))
        with self.ledger.backend.atomic():
            for name, value in death.counts.items():
                storage.set_trial_user_attr(storage_id, name, value)
        if death.cell_fails:
            self._fail_cell(plan, death.cell_fails)
        if death.retry:
            self.events.retried(str(key), death.retry)
            self.orphans.append(key)
        else:
            self._tell(key, {FAILURE: "infrastructure", "error": death.trial_fails})

    # -- telling --------------------------------------------------------------------------

    def _tell(self, key: TrialKey, outcome: dict) -> None:
        plan = self.plans[key.cell]
        study = plan.search if key.phase == SEARCH else plan.final
        storage_id = self._storage_id(key)
        self.ledger.storage.set_trial_user_attr(storage_id, "outcome", outcome)
        metric = self.settings.metric if key.phase == SEARCH else M.TEST_TOP1
        if FAILURE in outcome:
            state, value = TrialState.FAIL, None
        elif key in self.pruned:
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.COMPLETE, float(outcome[metric])
        study.tell(key.number, value, state=state, skip_if_finished=True)
        self.budget.tell(outcome)
        self.pruned.discard(key)
        self.reached.pop(key, None)  # told: never asked about again (bounded state)
        self.storage_ids.pop(key, None)
        self.events.told(str(key), key.phase, state.name, outcome)
        if key.phase == SEARCH:
            plan.running -= 1
            if state == TrialState.FAIL:
                self._search_failed(plan, outcome)
            else:
                plan.done += 1
                self.failures.succeeded()
            self._reopen(key.cell)  # a failed trial's place is open again
        else:
            plan.finals_open -= 1
            if state == TrialState.FAIL:
                self.failures.errored(plan, outcome)
            else:
                self.failures.succeeded()
        self._maybe_plan_finals(key.cell)

    def _search_failed(self, plan: CellPlan, outcome: dict) -> None:
        if why := self.failures.search_failed(plan, outcome):
            self._fail_cell(plan, why)

    def _fail_cell(self, plan: CellPlan, why: str) -> None:
        plan.failed = why
        self._settle(plan)
        (plan.search or plan.final).set_user_attr("failed", why)
        self.events.cell_failed(plan.cell.id, why)

    def _maybe_plan_finals(self, index: int) -> None:
        plan = self.plans[index]
        if plan.search_over:
            return
        if plan.searched:
            if plan.running > 0:
                return
            if plan.done < self.settings.trials_per_cell and not self.budget.spent:
                return
            complete = self.ledger.trials(plan.search, states=(TrialState.COMPLETE,))
            if not complete:
                self._fail_cell(plan, "no search trial completed")
                return
            best = max(complete, key=lambda t: t.value)
            hparams = {**plan.fixed, **best.params}
            chosen = {"search_best_value": best.value, "search_best_trial": best.number}
        else:
            hparams, chosen = dict(plan.fixed), {}
        planned = {t.user_attrs.get("seed") for t in self.ledger.trials(plan.final)}
        for seed in self.settings.seeds:
            if seed in planned:
                continue  # planned before a crash
            plan.final.enqueue_trial({}, user_attrs={"seed": seed, "hparams": hparams, **chosen})
            self.waiting_finals.add(index, self._final_cost(plan, hparams))
            plan.finals_open += 1
        plan.finals_planned = True
        self._settle(plan)

    @staticmethod
    def _settle(plan: CellPlan) -> None:
        """The cell's search is over: no trial of it is asked again, so its sampler goes."""
        if plan.search is not None:
            plan.search.sampler = _SETTLED

    def _check_gpu_budget(self) -> bool:
        """True when no new search trial may start: the GPU-hour budget is spent (the first
        time, every cell's final runs are planned from its search so far)."""
        if self.budget.spend():
            self.events.note(
                f"GPU budget of {self.budget.limit:g} h spent: no new search trials; every "
                "cell's final runs start from the search so far"
            )
            for index in range(len(self.plans)):
                self._maybe_plan_finals(index)
        return self.budget.spent

    # -- ledger look-ups ------------------------------------------------------------------

    def _storage_id(self, key: TrialKey) -> int:
        if key not in self.storage_ids:
            plan = self.plans[key.cell]
            study = plan.search if key.phase == SEARCH else plan.final
            storage = self.ledger.storage
            study_id = storage.get_study_id_from_name(study.study_name)
            self.storage_ids[key] = storage.get_trial_id_from_study_id_trial_number(
                study_id, key.number
            )
        return self.storage_ids[key]

    def _frozen(self, key: TrialKey) -> optuna.trial.FrozenTrial:
        return self.ledger.storage.get_trial(self._storage_id(key))

    def _hparams(self, key: TrialKey) -> dict:
        trial = self._frozen(key)
        if key.phase == FINAL:
            return {**HYPERPARAMETERS, **trial.user_attrs["hparams"]}
        return {**HYPERPARAMETERS, **self.plans[key.cell].fixed, **trial.params}

    # Tune's file of searcher state is not written: nothing of Tune's is ever restored.
    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        pass

    def close_records(self, open_keys: set[str], *, rebuild: bool = False) -> None:
        """Close the MLflow runs that a crash left open after their trial was told. With
        `rebuild` (this node's outbox is new: the one that queued the records may be lost on
        another machine's disk), every told trial's record is queued again from the ledger:
        its run (found again by its tags, or made), its scores per epoch as the ledger holds
        them, its outcome and state. A run MLflow already holds finished is left as it is."""
        for index, plan in enumerate(self.plans):
            for phase, study in ((SEARCH, plan.search), (FINAL, plan.final)):
                for trial in self.ledger.trials(study, states=TOLD) if study else []:
                    key = TrialKey(index, phase, trial.number)
                    if rebuild or str(key) in open_keys:
                        self._config(key)
                        for step, value in sorted(trial.intermediate_values.items()):
                            self.events.epoch(
                                str(key), {M.EPOCH: step, self.settings.metric: value}
                            )
                        outcome = trial.user_attrs.get("outcome", {})
                        self.events.told(str(key), phase, trial.state.name, outcome, quiet=True)

    def in_flight(self) -> list[str]:
        return [str(k) for k in (*self.live.values(), *self.orphans)]

    def finals_told(self) -> int:
        return sum(len(self.ledger.trials(p.final, states=TOLD)) for p in self.plans if p.final)

    def describe(self) -> str:
        searching = sum(not p.search_over for p in self.plans)
        return (
            f"{len(self.plans)} cells, {searching} still searching, "
            f"{len(self.orphans)} trials in flight to continue"
        )

    def failed_cells(self) -> dict[str, str]:
        return {p.cell.id: p.failed for p in self.plans if p.failed}


def _outcome(result: dict) -> dict:
    """What the ledger keeps of a trial's last result: numbers and the failure, if any."""
    keep = {
        k: v for k, v in result.items() if isinstance(v, int | float) and not k.startswith("_")
    }
    for name in (FAILURE, "error", "node", "dataset"):
        if name in result:
            keep[name] = str(result[name])[:2000]
    return keep
