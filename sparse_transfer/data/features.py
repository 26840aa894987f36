"""Linear-probe feature cache: features of a frozen backbone, computed once, stored with pyarrow.

Keyed by (upstream weights hash, dataset, split, preprocessing, and the precision, device
type and engine the features were computed in: bf16 features from a GPU, or DeepSparse's,
never pass for torch's fp32 ones): every
trial of a linear cell, and every later sweep over the same storage, reads the same file
instead of recomputing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

__all__ = ["cache_key", "cached_features"]

_VERSION = 3  # bump when feature extraction changes meaning (2: decoded on the device; 3: engine)


def cache_key(
    weights_sha256: str,
    dataset: str,
    split: str,
    preprocessing: dict,
    *,
    precision: str,
    device_type: str,
    engine: str = "torch",
) -> str:
    blob = json.dumps(
        {
            "v": _VERSION,
            "weights": weights_sha256,
            "dataset": dataset,
            "split": split,
            "preprocessing": preprocessing,
            "precision": precision,
            "device": device_type,
            "engine": engine,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached_features(
    cache_dir: Path,
    key: str,
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    storage=None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(features, labels, hit). On a miss, `compute()` runs; its result is written atomically.

    With a remote `storage` (sparse_transfer.storage.Storage), `cache_dir` is its local
    mirror of `features/`: a node first fetches what another node computed, and uploads what
    it computes itself."""
    path = Path(cache_dir) / f"{key}.parquet"
    remote = ("features", path.name)
    if path.is_file() or (storage is not None and storage.download(*remote)):
        return _from_table(pq.read_table(path)) + (True,)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent trials of a cell wait for the one computing the features instead of
    # computing them again; the rename is atomic, so no reader ever sees half a file.
    with open(path.with_name(f".{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return _from_table(pq.read_table(path)) + (True,)
        features, labels = compute()
        tmp = path.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
        pq.write_table(_to_table(features, labels), tmp)
        os.replace(tmp, path)
        if storage is not None:
            storage.upload(*remote)
    return features, labels, False


def _to_table(features: torch.Tensor, labels: torch.Tensor) -> pa.Table:
    flat = pa.array(features.numpy().astype(np.float32).ravel())
    column = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
    return pa.table({"features": column, "label": pa.array(labels.numpy())})


def _from_table(table: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
    column = table.column("features").combine_chunks()
    width = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    labels = table.column("label").to_numpy()
    return torch.from_numpy(values.copy()), torch.from_numpy(labels.copy())
