"""The only place that imports ray.tune: cells, per-cell search and ASHA, running and resuming."""

from sparse_transfer.sweep.runner import SweepState, resume_sweep, run_sweep

__all__ = ["SweepState", "resume_sweep", "run_sweep"]
