"""What runs next, decided from the ledger alone: one Tune `Searcher` over every cell's search
and final runs. Its parts, a module each: the plan's data (plans.py), each cell's studies and
the ledger look-ups (studies.py), the order trials start in (queue.py, finals.py), early
stopping (early_stopping.py), failure accounting (failures.py), the GPU-hour budget
(gpu_budget.py), and Tune's thin scheduler and stopper, which defer to it (scheduling.py).

Resume rule: a trial RUNNING in the ledger is in flight, and is handed to Tune again (it
continues from its saved state); a trial the ledger holds as told is never run again. Tune's
own saved state is never restored, so it cannot disagree with the ledger.

Per cell: `trials_per_cell` search trials that end COMPLETE or PRUNED; a trial that fails for its
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
- Optuna: ledger.py's `JournalStorage` subclass, which replaces its `__init__` and
  `create_new_study` (and answers `has_study` and `get_study_id_from_name`) over a subclass
  of its private `JournalStorageReplayResult` whose `_apply_create_study` keeps study ids by
  name and whose `_apply_set_trial_param` shares equal distributions. Otherwise studies and trials
  are read and written through `optuna.Study` and the public `BaseStorage` methods; the
  ledger's file is a public `BaseJournalBackend`, and the suite runs Optuna's own storage
  contract tests against it. Optuna's `SuccessiveHalvingPruner` writes its rungs through the
  study's storage, which is what makes them survive a restore.
- MLflow's SQL store keeps one metric row per (key, timestamp, step, value), so a batch the
  outbox sends twice adds nothing (tracking/outbox.py); the experiment tag
  `mlflow.experimentKind` opens MLflow 3's UI on the runs table.
"""

from __future__ import annotations

import zlib

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from sparse_transfer import metrics as M
from sparse_transfer.config.spec import HYPERPARAMETERS, SpaceValue
from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.early_stopping import EarlyStopping, outcome
from sparse_transfer.sweep.failures import FAILURE, Failures
from sparse_transfer.sweep.finals import final_run_cost
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
from sparse_transfer.sweep.queue import RunQueue
from sparse_transfer.sweep.studies import TOLD, Studies

