"""Final runs planned and not started yet, started longest first (epochs x the dataset's
training images): a sweep's last hours are then not one long run on an idle cluster."""

from __future__ import annotations

import heapq
from itertools import count

__all__ = ["FinalQueue", "final_run_cost"]


def final_run_cost(dataset: str, epochs: int) -> int:
    """A final run's length, in image-steps: epochs x the dataset's training images (the
    paper's trainval size; 1 for a dataset without a known size, so epochs still rank)."""
    from sparse_transfer.data.paper import PAPER_DATASETS

    sizes = PAPER_DATASETS.get(dataset).paper_sizes if dataset in PAPER_DATASETS else None
    return epochs * (sizes[0] if sizes else 1)


class FinalQueue:
    """Cells with a final run waiting (a cell once per waiting run): the longest first, the
    earliest queued of equals; O(log n) a run however many wait."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int]] = []
        self._arrival = count()

    def add(self, cell: int, cost: int) -> None:
        heapq.heappush(self._heap, (-cost, next(self._arrival), cell))

    def take(self) -> int:
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)
