"""Our numbers next to the paper's: the overlay of a sweep over one of the paper's specs.

A sweep is over a paper spec when, for one (arch, mode), the paper has published a table
and every method and dataset of ours is in it (datasets compared by the registry entry's
``paper_name``: our ``birdsnap`` is the paper's ``birds``). The paper's summary is then taken
on exactly the datasets that we ran, so both means average the same datasets.
"""

from __future__ import annotations

import pandas as pd

from sparse_transfer.analysis.results import PAPER_TABLES, is_dense, paper_table
from sparse_transfer.analysis.summary import summarize

__all__ = ["OVERLAY_COLUMNS", "overlay", "paper_reference"]

OVERLAY_COLUMNS: list[str] = [
    "arch",
    "mode",
    "method",
    "sparsity",
    "n_datasets",
    "mean_delta_pts",
    "paper_mean_delta_pts",
    "difference_pts",
]


def paper_reference(results: pd.DataFrame) -> pd.DataFrame | None:
    """``summarize`` of the paper's numbers for each (arch, mode) of ``results`` that is a
    sweep over a paper spec, on our datasets; None when no (arch, mode) is."""
    tables = {spec: name for name, spec in PAPER_TABLES.items()}
    names = _paper_dataset_names()
    parts = []
    for (arch, mode), ours in results.groupby(["arch", "mode"], sort=False):
        if (arch, mode) not in tables:
            continue
        paper = paper_table(tables[(arch, mode)])
        datasets = {names.get(d, d) for d in ours["dataset"]}
        methods = {m for m in ours["method"] if not is_dense(m)}
        if datasets <= set(paper["dataset"]) and methods <= set(paper["method"]):
            parts.append(paper[paper["dataset"].isin(datasets)])
    return summarize(pd.concat(parts, ignore_index=True)) if parts else None


def overlay(summary: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, mode, method, sparsity) of ours: our mean delta, the paper's, and ours minus
    the paper's, in points (the paper's dense is ``Dense``, ours may be ``dense``)."""
    key = ["arch", "mode", "method", "sparsity"]
    ours = summary[~summary["method"].map(is_dense)]
    paper = reference[~reference["method"].map(is_dense)][[*key, "mean_delta_pts"]]
    joined = ours.merge(
        paper.rename(columns={"mean_delta_pts": "paper_mean_delta_pts"}), on=key, how="inner"
    )
    joined["difference_pts"] = joined["mean_delta_pts"] - joined["paper_mean_delta_pts"]
    return joined[OVERLAY_COLUMNS].reset_index(drop=True)


def _paper_dataset_names() -> dict[str, str]:
    """Our registry name -> the paper's ``dset`` name (e.g. birdsnap -> birds)."""
    from sparse_transfer.data.paper import PAPER_DATASETS

    return {name: PAPER_DATASETS.get(name).paper_name for name in PAPER_DATASETS}
