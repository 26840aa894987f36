"""Run and resume a study: search each cell, re-run each cell's best configuration per seed,
report. The sweep directory holds everything needed to resume after the driver dies: the spec,
the cells, and the ledger (sweep/ledger.py), which alone says what is left to run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import optuna
import ray
from ray import tune

from sparse_transfer.analysis import ReportPaths, paper_reference, write_report
from sparse_transfer.config import SweepSpec, dump_spec, load_spec, max_epochs
from sparse_transfer.config.spec import Resources
from sparse_transfer.speed.weights import sweep_speed
from sparse_transfer.storage import Storage
from sparse_transfer.sweep.cells import Cell, load_cells, plan_cells, save_cells
from sparse_transfer.sweep.cluster import ray_address
from sparse_transfer.sweep.events import TrialEvents
from sparse_transfer.sweep.lease import hold_lease
from sparse_transfer.sweep.ledger import LEDGER_FILE, Ledger, fetch_ledger
from sparse_transfer.sweep.plans import BY_DATASET, Settings
from sparse_transfer.sweep.results import (
    SweepResults,
    read_results,
    run_links,
    sweep_provenance,
)
from sparse_transfer.sweep.scheduling import FailFastStop, LedgerPruning
from sparse_transfer.sweep.search import CellSearch
from sparse_transfer.sweep.trainable import remove_state, transfer_trainable
from sparse_transfer.sweep.upstream import check_data_roots, resolve_upstreams
from sparse_transfer.tracking import OUTBOX_FILE, SweepRecorder, default_tracking_uri
from sparse_transfer.tracking.runs_table import NoResultsError, ui_base, ui_hint

__all__ = [
    "SweepFailedError",
    "SweepHalted",
    "SweepInterrupted",
    "SweepState",
    "resume_sweep",
    "run_sweep",
    "sync_sweep",
    "write_sweep_report",
]


class SweepFailedError(RuntimeError):
    """The sweep stopped because its first trials all failed; the message says where to look."""


class SweepHalted(RuntimeError):
    """A node cannot go on (its disk is full): the sweep pauses, resumable once fixed."""


class SweepInterrupted(RuntimeError):
    """Tune ended with trials in flight (Ctrl-C): `sparse-transfer resume` finishes them."""


SPEC_FILE = "spec.resolved.yaml"
STATE_FILE = "state.json"
CELLS_FILE = "cells.json"
REPORT_DIR = "report"
SWEEPS = "sweeps"
# RUNNING: searching; DONE: every cell has its final runs or failed, the report is not
# written; REPORTED: the report is written and uploaded. A resume does the phases after it.
RUNNING, DONE, REPORTED, FAILED = "running", "done", "reported", "failed"
_RECORDS_WAIT_S = 60.0  # at the end, how long MLflow gets to take the queued records
_SYNC_PATIENCE_S = 600.0  # `sync`: how long it waits for a server that does not answer
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
    phase: str  # RUNNING, DONE, REPORTED (or FAILED): see above
    commit: str
    tune_runs: int = 0  # Tune runs started so far: each start is a new one, named after it
    failed_cells: dict[str, str] = field(default_factory=dict)  # cell -> why
    experiment_id: str = ""  # MLflow's, for the report's links

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
        names = (STATE_FILE, SPEC_FILE, CELLS_FILE)  # and the ledger: see fetch_ledger
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
    tracking_uri = default_tracking_uri(spec.tracking.uri)
    experiment = spec.tracking.experiment or spec.name
    # The server must answer before anything is made: a sweep never starts untracked.
    experiment_id = SweepRecorder(tracking_uri, experiment, sweep_id).reach()
    sweep_dir = store.local(SWEEPS, sweep_id)
    sweep_dir.mkdir(parents=True, exist_ok=False)
    (sweep_dir / SPEC_FILE).write_text(dump_spec(spec))
    save_cells(sweep_dir / CELLS_FILE, plan_cells(spec, upstream_paths))
    state = SweepState(sweep_id, store.uri, tracking_uri, experiment, "", RUNNING, git_commit())
    state.experiment_id = experiment_id
    state.upload(SPEC_FILE, CELLS_FILE)
    state.save()  # resumable from here on: its parent run is made (or found) by any start
    log(f"sweep {sweep_id}: {state.location}")
    log(f"mlflow: {tracking_uri} (experiment {experiment!r})")
    with _lease(state):
        return _continue(state, spec, address=address, log=log)


def resume_sweep(
    location: str | Path, *, address: str | None = None, log=print, take_over: bool = False
) -> SweepState:
    """Finish whatever the sweep lacks: its search and final runs, its report, its records."""
    state = SweepState.load(location)
    if state.phase == FAILED:
        raise SweepFailedError(
            "this sweep stopped because its first trials all failed; fix the cause and start "
            "a new sweep"
        )
    with _lease(state, take_over=take_over):
        state = SweepState.load(location)  # as the last driver left it
        if state.phase == REPORTED:
            log("nothing to do: the sweep is finished and reported")
        else:
            log(f"resuming sweep {state.sweep_id}")
        return _continue(state, load_spec(state.sweep_dir / SPEC_FILE), address=address, log=log)


def sync_sweep(location: str | Path, *, log=print, take_over: bool = False) -> int:
    """Send the MLflow records the sweep's outbox holds; how many still wait."""
    state = SweepState.load(location)
    with _lease(state, take_over=take_over):
        return send_records(state, log=log, patient=True)


