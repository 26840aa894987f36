"""What a sweep's report says besides its numbers: how each cell got them, and at what cost.

Plain data, filled from MLflow by ``tracking.runs_table.load_provenance`` (the analysis
package never imports mlflow).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CellProvenance", "FinalRun", "SweepProvenance", "total_hours"]


@dataclass(frozen=True)
class FinalRun:
    seed: str
    run_id: str
    url: str


@dataclass(frozen=True)
class CellProvenance:
    """One cell: the configuration its final runs used, its search, and its cost."""

    cell: str
    hparams: dict[str, str]
    search_trials: int
    stopped_early: int  # search trials that ASHA ended before their last epoch
    gpu_hours: float | None  # search and final runs together; None when none logged it
    cpu_hours: float | None
    finals: list[FinalRun] = field(default_factory=list)
    # the best validation score of the search's completed trials, per metric logged: the
    # score that chose `hparams` (empty for a cell with nothing searched)
    best_search: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepProvenance:
    sweep_id: str
    commit: str
    spec: str  # the resolved spec, as saved with the sweep ("" when not found)
    url: str  # the sweep's parent run in the MLflow UI
    ui_hint: str  # how to open the links (e.g. the `mlflow ui` command for a sqlite store)
    cells: list[CellProvenance]

    @property
    def gpu_hours(self) -> float | None:
        return total_hours(c.gpu_hours for c in self.cells)

    @property
    def cpu_hours(self) -> float | None:
        return total_hours(c.cpu_hours for c in self.cells)


def total_hours(values) -> float | None:
    """The sum of the logged values; None (shown "n/a") when none was logged."""
    logged = [v for v in values if v is not None]
    return sum(logged) if logged else None
