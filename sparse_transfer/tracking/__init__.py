"""The only place that imports mlflow: sweep runs, trial runs, and reading results back."""

from sparse_transfer.tracking.recorder import SweepRecorder, default_tracking_uri

__all__ = ["SweepRecorder", "default_tracking_uri"]
