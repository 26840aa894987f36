"""How big a study is, in cells and trials: printed by `validate` before any compute."""

from __future__ import annotations

from sparse_transfer.config import SweepSpec
from sparse_transfer.sweep.cells import cell_keys

__all__ = ["describe"]


def describe(spec: SweepSpec) -> str:
    cells = len(cell_keys(spec))
    final = cells * len(spec.seeds)
    if not spec.searches:
        return f"{cells} cells, no search (fixed hyperparameters), {final} final runs"
    search = cells * spec.search.trials_per_cell
    return f"{cells} cells, {search} search trials, {final} final runs"
