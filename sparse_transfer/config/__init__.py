"""Pydantic models of every YAML the project reads, and the loader."""

from sparse_transfer.config.loader import (
    SpecError,
    apply_overrides,
    dump_spec,
    load_spec,
    parse_spec,
)
from sparse_transfer.config.spec import HYPERPARAMETERS, MODES, SweepSpec, Upstream, max_epochs

__all__ = [
    "HYPERPARAMETERS",
    "MODES",
    "SpecError",
    "SweepSpec",
    "Upstream",
    "apply_overrides",
    "dump_spec",
    "load_spec",
    "max_epochs",
    "parse_spec",
]
