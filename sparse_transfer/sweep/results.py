"""A sweep's results, read from its ledger: the final studies say which runs finished and their
test scores, `cells.json` what each cell is, the spec the downstream target. MLflow gives only
the links (run ids the outbox learnt), so a tracking server that is down cannot hold a report
back, and a record MLflow lacks cannot change it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from sparse_transfer import metrics as M
from sparse_transfer.analysis import CellProvenance, FinalRun, SweepProvenance, to_canonical
from sparse_transfer.analysis.provenance import total_hours
from sparse_transfer.config.spec import HYPERPARAMETERS
from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.sweep.plans import FINAL, TrialKey

__all__ = ["FAILURE_COLUMNS", "SweepResults", "read_results", "run_links"]

FAILURE_COLUMNS = ["cell", "seed", "failure", "why"]


class SweepResults:
    """The report's inputs: the results table (the columns `load_final_runs` gives from
    MLflow), the failures, and how each cell got its numbers."""

    def __init__(self, table: pd.DataFrame, failures: pd.DataFrame, cells: list) -> None:
        self.table, self.failures, self.cells = table, failures, cells


def read_results(
    ledger: Ledger,
    cells: list[Cell],
    *,
    downstream_target: float | None,
    failed_cells: dict[str, str],
    link: Callable[[str], tuple[str, str]],
) -> SweepResults:
    """`link(trial key)` -> (MLflow run id, its URL), ("", "") when unknown."""
    rows, failures, provenance = [], [], []
    for index, cell in enumerate(cells):
        search = _trials(ledger, cell.id, final=False)
        finals = sorted(_trials(ledger, cell.id, final=True), key=lambda t: t.number)
        done = []
        for trial in finals:
            outcome = trial.user_attrs.get("outcome", {})
            seed = str(trial.user_attrs.get("seed", ""))
            run_id, url = link(str(TrialKey(index, FINAL, trial.number)))
            if trial.state == TrialState.COMPLETE:
                done.append(FinalRun(seed, run_id, url))
                rows.append(_row(ledger.sweep_id, cell, trial, outcome, downstream_target))
                rows[-1]["run_id"] = run_id
            elif trial.state == TrialState.FAIL:
                failures.append(
                    {
                        "cell": cell.id,
                        "seed": seed,
                        "failure": str(outcome.get("failure", "error")),
                        "why": str(outcome.get("error", "")),
                    }
                )
        provenance.append(_cell(cell, search, finals, done))
    failed = [
        {"cell": cell, "seed": "", "failure": "cell failed", "why": why}
        for cell, why in failed_cells.items()
    ]
    table = pd.DataFrame(rows)
    if not table.empty:
        table = to_canonical(table, source=f"the ledger of sweep {ledger.sweep_id}")
    frame = pd.DataFrame(failed + failures, columns=FAILURE_COLUMNS)
    return SweepResults(table, frame, provenance)


def _trials(ledger: Ledger, cell_id: str, *, final: bool) -> list[FrozenTrial]:
    name = ledger.study_name(cell_id, final)
    if not ledger.storage.has_study(name):
        return []  # a cell with nothing to search has no search study
    study_id = ledger.storage.get_study_id_from_name(name)
    return ledger.storage.get_all_trials(study_id, deepcopy=False)


def _row(sweep_id, cell: Cell, trial: FrozenTrial, outcome: dict, target) -> dict:
    row: dict[str, object] = {
        "arch": cell.arch,
        "mode": cell.mode,
        "method": cell.method,
        "sparsity": str(cell.sparsity),
        "dataset": str(outcome.get("dataset", cell.dataset)),
        "seed": str(trial.user_attrs.get("seed", "")),
        "cell": cell.id,
        "sweep_id": sweep_id,
    }
    if cell.mode == "prune":
        # Transfer, then prune: a fully finetuned model at the downstream target, reported
        # next to models pruned upstream at the same sparsity ("prune, then transfer").
        row.update(
            method=f"{cell.method}+downstream_gmp",
            sparsity=str(target),
            mode="full",
            transfer_mode="prune",
        )
    row["top1"] = float(trial.value)
    return row


def _cell(cell: Cell, search: list, finals: list, done: list[FinalRun]) -> CellProvenance:
    told = [t for t in (*search, *finals) if t.state != TrialState.WAITING]
    outcomes = [t.user_attrs.get("outcome", {}) for t in told]
    chosen = finals[0].user_attrs.get("hparams", {}) if finals else {}
    return CellProvenance(
        cell=cell.id,
        hparams={k: str(v) for k, v in {**HYPERPARAMETERS, **chosen}.items()},
        search_trials=len(search),
        stopped_early=sum(t.state == TrialState.PRUNED for t in search),
        gpu_hours=total_hours(o.get(M.GPU_HOURS) for o in outcomes),
        cpu_hours=total_hours(o.get(M.CPU_HOURS) for o in outcomes),
        finals=sorted(done, key=lambda run: run.seed),
    )


def run_links(outbox: Path, base: str, experiment_id: str) -> Callable[[str], tuple[str, str]]:
    """Trial key -> (run id, UI URL), from the run ids this node's outbox learnt from MLflow
    (none on a node that never drove the sweep: the report then has no links, only numbers)."""
    ids: dict[str, str] = {}
    if outbox.is_file():
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=30) as conn:
            try:
                ids = dict(conn.execute("select run_key, run_id from runs where run_id != ''"))
            except sqlite3.OperationalError:  # an outbox made before it had a runs table
                ids = {}

    def link(key: str) -> tuple[str, str]:
        run_id = ids.get(key) or ""
        if not run_id or not experiment_id:
            return run_id, ""
        return run_id, f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

    return link


def parent_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else ""


def sweep_provenance(state, spec_text: str, cells: list, base: str, hint: str):
    return SweepProvenance(
        sweep_id=state.sweep_id,
        commit=state.commit,
        spec=spec_text,
        url=parent_url(base, state.experiment_id, state.parent_run_id),
        ui_hint=hint,
        cells=cells,
    )
