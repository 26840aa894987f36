"""Cells: one (upstream model, dataset, mode). The unit of search budget, early stopping and
comparison. Trials of one cell never compete with trials of another."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sparse_transfer.config import SweepSpec, Upstream

__all__ = ["Cell", "plan_cells"]


@dataclass(frozen=True, slots=True)  # slots: one per cell, 100,000s of them
class Cell:
    upstream: str
    dataset: str
    mode: str
    arch: str
    method: str
    sparsity: float
    upstream_path: str
    upstream_key: str = ""  # path inside the sweep's storage, when the model lives there
    data_root: str = ""  # file datasets: where the images are (a local path or s3:// prefix)

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


def cell_keys(spec: SweepSpec) -> list[tuple[Upstream, str, str]]:
    """(upstream, dataset, mode) of every cell, in a stable order. A `prune` cell exists only
    where the upstream model is less sparse than the downstream target."""
    target = spec.downstream_pruning.target_sparsity if spec.downstream_pruning else 1.0
    return [
        (u, dataset, mode)
        for u in spec.upstream
        for dataset in spec.datasets
        for mode in spec.modes
        if mode != "prune" or u.sparsity < target
    ]


def plan_cells(spec: SweepSpec, upstreams: dict[str, tuple[Path, str]]) -> list[Cell]:
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
            spec.dataset_root(dataset) or "",
        )
        for u, dataset, mode in cell_keys(spec)
    ]


def save_cells(path: Path, cells: list[Cell]) -> None:
    path.write_text(json.dumps([c.to_dict() for c in cells], indent=2))


def load_cells(path: Path) -> list[Cell]:
    return [Cell(**c) for c in json.loads(path.read_text())]