def _lease(state: SweepState, take_over: bool = False):
    return hold_lease(
        state.store, (SWEEPS, state.sweep_id), state.sweep_dir, state.location, take_over=take_over
    )


def _continue(state: SweepState, spec: SweepSpec, *, address, log) -> SweepState:
    """Each phase after the one the state names: the search (RUNNING), the report (DONE);
    at any phase, the records this node's outbox lacks (rebuilt from the ledger) are sent."""
    rebuild = _recorder(state).outbox_is_new()  # before the parent run is written to it
    _ensure_parent(state, spec)
    if state.phase == RUNNING:
        _start_ray(address)
        _search(state, spec, log=log, rebuild=rebuild)
    elif rebuild:
        _rebuild_records(state, spec)
    if state.phase == DONE:
        _report(state, spec, log=log)
    send_records(state, log=log)
    for cell, why in state.failed_cells.items():
        log(f"FAILED cell {cell}: {why}")
    return state


def _ensure_parent(state: SweepState, spec: SweepSpec) -> None:
    """The sweep's parent run, found or made once; re-opened RUNNING until it is reported."""
    recorder = _recorder(state)
    if state.parent_run_id:
        if state.phase != REPORTED:
            recorder.parent_run({})
        return
    tags = {"spec": spec.name, "git_commit": state.commit, "storage": state.store.display()}
    state.parent_run_id = recorder.parent_run(tags)
    recorder.log_parent_artifact(state.parent_run_id, state.sweep_dir / SPEC_FILE)
    state.save()


def _search(state: SweepState, spec: SweepSpec, *, log, rebuild: bool = False) -> None:
    sweep_dir = state.sweep_dir
    cells = load_cells(sweep_dir / CELLS_FILE)
    parts = (SWEEPS, state.sweep_id)
    fetch_ledger(state.store, parts, sweep_dir / LEDGER_FILE)
    ledger = Ledger(sweep_dir, state.store, parts, state.sweep_id)
    try:
        search = _run_tune(state, spec, cells, ledger, log=log, rebuild=rebuild)
    finally:
        ledger.close()
    if search.halted:
        raise SweepHalted(
            f"halted: {search.halted}\nFree space there, then finish the sweep with "
            f"`sparse-transfer resume {state.location}`"
        )
    if search.stopping:
        # The sweep is given up, not paused: no run stays RUNNING, and no cell goes on
        # to final runs from a partial search.
        search.events.abandon(search.in_flight())
        recorder = _recorder(state)
        recorder.close_parent(state.parent_run_id, "FAILED")
        recorder.drain(timeout=_RECORDS_WAIT_S)
        state.phase = FAILED
        state.save()
        raise SweepFailedError(
            f"stopped after {search.failures.own_failures} trials failed and none finished (a bug "
            f"or bad data, not bad luck). The first error:\n{search.failures.first_error}\n"
            f"Logs: the trials' error.txt under {state.location}. Fix the cause and start "
            "the sweep again."
        )
    if not search.finished:
        raise SweepInterrupted(
            f"interrupted with {len(search.in_flight())} trials in flight; "
            f"finish the sweep with `sparse-transfer resume {state.location}`"
        )
    state.failed_cells = search.failed_cells()
    state.phase = DONE
    state.save()
    # Every trial is told: whatever a late background upload left under trial_state/
    # (a trial stopped while its last save was on the way) goes too.
    remove_state(state.store, (SWEEPS, state.sweep_id, "trial_state"))
    _remove_tune_runs(state, every=True)


