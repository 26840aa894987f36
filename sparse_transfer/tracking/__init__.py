"""The only place that imports mlflow: sweep runs, trial runs, and reading results back."""

from sparse_transfer.tracking.recorder import (
    OUTBOX_FILE,
    SweepRecorder,
    TrackingUnavailable,
    default_tracking_uri,
)

__all__ = ["OUTBOX_FILE", "SweepRecorder", "TrackingUnavailable", "default_tracking_uri"]
