"""Which weights a sweep's accuracy was measured on, and where its speed table lives: what
the report needs to join speed to accuracy only when both come from the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sparse_transfer.config import load_spec
from sparse_transfer.models.checkpoint import file_sha256
from sparse_transfer.storage import Storage

__all__ = ["SPEED_DIR", "default_speed_dir", "sweep_speed", "sweep_weights"]

SPEED_DIR = "speed"


def default_speed_dir(storage: str, spec_name: str) -> Path:
    """Where `sparse-transfer speed` writes a spec's table by default, and where that spec's
    sweeps look for it: <storage>/speed/<spec name>."""
    return Storage(storage).local(SPEED_DIR, spec_name)


def sweep_weights(sweep_dir: Path) -> dict[tuple, set[str]]:
    """(arch, method, sparsity) -> sha256 of the upstream files the sweep's cells read.
    ValueError when the sweep's cells or an upstream file are not on this node."""
    cells_file = sweep_dir / "cells.json"
    if not cells_file.is_file():
        raise ValueError(
            f"{sweep_dir}: the sweep's cells are not here, so the weights its accuracy was "
            "measured on cannot be checked against the speed table's"
        )
    found: dict[tuple, set[str]] = {}
    for cell in json.loads(cells_file.read_text()):
        path = Path(cell["upstream_path"])
        if not path.is_file():
            raise ValueError(f"{path}: upstream file of the sweep's cells is not on this node")
        key = (cell["arch"], cell["method"], round(float(cell["sparsity"]), 6))
        found.setdefault(key, set()).add(file_sha256(path))
    return found


def sweep_speed(state) -> dict:
    """write_report's speed arguments for a sweep (a sweep.runner.SweepState): its spec's
    speed table (default_speed_dir) when there is one, checked against the sweep's upstream
    files. A table of other weights is not joined, and the report says why."""
    from sparse_transfer.analysis.speed import SPEED_SUMMARY_COLUMNS, read_speed, speedups

    spec = load_spec(state.sweep_dir / "spec.resolved.yaml")
    folder = default_speed_dir(spec.storage, spec.name)
    if not (folder / "speed.csv").is_file():
        return {}
    try:
        table = read_speed(folder)
        found = speedups(table, sweep_weights(state.sweep_dir))
    except ValueError as err:
        empty = pd.DataFrame(columns=["arch", "method", "sparsity", *SPEED_SUMMARY_COLUMNS])
        return {"speed": empty, "speed_note": f"Not joined: {err}"}
    return {
        "speed": found,
        "speed_note": f"Speed: {folder / 'speed.csv'}, measured on the "
        "sweep's own upstream files (same sha256).",
    }