def _remove_tune_runs(state: SweepState, *, every: bool = False) -> None:
    """Tune's folder of the previous start: never restored (the ledger resumes), so never
    kept; one folder at most is on disk, the running one. A done sweep removes every start's
    folder: a killed driver's trial workers may still have written into theirs after it went."""
    first = 1 if every else state.tune_runs
    for run in range(max(first, 1), state.tune_runs + 1):
        remove_state(state.store, (SWEEPS, state.sweep_id, f"tune-{run:03d}"))


def _report(state: SweepState, spec: SweepSpec, *, log) -> None:
    """The report from the ledger, uploaded with the sweep; then the sweep is REPORTED."""
    recorder = _recorder(state)
    # MLflow gets a moment for the records queued last (the report links their runs); a
    # server that is down holds nothing back: the numbers come from the ledger.
    recorder.drain(timeout=_RECORDS_WAIT_S)
    try:
        paths = write_sweep_report(state, spec)
    except NoResultsError:
        recorder.close_parent(state.parent_run_id, "FAILED")
        failed = "".join(f"\n  {cell}: {why}" for cell, why in state.failed_cells.items())
        raise SweepFailedError(
            "no final run finished, so there is nothing to report; see each run's `failure` "
            f"and `error` tags in MLflow{failed}"
        ) from None
    for path in (paths.results, paths.summary, paths.figure, paths.html):
        state.upload(f"{REPORT_DIR}/{path.name}")
    recorder.log_parent_artifact(state.parent_run_id, paths.summary)
    recorder.log_parent_artifact(state.parent_run_id, paths.html)
    recorder.close_parent(state.parent_run_id, "FAILED" if state.failed_cells else "FINISHED")
    state.phase = REPORTED
    state.save()


def send_records(state: SweepState, *, log, patient: bool = False) -> int:
    """Wait for the outbox to reach MLflow, up to `_RECORDS_WAIT_S` at a sweep's end or
    `_SYNC_PATIENCE_S` when `patient` (`sync`); say what it refused and what still waits. The
    number still waiting."""
    recorder = _recorder(state)
    recorder.drain(timeout=_SYNC_PATIENCE_S if patient else _RECORDS_WAIT_S, log=log)
    for run_key, kind, error in recorder.box.refused():
        log(f"mlflow refused {kind} for {run_key}: {error[:300]}")
    left = recorder.box.pending()
    if left:
        log(
            f"mlflow: {left} records wait in the outbox ({recorder.outbox_path}) for "
            f"{state.tracking_uri}; once it answers, `sparse-transfer sync {state.location}` "
            "sends them"
        )
    return left


def _recorder(state: SweepState) -> SweepRecorder:
    outbox = state.sweep_dir / OUTBOX_FILE
    return SweepRecorder(state.tracking_uri, state.experiment, state.sweep_id, outbox)


