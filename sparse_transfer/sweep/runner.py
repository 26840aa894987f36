"""Run and resume a study: search each cell, re-run each cell's best configuration per seed,
report. The sweep directory holds everything needed to resume after the driver dies."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from sparse_transfer import metrics as M
from sparse_transfer.analysis import ReportPaths, write_report
from sparse_transfer.config import SweepSpec, dump_spec, load_spec, max_epochs
from sparse_transfer.storage import Storage
from sparse_transfer.sweep.callbacks import FAIL_FAST_AFTER, FailFast, MlflowTrials, Progress
from sparse_transfer.sweep.cells import Cell, load_cells, plan_cells, save_cells
from sparse_transfer.sweep.scheduler import CellASHA
from sparse_transfer.sweep.search import (
    CellSearcher,
    OptunaLedger,
    PlannedRuns,
    ReconciledSearch,
    optuna_storage,
    study_name,
    to_distributions,
)
from sparse_transfer.sweep.trainable import transfer_trainable
from sparse_transfer.sweep.upstream import check_data_roots, resolve_upstreams
from sparse_transfer.tracking import OUTBOX_FILE, SweepRecorder, default_tracking_uri
from sparse_transfer.tracking.runs_table import load_final_runs

__all__ = [
    "SweepFailedError",
    "SweepInterrupted",
    "SweepState",
    "resume_sweep",
    "run_sweep",
    "write_sweep_report",
]


class SweepFailedError(RuntimeError):
    """A phase stopped because its trials all failed; the message says where to look."""


class SweepInterrupted(RuntimeError):
    """A phase ended with trials unfinished (Ctrl-C): the sweep stays in that phase, to be
    finished with `sparse-transfer resume`, never moved on with a partial search."""


SPEC_FILE = "spec.resolved.yaml"
STATE_FILE = "state.json"
CELLS_FILE = "cells.json"
FINAL_PLAN_FILE = "final_plan.json"
OPTUNA_FILE = "optuna.db"
REPORT_DIR = "report"
SWEEPS = "sweeps"
SEARCH, FINAL, DONE = "search", "final", "done"
DRY_RUN_BATCHES = 2  # a dry run's trials train and score this many batches per pass
# Tune keeps one trial pending at a time for a custom search algorithm unless told otherwise:
# the autoscaler would then see the demand of one trial, never of `max_concurrent_trials`.
MAX_PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
_USER_MAX_PENDING = os.environ.get(MAX_PENDING_ENV)


@dataclass
class SweepState:
    sweep_id: str
    storage: str  # the storage URI: a local directory or s3://bucket/prefix
    tracking_uri: str
    experiment: str
    parent_run_id: str
    phase: str
    commit: str

    @property
    def store(self) -> Storage:
        return Storage(self.storage)

    @property
    def sweep_dir(self) -> Path:
        """This node's working copy of the sweep directory (the storage itself when local)."""
        return self.store.local(SWEEPS, self.sweep_id)

    @property
    def location(self) -> str:
        return self.store.display(SWEEPS, self.sweep_id)

    def upload(self, *names: str) -> None:
        for name in names:  # paths relative to the sweep directory, e.g. "report/summary.csv"
            self.store.upload(SWEEPS, self.sweep_id, *name.split("/"))

    def save(self) -> None:
        path = self.sweep_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2))
        tmp.replace(path)
        self.upload(STATE_FILE)

    @classmethod
    def load(cls, location: str | Path) -> SweepState:
        """From a local sweep directory or an s3://.../sweeps/<id> URI (fetched to this node)."""
        text = str(location)
        if "://" not in text:
            text = str(Path(text).expanduser().resolve())
        base, sep, sweep_id = text.rstrip("/").rpartition(f"/{SWEEPS}/")
        query = ""
        if "?" in sweep_id:
            sweep_id, query = sweep_id.split("?", 1)
        if not sep:
            raise FileNotFoundError(f"{location} is not a sweep directory (.../sweeps/<id>)")
        store = Storage(base + (f"?{query}" if query else ""))
        names = (STATE_FILE, SPEC_FILE, CELLS_FILE, FINAL_PLAN_FILE, OPTUNA_FILE)
        if store.is_remote:
            for name in names:
                store.download(SWEEPS, sweep_id, name)
        path = store.local(SWEEPS, sweep_id, STATE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{location} is not a sweep directory (no {STATE_FILE})")
        return cls(**{**json.loads(path.read_text()), "storage": store.uri})


def run_sweep(spec: SweepSpec, *, address: str | None = None, log=print) -> SweepState:
    store = Storage(spec.storage)
    sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_data_roots(spec)  # these may fail: nothing is made yet
    upstream_paths = resolve_upstreams(spec, store, log=log)
    sweep_dir = store.local(SWEEPS, sweep_id)
    sweep_dir.mkdir(parents=True, exist_ok=False)
    (sweep_dir / SPEC_FILE).write_text(dump_spec(spec))
    save_cells(sweep_dir / CELLS_FILE, plan_cells(spec, upstream_paths))

    tracking_uri = default_tracking_uri(spec.tracking.uri)
    experiment = spec.tracking.experiment or spec.name
    recorder = SweepRecorder(tracking_uri, experiment, sweep_id, sweep_dir / OUTBOX_FILE)
    commit = git_commit()
    parent = recorder.parent_run(
        {"spec": spec.name, "git_commit": commit, "storage": store.display()}
    )
    recorder.log_parent_artifact(parent, sweep_dir / SPEC_FILE)
    state = SweepState(sweep_id, store.uri, tracking_uri, experiment, parent, SEARCH, commit)
    state.upload(SPEC_FILE, CELLS_FILE)
    state.save()
    log(f"sweep {sweep_id}: {state.location}")
    log(f"mlflow: {tracking_uri} (experiment {experiment!r})")
    return _continue(state, spec, address=address, log=log, restore=False)


def resume_sweep(location: str | Path, *, address: str | None = None, log=print) -> SweepState:
    state = SweepState.load(location)
    spec = load_spec(state.sweep_dir / SPEC_FILE)
    log(f"resuming sweep {state.sweep_id} in phase {state.phase!r}")
    if state.phase == DONE:
        log("nothing to do: the sweep already finished")
        _recorder(state).drain()  # but send what a killed driver left queued
        return state
    _recorder(state).parent_run({})
    return _continue(state, spec, address=address, log=log, restore=True)


def _continue(state: SweepState, spec: SweepSpec, *, address, log, restore: bool) -> SweepState:
    _start_ray(address)
    sweep_dir = state.sweep_dir
    cells = load_cells(sweep_dir / CELLS_FILE)
    if state.phase == SEARCH:
        if spec.searches:
            _run_phase(SEARCH, _search_tuner, state, spec, cells, restore=restore, log=log)
        else:
            log("search: every hyperparameter is fixed; going straight to the final runs")
        plan = plan_final_runs(state, spec, cells, log=log)
        (sweep_dir / FINAL_PLAN_FILE).write_text(json.dumps(plan, indent=2))
        state.upload(FINAL_PLAN_FILE, *([OPTUNA_FILE] if spec.searches else []))
        state.phase = FINAL
        state.save()
        restore = False
    if state.phase == FINAL:
        _run_phase(FINAL, _final_tuner, state, spec, cells, restore=restore, log=log)
        state.phase = DONE
        state.save()
    recorder = _recorder(state)
    recorder.drain()  # the report reads MLflow: wait for the server to have every record
    paths = write_sweep_report(state)
    for path in (paths.results, paths.summary, paths.figure, paths.html):
        state.upload(f"{REPORT_DIR}/{path.name}")
    recorder.log_parent_artifact(state.parent_run_id, paths.summary)
    recorder.log_parent_artifact(state.parent_run_id, paths.html)
    recorder.close_parent(state.parent_run_id)
    recorder.drain()
    return state


def _recorder(state: SweepState) -> SweepRecorder:
    outbox = state.sweep_dir / OUTBOX_FILE
    return SweepRecorder(state.tracking_uri, state.experiment, state.sweep_id, outbox)


def write_sweep_report(state: SweepState) -> ReportPaths:
    """The sweep's report from its final runs in MLflow, in `<sweep_dir>/report`."""
    results = load_final_runs(state.tracking_uri, state.experiment, sweep_id=state.sweep_id)
    return write_report(
        results,
        state.sweep_dir / REPORT_DIR,
        title=f"sparse-transfer: {state.sweep_id}",
        source=f"MLflow {state.tracking_uri}, experiment {state.experiment!r}",
    )


def _start_ray(address: str | None) -> None:
    # Save Tune's experiment state often: a killed driver then loses at most a few seconds.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if ray.is_initialized():
        return
    if address:  # an existing cluster: it has its own dashboard and logging settings
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)


