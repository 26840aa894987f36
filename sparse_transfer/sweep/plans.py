"""A sweep's plan, as plain data: the identity of a trial across Tune runs, what the searcher
knows of each cell, and the settings it takes from the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sparse_transfer.config.spec import Choice, IntRange, LogUniform, SpaceValue, Uniform
from sparse_transfer.sweep.cells import Cell

__all__ = ["BY_DATASET", "FINAL", "SEARCH", "CellPlan", "Settings", "TrialKey", "to_distributions"]

SEARCH, FINAL = "search", "final"
BY_DATASET = "by_dataset"  # base config key: dataset -> the settings its trials override


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


@dataclass(frozen=True)
class TrialKey:
    """A trial's identity across every Tune run of the sweep: cell, phase, Optuna number."""

    cell: int
    phase: str
    number: int

    def __str__(self) -> str:
        return f"c{self.cell:04d}-{self.phase}-{self.number:05d}"


@dataclass(slots=True)  # one per cell: no dict of attributes each
class CellPlan:
    cell: Cell
    searched: dict[str, BaseDistribution]
    fixed: dict
    # the search study's sampler while the search goes on (studies.py opens the studies)
    sampler: optuna.samplers.BaseSampler | None = None
    done: int = 0  # search trials told COMPLETE or PRUNED
    running: int = 0  # search trials asked and not told
    failures: int = 0  # search trials told FAIL for their own reasons
    finals_planned: bool = False
    finals_open: int = 0  # final runs not yet told
    failed: str = ""  # why the cell has no final runs ("" while it is fine)
    deaths: int = 0  # workers lost by its trials, as the ledger counts them

    @property
    def search_over(self) -> bool:
        return self.failed != "" or self.finals_planned


@dataclass
class Settings:
    """What the searcher needs from the spec, as plain values."""

    trials_per_cell: int
    max_concurrent: int
    max_failures_per_cell: int
    sampler: str
    seed: int
    metric: str
    seeds: list[int]
    pruner: Callable[[], optuna.pruners.BasePruner] | None
    enqueue: dict[str, list[dict]] = field(default_factory=dict)  # cell id -> first trials
    gpu_hours_budget: float | None = None
    save_epochs: list[int] = field(default_factory=list)