def _run_tune(
    state: SweepState, spec: SweepSpec, cells: list[Cell], ledger: Ledger, *, log, rebuild: bool
):
    """One Tune run over whatever the ledger says is left; a new one at every start."""
    recorder = _recorder(state)
    search = _searcher(state, spec, cells, ledger)
    events = search.events
    if not spec.searches:
        log("search: every hyperparameter is fixed; going straight to the final runs")
    search.start()
    search.close_records(recorder.open_trial_keys(), rebuild=rebuild)
    events.count_told("search", sum(p.done for p in search.plans))
    events.count_told("final", search.finals_told())
    if search.finished:
        return search
    _remove_tune_runs(state)
    state.tune_runs += 1
    state.save()
    name = f"tune-{state.tune_runs:03d}"
    storage_path, filesystem = state.store.tune_location(SWEEPS, state.sweep_id)
    os.environ[MAX_PENDING_ENV] = _USER_MAX_PENDING or str(spec.search.max_concurrent_trials)
    log(f"{'resuming' if state.tune_runs > 1 else 'starting'}: {search.describe()}")
    tuner = tune.Tuner(
        _trainable(spec),
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=LedgerPruning(search),
            num_samples=-1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            stop=FailFastStop(search),
            # A worker's death is retried by the search from the trial's saved state (see
            # search.py), as a new Tune trial: Tune itself retries nothing.
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=0,
        ),
    )
    tuner.fit()
    recorder.flush_all()
    return search


def _searcher(state: SweepState, spec: SweepSpec, cells: list[Cell], ledger: Ledger) -> CellSearch:
    search_total = len(cells) * spec.search.trials_per_cell if spec.searches else 0
    events = TrialEvents(
        _recorder(state),
        ledger,
        parent_run_id=state.parent_run_id,
        commit=state.commit,
        store=state.store,
        sweep_id=state.sweep_id,
        totals={"search": search_total, "final": len(cells) * len(spec.seeds)},
        metric=spec.search.metric,
    )
    return CellSearch(
        ledger,
        cells,
        {cell.id: spec.space(cell.mode, cell.dataset) for cell in cells},
        _search_settings(spec, cells),
        _base_config(state, spec),
        events,
    )


def _rebuild_records(state: SweepState, spec: SweepSpec) -> None:
    """A sweep past its search, resumed where its outbox is new (another machine, a lost
    disk): every told trial's record is queued again from the ledger, as a resume mid-search
    does, and a reported sweep's parent run is closed again."""
    recorder = _recorder(state)
    if state.phase == REPORTED:  # the parent run, re-opened in this outbox to be closed again
        recorder.parent_run({})
    parts = (SWEEPS, state.sweep_id)
    fetch_ledger(state.store, parts, state.sweep_dir / LEDGER_FILE)
    ledger = Ledger(state.sweep_dir, state.store, parts, state.sweep_id)
    try:
        search = _searcher(state, spec, load_cells(state.sweep_dir / CELLS_FILE), ledger)
        search.start()
        search.close_records(set(), rebuild=True)
    finally:
        ledger.close()
    if state.phase == REPORTED:
        for name in ("summary.csv", "report.html"):  # what _report logs (write_report's names)
            if (path := state.sweep_dir / REPORT_DIR / name).is_file():
                recorder.log_parent_artifact(state.parent_run_id, path)
        recorder.close_parent(state.parent_run_id, "FAILED" if state.failed_cells else "FINISHED")


def _trainable(spec: SweepSpec):
    def resources(config: dict) -> tune.PlacementGroupFactory:
        trial = config.get("trial", {})  # each trial's settings, with its dataset's resources
        cpus = float(trial.get("cpus", spec.resources.cpu))
        return tune.PlacementGroupFactory([{"CPU": cpus, "GPU": float(trial.get("gpu", 0))}])

    return tune.with_resources(transfer_trainable, resources)


def resource_settings(resources: Resources) -> dict:
    """What a trial's settings carry of its resources."""
    return {
        "threads": max(1, int(resources.cpu)),
        "cpus": resources.cpu,
        "gpu": resources.gpu,
        "precision": resources.precision,
        "feature_engine": resources.feature_engine,
        "compile": resources.compile,
        "eval_every": resources.eval_every,
        "loader_workers": resources.workers,
        "checkpoint_interval_s": resources.checkpoint_interval_s,
    }


