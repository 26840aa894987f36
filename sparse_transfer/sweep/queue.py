"""What runs next, in order: a trial in flight in the ledger but not in Tune (it continues from
its saved state), then a planned final run (longest first: finals.py), then a search trial of
the open cell served least so far (round-robin, so a strong cell never takes a weak one's
trials). Every pick is O(log cells) however large the grid."""

from __future__ import annotations

import heapq
from collections import deque

from sparse_transfer.sweep.finals import FinalQueue
from sparse_transfer.sweep.plans import CellPlan, TrialKey

__all__ = ["RunQueue"]


class RunQueue:
    def __init__(self, plans: list[CellPlan], trials_per_cell: int) -> None:
        self.plans = plans
        self.trials_per_cell = trials_per_cell
        self.orphans: deque[TrialKey] = deque()  # in flight in the ledger, not in Tune
        self.finals = FinalQueue()  # planned, unstarted final runs
        # (search trials told or running, cell index) of cells that may take another search
        # trial: an entry whose count is stale is skipped when met.
        self._open: list[tuple[int, int]] = []
        self._done_upto = 0  # cells before this one have their final runs told (`drained`)

    def is_open(self, plan: CellPlan) -> bool:
        """The cell may take another search trial."""
        return (
            bool(plan.searched)
            and not plan.search_over
            and (plan.done + plan.running < self.trials_per_cell)
        )

    def reopen(self, index: int) -> None:
        """The cell's count changed: queue it again if it may take another search trial."""
        plan = self.plans[index]
        if self.is_open(plan):
            heapq.heappush(self._open, (plan.done + plan.running, index))

    def open_cell(self) -> int | None:
        """The open cell served least so far, left in the queue (`take_open` takes it)."""
        while self._open:
            served, index = self._open[0]
            plan = self.plans[index]
            if self.is_open(plan) and served == plan.done + plan.running:
                return index
            heapq.heappop(self._open)  # stale: the cell's count moved, or it closed
        return None

    def take_open(self) -> None:
        heapq.heappop(self._open)

    def drained(self) -> bool:
        """Nothing waits and every cell is done: its search over, its final runs told."""
        if self.orphans or self.finals:
            return False
        # A cell once done stays done: the scan goes on from the first cell not done yet, so
        # asking again and again costs O(cells) over the whole sweep, not per question.
        while self._done_upto < len(self.plans):
            plan = self.plans[self._done_upto]
            if not (plan.search_over and plan.finals_open == 0):
                return False
            self._done_upto += 1
        return True