__all__ = ["CellSearch"]


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
        self.plans = _plans(cells, spaces)
        self.studies = Studies(ledger, settings)
        self.queue = RunQueue(self.plans, settings.trials_per_cell)
        self.early_stopping = EarlyStopping(self.studies, settings)
        self.budget = GpuBudget(settings.gpu_hours_budget)
        self.failures = Failures(settings.max_failures_per_cell)
        self.live: dict[str, TrialKey] = {}  # Tune trial id -> trial
        self.halted = ""  # why the sweep must pause (a full disk), to resume once fixed

    def __getstate__(self) -> dict:  # Tune pickles its search algorithm; we never restore it
        return {}

    @property
    def stopping(self) -> bool:
        """The sweep stops: its first trials all failed (fail-fast), or it halts (a full disk)."""
        return self.failures.fail_fast or bool(self.halted)

    # -- start: derive everything from the ledger ----------------------------------------------

    def start(self) -> None:
        for index, plan in enumerate(self.plans):
            existing = self.studies.create(plan)
            if plan.searched:
                plan.sampler = self._sampler(index, existing)
                self._load_search(index, plan)
            self._load_finals(index, plan)
            self._maybe_plan_finals(index)
            if plan.search_over:  # over before this start
                plan.sampler = None
            self.queue.reopen(index)

    def _sampler(self, index: int, existing: int) -> optuna.samplers.BaseSampler:
        # Seeded by what the study already holds: a resumed sampler must not propose its
        # startup trials again (optuna#3255), yet a fresh sweep is reproducible.
        seed = zlib.crc32(f"{self.settings.seed}/{index}/{existing}".encode())
        if self.settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        startup = max(1, min(10, self.settings.trials_per_cell // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)

    def _load_search(self, index: int, plan: CellPlan) -> None:
        for trial in self.studies.trials(plan, SEARCH):
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
                    self.early_stopping.pruned.add(key)
                    self._config(key)  # re-attaches its MLflow run
                    self._tell(key, trial.user_attrs.get("outcome", {}))
                else:
                    self.queue.orphans.append(key)
        failed = self.studies.search(plan).user_attrs.get("failed")
        if failed:
            plan.failed = failed

    def _load_finals(self, index: int, plan: CellPlan) -> None:
        trials = self.studies.trials(plan, FINAL)
        plan.finals_planned = bool(trials) and len(trials) >= len(self.settings.seeds)
        for trial in trials:
            plan.deaths += trial.user_attrs.get("deaths", 0)
            if trial.state == TrialState.WAITING:
                self.queue.finals.add(index, _final_cost(plan, trial.user_attrs["hparams"]))
                plan.finals_open += 1
            elif trial.state == TrialState.RUNNING:
                self.queue.orphans.append(TrialKey(index, FINAL, trial.number))
                plan.finals_open += 1
            else:
                self.budget.tell(trial.user_attrs.get("outcome", {}))
                if trial.state == TrialState.FAIL:
                    self.failures.errored(plan, trial.user_attrs.get("outcome", {}))
                else:
                    self.failures.succeeded()
        failed = self.studies.final(plan).user_attrs.get("failed")
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
        if self.queue.orphans:
            return self.queue.orphans.popleft()
        if self.queue.finals:
            index = self.queue.finals.take()
            return TrialKey(index, FINAL, self.studies.final(self.plans[index]).ask().number)
        index = self.queue.open_cell()
        if index is None or self._check_gpu_budget():
            return None
        self.queue.take_open()
        plan = self.plans[index]
        trial = self.studies.search(plan).ask(plan.searched)
        plan.running += 1
        self.queue.reopen(index)
        return TrialKey(index, SEARCH, trial.number)

    @property
    def finished(self) -> bool:
        return not self.live and self.queue.drained()

    def _config(self, key: TrialKey) -> dict:
        plan = self.plans[key.cell]
        trial = self.studies.frozen(plan, key)
        hparams = self.studies.hparams(plan, key, trial)
        seed = self.settings.seed if key.phase == SEARCH else trial.user_attrs["seed"]
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
        # The epochs the ledger holds, queued again: a trial going on after a crash may be on
        # another machine, whose outbox never had them (the recorder skips what it has).
        for step, value in sorted(trial.intermediate_values.items()):
            self.events.epoch(str(key), {M.EPOCH: step, self.settings.metric: value})
        return config

    # -- results -------------------------------------------------------------------------

    def record(self, trial_id: str, result: dict) -> bool:
        """One epoch's result: logged, counted, and given to early stopping; True when the
        cell's pruner stops the trial here."""
        key = self.live.get(trial_id)
        if key is None or M.EPOCH not in result:
            return False
        fresh = key not in self.early_stopping.pruned
        # the ledger first: MLflow's records follow it, and a resume re-queues what the ledger
        # holds, so a kill between the two never leaves MLflow an epoch the ledger lacks
        stop = self.early_stopping.record(self.plans[key.cell], key, result)
        if fresh:
            self.events.epoch(str(key), result)
            self.failures.reported(key, int(result[M.EPOCH]))
            self.budget.running(key, result)
        return stop

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
            self.queue.orphans.append(key)
            return
        plan = self.plans[key.cell]
        epochs = int(self.studies.hparams(plan, key)["epochs"])
        stopped = key in self.early_stopping.pruned
        if FAILURE in result or stopped or int(result.get(M.EPOCH, 0)) >= epochs:
            self._tell(key, outcome(result))
        elif not self.stopping:
            self.queue.orphans.append(key)  # stopped for no reason of its own: run it again

    def _died(self, key: TrialKey) -> None:
        """A worker death, counted in the ledger (per trial, and so per cell): retried from
        the trial's saved state while it gets further, or within its limits."""
        plan = self.plans[key.cell]
        storage, storage_id = self.ledger.storage, self.studies.storage_id(plan, key)
        death = self.failures.died(plan, key, self.studies.frozen(plan, key).user_attrs)
        with self.ledger.backend.atomic():
            for name, value in death.counts.items():
                storage.set_trial_user_attr(storage_id, name, value)
        if death.cell_fails:
            self._fail_cell(plan, death.cell_fails)
        if death.retry:
            self.events.retried(str(key), death.retry)
            self.queue.orphans.append(key)
        else:
            self._tell(key, {FAILURE: "infrastructure", "error": death.trial_fails})

    # -- telling --------------------------------------------------------------------------

    def _tell(self, key: TrialKey, outcome: dict) -> None:
        plan = self.plans[key.cell]
        storage_id = self.studies.storage_id(plan, key)
        self.ledger.storage.set_trial_user_attr(storage_id, "outcome", outcome)
        metric = self.settings.metric if key.phase == SEARCH else M.TEST_TOP1
        if FAILURE in outcome:
            state, value = TrialState.FAIL, None
        elif key in self.early_stopping.pruned:
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.COMPLETE, float(outcome[metric])
        study = self.studies.of(plan, key.phase)
        study.tell(key.number, value, state=state, skip_if_finished=True)
        self.budget.tell(outcome)
        # told: never asked about again (bounded state)
        self.early_stopping.pruned.discard(key)
        self.failures.forget(key)
        self.studies.forget(key)
        self.events.told(str(key), key.phase, state.name, outcome)
        if key.phase == SEARCH:
            plan.running -= 1
            if state == TrialState.FAIL:
                self._search_failed(plan, outcome)
            else:
                plan.done += 1
                self.failures.succeeded()
            self.queue.reopen(key.cell)  # a failed trial's place is open again
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
        plan.sampler = None  # its search is over: nothing more is sampled
        self.studies.of(plan, SEARCH if plan.searched else FINAL).set_user_attr("failed", why)
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
            complete = self.studies.trials(plan, SEARCH, states=(TrialState.COMPLETE,))
            if not complete:
                self._fail_cell(plan, "no search trial completed")
                return
            best = max(complete, key=lambda t: t.value)
            hparams = {**plan.fixed, **best.params}
            chosen = {"search_best_value": best.value, "search_best_trial": best.number}
        else:
            hparams, chosen = dict(plan.fixed), {}
        planned = {t.user_attrs.get("seed") for t in self.studies.trials(plan, FINAL)}
        final = self.studies.final(plan)
        for seed in self.settings.seeds:
            if seed in planned:
                continue  # planned before a crash
            final.enqueue_trial({}, user_attrs={"seed": seed, "hparams": hparams, **chosen})
            self.queue.finals.add(index, _final_cost(plan, hparams))
            plan.finals_open += 1
        plan.finals_planned = True
        plan.sampler = None  # its search is over: nothing more is sampled

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
            for phase in (SEARCH, FINAL):
                for trial in self.studies.trials(plan, phase, states=TOLD):
                    key = TrialKey(index, phase, trial.number)
                    if rebuild or str(key) in open_keys:
                        self._config(key)  # its run, and its scores per epoch
                        outcome = trial.user_attrs.get("outcome", {})
                        self.events.told(str(key), phase, trial.state.name, outcome, quiet=True)
                        self.studies.forget(key)

    def in_flight(self) -> list[str]:
        return [str(k) for k in (*self.live.values(), *self.queue.orphans)]

    def finals_told(self) -> int:
        return sum(len(self.studies.trials(p, FINAL, states=TOLD)) for p in self.plans)

    def describe(self) -> str:
        searching = sum(not p.search_over for p in self.plans)
        return (
            f"{len(self.plans)} cells, {searching} still searching, "
            f"{len(self.queue.orphans)} trials in flight to continue"
        )

    def failed_cells(self) -> dict[str, str]:
        return {p.cell.id: p.failed for p in self.plans if p.failed}


def _plans(cells: list[Cell], spaces: dict[str, dict[str, SpaceValue]]) -> list[CellPlan]:
    """A plan per cell. Cells with equal search spaces share one (read-only) pair of
    distributions and fixed values: a paper grid has a handful of spaces over many cells."""
    made: dict[str, tuple] = {}
    plans = []
    for cell in cells:
        space = spaces[cell.id]
        key = repr(space)
        if key not in made:
            made[key] = to_distributions(space)
        searched, fixed = made[key]
        plans.append(CellPlan(cell, searched, fixed))
    return plans


def _final_cost(plan: CellPlan, hparams: dict) -> int:
    return final_run_cost(plan.cell.dataset, int({**HYPERPARAMETERS, **hparams}["epochs"]))