def _search_settings(spec: SweepSpec, cells: list[Cell]) -> Settings:
    stopping = spec.early_stopping
    pruner = None
    rungs: list[int] = []
    if spec.searches and stopping.scheduler == "asha":
        most = max(max_epochs(spec.space(m, d)) for m in spec.modes for d in spec.datasets)
        rung = stopping.grace_period
        while rung < most:
            rungs.append(rung)
            rung *= stopping.reduction_factor
        pruner = partial(
            optuna.pruners.SuccessiveHalvingPruner,
            min_resource=stopping.grace_period,
            reduction_factor=stopping.reduction_factor,
        )
    return Settings(
        trials_per_cell=spec.search.trials_per_cell,
        max_concurrent=spec.search.max_concurrent_trials,
        max_failures_per_cell=spec.search.max_failures_per_cell,
        sampler=spec.search.sampler,
        seed=spec.search.seed,
        metric=spec.search.metric,
        seeds=list(spec.seeds),
        pruner=pruner,
        enqueue={cell.id: spec.enqueued(cell.mode, cell.dataset) for cell in cells},
        gpu_hours_budget=spec.budget.gpu_hours,
        save_epochs=rungs,
    )


def sweep_results(state: SweepState, spec: SweepSpec) -> SweepResults:
    """The sweep's results: from the ledger's final studies, `cells.json` and the spec, with
    MLflow links from the outbox (no MLflow server is asked). What its report and `compare`
    read."""
    sweep_dir = state.sweep_dir
    fetch_ledger(state.store, (SWEEPS, state.sweep_id), sweep_dir / LEDGER_FILE)
    ledger = Ledger(sweep_dir, None, (), state.sweep_id)  # read only: nothing is appended
    try:
        found = read_results(
            ledger,
            load_cells(sweep_dir / CELLS_FILE),
            downstream_target=(
                spec.downstream_pruning.target_sparsity if spec.downstream_pruning else None
            ),
            failed_cells=state.failed_cells,
            link=run_links(
                sweep_dir / OUTBOX_FILE, ui_base(state.tracking_uri), state.experiment_id
            ),
        )
    finally:
        ledger.close()
    if found.table.empty:
        raise NoResultsError(f"no final run of sweep {state.sweep_id} finished")
    return found


def write_sweep_report(state: SweepState, spec: SweepSpec) -> ReportPaths:
    """The sweep's report, in `<sweep_dir>/report` (its numbers: `sweep_results`)."""
    sweep_dir = state.sweep_dir
    found = sweep_results(state, spec)
    base = ui_base(state.tracking_uri)
    spec_text = (sweep_dir / SPEC_FILE).read_text()
    return write_report(
        found.table,
        sweep_dir / REPORT_DIR,
        title=f"sparse-transfer: {state.sweep_id}",
        source=f"the ledger of sweep {state.sweep_id} ({state.location})",
        reference=paper_reference(found.table),
        provenance=sweep_provenance(
            state, spec_text, found.cells, base, ui_hint(state.tracking_uri)
        ),
        failures=found.failures,
        **sweep_speed(state),
    )


def _start_ray(address: str | None) -> None:
    # Tune's experiment snapshots are never restored (the ledger is what resumes) and MLflow
    # is the record: no frequent snapshots, no JSON/CSV/TensorBoard loggers on the driver.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "600")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune's result grid looks for the per-trial JSON/CSV logs we turned off: MLflow has them.
    # (A logger name, not an API: checked against Ray 2.60.0 on 2026-12-03.)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune copies the driver's AWS_* credentials into each trial's runtime env, which Ray's
    # runtime env agent logs in plain text; trials inherit the node's environment anyway.
    # A private module-level set: checked against Ray 2.60.0 on 2026-12-03.
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(
        {v for v in class_cache.ENV_VARS_TO_PROPAGATE if v.startswith("AWS_")}
    )
    if ray.is_initialized():
        return
    address = ray_address(address)
    # an existing cluster has its own dashboard settings; a local instance runs without one
    local = {"include_dashboard": False} if address == "local" else {}
    ray.init(address=address, logging_level="WARNING", log_to_driver=False, **local)


def _base_config(state: SweepState, spec: SweepSpec) -> dict:
    return {
        "storage": state.storage,
        "sweep_id": state.sweep_id,
        **resource_settings(spec.resources),
        # the datasets whose `dataset_overrides` change their trials' resources
        BY_DATASET: {
            d: resource_settings(spec.resources_for(d))
            for d in spec.datasets
            if spec.resources_for(d) != spec.resources
        },
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


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