def _run_phase(phase, make_tuner, state, spec, cells, *, restore: bool, log) -> None:
    storage_path, filesystem = state.store.tune_location(SWEEPS, state.sweep_id)
    path = f"{storage_path}/{phase}"
    os.environ[MAX_PENDING_ENV] = _USER_MAX_PENDING or str(spec.search.max_concurrent_trials)
    tuner = make_tuner(state, spec, cells)
    if restore and tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        log(f"{phase}: restoring Tune experiment {path}")
        tuner = tune.Tuner.restore(
            path,
            trainable=_trainable(spec),
            resume_unfinished=True,
            storage_filesystem=filesystem,
        )
    else:
        log(f"{phase}: starting")
    results = tuner.fit()
    _recorder(state).drain(timeout=5)  # while MLflow is down, training goes on regardless
    errors = [r for r in results if r.error]
    log(f"{phase}: {len(results)} trials, {len(errors)} failed")
    unfinished = _unfinished(path, filesystem, spec)
    reported = any(M.EPOCH in (r.metrics or {}) for r in results if not r.error)
    if len(errors) >= FAIL_FAST_AFTER and not reported:
        raise SweepFailedError(
            f"{phase}: stopped after {len(errors)} trials failed and none finished (a bug or "
            f"bad data, not bad luck). The first error:\n{_first_line(errors[0].error)}\n"
            f"Full logs: {errors[0].path}. Fix the cause and start the sweep again."
        )
    if unfinished:
        raise SweepInterrupted(
            f"{phase}: interrupted with {unfinished} trials unfinished; finish the sweep with "
            f"`sparse-transfer resume {state.location}`"
        )


