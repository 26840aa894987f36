"""How big a study is, in cells and trials: printed by `validate` before any compute."""

from __future__ import annotations

from sparse_transfer.config import SweepSpec

__all__ = ["describe"]


def describe(spec: SweepSpec) -> str:
    cells = len(spec.upstream) * len(spec.datasets) * len(spec.modes)
    search = cells * spec.search.trials_per_cell
    final = cells * len(spec.seeds)
    return f"{cells} cells, {search} search trials, {final} final runs"
