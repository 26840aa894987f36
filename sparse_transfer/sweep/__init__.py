"""The only place that imports ray.tune: cells, per-cell search and ASHA, running and resuming.

The runner is imported on first use, not with the package: every Ray worker that runs a trial
imports `sparse_transfer.sweep.trainable`, and should not pay for the driver's MLflow, Optuna
and report code each time a worker starts (after every lost node or killed worker).
"""

from __future__ import annotations

__all__ = ["SweepState", "resume_sweep", "run_sweep"]


def __getattr__(name: str):
    if name in __all__:
        from sparse_transfer.sweep import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'sparse_transfer.sweep' has no attribute {name!r}")