def _unfinished(path: str, filesystem, spec: SweepSpec) -> int:
    """Trials that Tune's saved state holds as neither finished nor failed. The returned
    ResultGrid cannot say: Tune stops the trials of an interrupted run (Ctrl-C) before it
    builds the grid, but it saves the experiment state first."""
    saved = tune.Tuner.restore(path, trainable=_trainable(spec), storage_filesystem=filesystem)
    grid = saved.get_results()
    return len(grid) - grid.num_terminated - grid.num_errors


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def _trainable(spec: SweepSpec):
    return tune.with_resources(
        transfer_trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    )


def _base_config(state: SweepState, spec: SweepSpec) -> dict:
    return {
        "storage": state.storage,
        "sweep_id": state.sweep_id,
        "threads": max(1, int(spec.resources.cpu)),
        "gpu": spec.resources.gpu,
        "loader_workers": spec.resources.workers,
        **({"max_batches": DRY_RUN_BATCHES} if spec.dry_run else {}),
        **(
            {
                "downstream_target": spec.downstream_pruning.target_sparsity,
                "downstream_ramp": spec.downstream_pruning.ramp_fraction,
            }
            if spec.downstream_pruning
            else {}
        ),
    }


def _run_config(
    phase: str, state: SweepState, total: int, metric: str, *first: tune.Callback
) -> tune.RunConfig:
    recorder = _recorder(state)
    storage_path, filesystem = state.store.tune_location(SWEEPS, state.sweep_id)
    fail_fast = FailFast()
    return tune.RunConfig(
        name=phase,
        storage_path=storage_path,
        storage_filesystem=filesystem,
        callbacks=[
            *first,
            MlflowTrials(
                recorder,
                state.parent_run_id,
                state.commit,
                phase,
                told=OptunaLedger(state.sweep_dir, state.sweep_id),
            ),
            Progress(phase, total, metric),
            fail_fast,
        ],
        stop=fail_fast.stopper,
        # A trial resumes from its last epoch, so retrying after a lost node (a reclaimed spot
        # instance) is cheap; a trial that fails for its own reasons still fails, loudly.
        failure_config=tune.FailureConfig(max_failures=1),
        verbose=0,
    )


