"""The sweep's GPU-hour budget (`budget.gpu_hours`): the hours of every told trial (read from
the ledger at each start, then added as trials are told) plus each running trial's hours so
far. Once spent it stays spent: no new search trial starts, and every cell's final runs start
from its search so far (search.py plans them)."""

from __future__ import annotations

from collections.abc import Hashable

from sparse_transfer import metrics as M

__all__ = ["GpuBudget"]


class GpuBudget:
    def __init__(self, limit: float | None) -> None:
        self.limit = limit  # None: no budget
        self.told = 0.0
        self.live: dict[Hashable, float] = {}  # running trial -> its hours so far
        self.spent = False

    def tell(self, outcome: dict) -> None:
        """A trial told (its outcome as the ledger holds it)."""
        self.told += float(outcome.get(M.GPU_HOURS, 0.0))

    def running(self, trial: Hashable, result: dict) -> None:
        self.live[trial] = float(result.get(M.GPU_HOURS, 0.0))

    def ended(self, trial: Hashable) -> None:
        self.live.pop(trial, None)

    def spend(self) -> bool:
        """True when this call finds the budget spent for the first time."""
        if self.limit is None or self.spent:
            return False
        self.spent = self.told + sum(self.live.values()) >= self.limit
        return self.spent
