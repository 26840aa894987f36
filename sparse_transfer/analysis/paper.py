"""Our numbers next to the paper's: the overlay of a sweep over one of the paper's specs.

A sweep is over a paper spec when, for one (arch, mode), the paper has published a table
and every method and dataset of ours is in it (datasets compared by the registry entry's
``paper_name``: our ``birdsnap`` is the paper's ``birds``). The paper's summary is then taken
on exactly the datasets that we ran, so both means average the same datasets.

Like with like in seeds too: where the paper ran fewer seeds per cell than we did (MobileNetV1
full finetuning: seed 21 only in its raw results), our side of the overlay is recomputed on our
first that many seeds, and the overlay says so (``seeds_compared`` of ``seeds_ours``).
"""

from __future__ import annotations

import pandas as pd

from sparse_transfer.analysis.results import PAPER_TABLES, is_dense, paper_table
from sparse_transfer.analysis.summary import summarize

__all__ = ["OVERLAY_COLUMNS", "overlay", "overlay_note", "paper_reference"]

OVERLAY_COLUMNS: list[str] = [
    "arch",
    "mode",
    "method",
    "sparsity",
    "n_datasets",
    "seeds_ours",
    "seeds_compared",
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
    if not parts:
        return None
    paper = pd.concat(parts, ignore_index=True)
    return summarize(paper).merge(_seeds(paper).rename("paper_seeds").reset_index(), on=_GROUP)


def overlay(summary: pd.DataFrame, reference: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, mode, method, sparsity) of ours: our mean delta, the paper's, and ours minus
    the paper's, in points (the paper's dense is ``Dense``, ours may be ``dense``).

    Where the paper has fewer seeds per cell than ``results``, our delta is taken over our
    first ``seeds_compared`` seeds only (``summary`` is the all-seed one and is left as is)."""
    key = ["arch", "mode", "method", "sparsity"]
    ours_seeds = _seeds(results).rename("seeds_ours").reset_index()
    compared = ours_seeds.merge(reference[[*_GROUP, "paper_seeds"]].drop_duplicates(), on=_GROUP)
    compared["seeds_compared"] = compared[["seeds_ours", "paper_seeds"]].min(axis=1)
    fewer = compared[compared["seeds_compared"] < compared["seeds_ours"]]
    if not fewer.empty:
        summary = _with_first_seeds(summary, results, fewer)
    ours = summary[~summary["method"].map(is_dense)].merge(compared, on=_GROUP)
    paper = reference[~reference["method"].map(is_dense)][[*key, "mean_delta_pts"]]
    joined = ours.merge(
        paper.rename(columns={"mean_delta_pts": "paper_mean_delta_pts"}), on=key, how="inner"
    )
    joined["difference_pts"] = joined["mean_delta_pts"] - joined["paper_mean_delta_pts"]
    return joined[OVERLAY_COLUMNS].reset_index(drop=True)


def overlay_note(table: pd.DataFrame) -> str:
    """What the overlay compares, in a sentence per (arch, mode) whose seeds were cut."""
    cut = table[table["seeds_compared"] < table["seeds_ours"]].drop_duplicates(_GROUP)
    return " ".join(
        f"The paper ran {row.arch} {row.mode} finetuning with {row.seeds_compared} seed(s) per "
        f"cell; our side of that comparison uses our first {row.seeds_compared} of "
        f"{row.seeds_ours} seeds, so both are {row.seeds_compared}-seed means."
        for row in cut.itertuples()
    )


_GROUP = ["arch", "mode"]


def _seeds(results: pd.DataFrame) -> pd.Series:
    """Seeds per (arch, mode): the most any one cell (method, sparsity, dataset) has."""
    cells = results.groupby([*_GROUP, "method", "sparsity", "dataset"])["seed"].nunique()
    return cells.groupby(level=_GROUP).max()


def _with_first_seeds(
    summary: pd.DataFrame, results: pd.DataFrame, fewer: pd.DataFrame
) -> pd.DataFrame:
    """``summary`` with the rows of each (arch, mode) in ``fewer`` recomputed on that
    group's first ``seeds_compared`` seeds (in natural order: 2 before 10)."""
    parts = [summary.merge(fewer[_GROUP], on=_GROUP, how="left", indicator=True)]
    parts[0] = parts[0][parts[0]["_merge"] == "left_only"].drop(columns="_merge")
    for row in fewer.itertuples():
        group = results[(results["arch"] == row.arch) & (results["mode"] == row.mode)]
        first = sorted(group["seed"].unique(), key=_natural)[: row.seeds_compared]
        parts.append(summarize(group[group["seed"].isin(first)]))
    return pd.concat(parts, ignore_index=True)


def _natural(seed) -> tuple:
    text = str(seed)
    digits = "".join(c for c in text if c.isdigit())
    return (int(digits) if digits else -1, text)


def _paper_dataset_names() -> dict[str, str]:
    """Our registry name -> the paper's ``dset`` name (e.g. birdsnap -> birds)."""
    from sparse_transfer.data.paper import PAPER_DATASETS

    return {name: PAPER_DATASETS.get(name).paper_name for name in PAPER_DATASETS}