def _search_tuner(state: SweepState, spec: SweepSpec, cells: list[Cell]) -> tune.Tuner:
    metric = spec.search.metric
    searcher = CellSearcher(
        sweep_dir=state.sweep_dir,
        backup=state.store.child(SWEEPS, state.sweep_id),
        sweep_id=state.sweep_id,
        cells=cells,
        spaces={cell.id: spec.space(cell.mode, cell.dataset) for cell in cells},
        trials_per_cell=spec.search.trials_per_cell,
        max_concurrent=spec.search.max_concurrent_trials,
        sampler=spec.search.sampler,
        seed=spec.search.seed,
        metric=metric,
        base_config=_base_config(state, spec),
    )
    if spec.early_stopping.scheduler == "asha":
        scheduler = CellASHA(
            metric=metric,
            max_t={
                m: max(max_epochs(spec.space(m, d)) for d in spec.datasets) for m in spec.modes
            },
            grace_period=spec.early_stopping.grace_period,
            reduction_factor=spec.early_stopping.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    total = len(cells) * spec.search.trials_per_cell
    search = ReconciledSearch(searcher)  # the searcher limits concurrency itself
    return tune.Tuner(
        _trainable(spec),
        tune_config=tune.TuneConfig(
            search_alg=search, scheduler=scheduler, num_samples=total, reuse_actors=True
        ),
        # The reconciler comes first: the searcher must know Tune's trials before anything
        # else looks at the search.
        run_config=_run_config(SEARCH, state, total, metric, search.reconciler),
    )


def _final_tuner(state: SweepState, spec: SweepSpec, cells: list[Cell]) -> tune.Tuner:
    plan = json.loads((state.sweep_dir / FINAL_PLAN_FILE).read_text())
    recorder = _recorder(state)
    runs = PlannedRuns(
        plan,
        spec.search.max_concurrent_trials,
        finished=partial(recorder.finished_keys, FINAL),
    )
    search = ReconciledSearch(runs)  # not a grid search: see PlannedRuns
    return tune.Tuner(
        _trainable(spec),
        tune_config=tune.TuneConfig(search_alg=search, num_samples=len(plan), reuse_actors=True),
        run_config=_run_config(FINAL, state, len(plan), M.TEST_TOP1, search.reconciler),
    )


def plan_final_runs(state: SweepState, spec: SweepSpec, cells: list[Cell], log=print) -> list:
    """The best search configuration of each cell, once per seed, scored on the test split."""
    plan = []
    storage = optuna_storage(state.sweep_dir) if spec.searches else None
    for cell in cells:
        searched, fixed = to_distributions(spec.space(cell.mode, cell.dataset))
        best = {"search_best_value": None, "search_best_trial": None}
        hparams = fixed
        if searched:
            trial = _best_trial(storage, state.sweep_id, cell)
            if trial is None:
                log(f"WARNING {cell.id}: no search trial completed; the cell has no final runs")
                continue
            hparams = {**fixed, **trial.params}
            best = {"search_best_value": trial.value, "search_best_trial": trial.number}
        for seed in spec.seeds:
            plan.append(
                {
                    **_base_config(state, spec),
                    **cell.to_dict(),
                    "cell": cell.id,
                    "phase": FINAL,
                    "hparams": hparams,
                    "seed": seed,
                    **best,
                }
            )
    return plan


def _best_trial(storage, sweep_id: str, cell: Cell) -> optuna.trial.FrozenTrial | None:
    study = optuna.load_study(study_name=study_name(sweep_id, cell), storage=storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
