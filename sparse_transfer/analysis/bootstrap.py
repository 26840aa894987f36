"""A two-stage paired bootstrap of mean deltas against dense: datasets, then seeds.

One replicate draws datasets with replacement; for every drawn dataset it draws the seeds of
each method and of the dense baseline with replacement, and takes the mean over the drawn
datasets of (method's mean over drawn seeds - dense's mean over drawn seeds). The draw is
*paired*: a method and dense are always compared on the same drawn dataset, and all methods
of one replicate share its dataset draws and dense draws (so rankings can be compared within
a replicate). The interval is the 2.5th and 97.5th percentile of the replicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

__all__ = ["REPLICATES", "SEED", "bootstrap_mean_deltas", "percentile_interval"]

REPLICATES = 2000
SEED = 0  # fixed: a report is a pure function of its results table
LEVEL = 0.95


def bootstrap_mean_deltas(
    items: Mapping[Hashable, Mapping[str, Sequence[float]]],
    dense: Mapping[str, Sequence[float]],
    datasets: Sequence[str],
    *,
    replicates: int = REPLICATES,
    seed: int = SEED,
) -> dict[Hashable, np.ndarray]:
    """Bootstrap replicates of each item's mean delta over ``datasets``.

    ``items`` maps an item (a method at a sparsity) to its per-dataset seed accuracies;
    ``dense`` holds the baseline's. A drawn dataset that an item lacks is left out of that
    item's mean (NaN if it has none of the drawn ones).
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(datasets), size=(replicates, len(datasets)))
    baseline = np.stack([_seed_means(rng, dense[d], picks.shape) for d in datasets])
    out = {}
    for key, accuracies in items.items():
        deltas = np.full((len(datasets), *picks.shape), np.nan)
        for index, dataset in enumerate(datasets):
            if dataset in accuracies and dataset in dense:
                deltas[index] = _seed_means(rng, accuracies[dataset], picks.shape)
                deltas[index] -= baseline[index]
        chosen = np.take_along_axis(deltas, picks[None], axis=0)[0]
        with warnings.catch_warnings():
            # An item with none of a replicate's drawn datasets gets NaN there, by design.
            warnings.simplefilter("ignore", RuntimeWarning)
            out[key] = np.nanmean(chosen, axis=1)
    return out


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN if none is finite)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def _seed_means(rng: np.random.Generator, values: Sequence[float], shape) -> np.ndarray:
    """Per (replicate, pick): the mean of ``len(values)`` seeds drawn with replacement."""
    values = np.asarray(values, dtype=float)
    draws = rng.integers(0, len(values), size=(*shape, len(values)))
    return values[draws].mean(axis=-1)
