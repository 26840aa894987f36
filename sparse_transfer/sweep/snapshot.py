"""A copy of a sweep's search studies for optuna-dashboard, which writes to the storage it opens
(its delete button appends a delete to the journal): the dashboard gets a snapshot, never the
ledger that alone says what ran.

The snapshot holds the search studies only, each with its objective named (`val_top1`): the
final studies hold one trial per seed of the chosen configuration, and a "best trial" among seeds
by test score is a choice no one should make. The report shows those seeds.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

__all__ = ["SNAPSHOT_FILE", "write_dashboard_snapshot"]

SNAPSHOT_FILE = "optuna-dashboard.jsonl"  # in the sweep directory; rewritten on each call


class _ReadOnlyJournal(BaseJournalBackend):
    """The complete lines of a journal file, read once; appending is refused."""

    def __init__(self, path: Path) -> None:
        data = Path(path).read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        self._logs = [json.loads(line) for line in complete.splitlines() if line]

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise PermissionError("the sweep's ledger is read-only here")


def write_dashboard_snapshot(ledger: Path, out: Path, objective: str) -> Path:
    """Copy the search studies of `ledger` (a journal file) to the journal file `out`, their
    objective named `objective`; `out` is replaced if it exists."""
    source = JournalStorage(_ReadOnlyJournal(ledger))
    out = Path(out)
    out.unlink(missing_ok=True)
    target = JournalStorage(JournalFileBackend(str(out)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" per copy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for summary in optuna.get_all_study_summaries(source, include_best_trial=False):
                name = summary.study_name
                if name.endswith("/final"):
                    continue
                optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target)
                optuna.load_study(study_name=name, storage=target).set_metric_names([objective])
    finally:
        optuna.logging.set_verbosity(verbosity)
    return out
