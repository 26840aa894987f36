"""Cells: one (upstream model, dataset, mode). The unit of search budget, early stopping and
comparison. Trials of one cell never compete with trials of another."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sparse_transfer.config import SweepSpec

__all__ = ["Cell", "plan_cells"]


@dataclass(frozen=True)
class Cell:
    upstream: str
    dataset: str
    mode: str
    arch: str
    method: str
    sparsity: float
    upstream_path: str
    upstream_key: str = ""  # path inside the sweep's storage, when the model lives there

    @property
    def id(self) -> str:
        return f"{self.upstream}/{self.dataset}/{self.mode}"

    def tags(self) -> dict[str, str]:
        return {
            "cell": self.id,
            "upstream": self.upstream,
            "dataset": self.dataset,
            "mode": self.mode,
            "arch": self.arch,
            "method": self.method,
            "sparsity": str(self.sparsity),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def plan_cells(spec: SweepSpec, upstreams: dict[str, tuple[Path, str]]) -> list[Cell]:
    """Every cell of the study, in a stable order (upstream, dataset, mode)."""
    return [
        Cell(
            u.name,
            dataset,
            mode,
            u.arch,
            u.method,
            u.sparsity,
            str(upstreams[u.name][0]),
            upstreams[u.name][1],
        )
        for u in spec.upstream
        for dataset in spec.datasets
        for mode in spec.modes
    ]


def save_cells(path: Path, cells: list[Cell]) -> None:
    path.write_text(json.dumps([c.to_dict() for c in cells], indent=2))


def load_cells(path: Path) -> list[Cell]:
    return [Cell(**c) for c in json.loads(path.read_text())]
