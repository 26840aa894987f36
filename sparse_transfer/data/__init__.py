"""Datasets (one small file each), preprocessing and the linear-probe feature cache."""

from sparse_transfer.data import digits as _digits  # noqa: F401  (registers the quickstart world)
from sparse_transfer.data.registry import DATASETS, SPLITS, Dataset

__all__ = ["DATASETS", "SPLITS", "Dataset"]
