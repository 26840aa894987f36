"""A sweep's report: the results table, its summary, the figure and one self-contained HTML."""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from dataclasses import astuple, dataclass
from pathlib import Path

import pandas as pd

from sparse_transfer.analysis.figures import plot_accuracy_vs_sparsity
from sparse_transfer.analysis.html_sections import html_table as _html_table
from sparse_transfer.analysis.html_sections import provenance_section
from sparse_transfer.analysis.paper import overlay, overlay_note
from sparse_transfer.analysis.provenance import SweepProvenance
from sparse_transfer.analysis.results import is_dense, to_canonical
from sparse_transfer.analysis.speed import join_speed, speed_section, speedup_text
from sparse_transfer.analysis.study import StudyContext, study_context
from sparse_transfer.analysis.summary import (
    DUPLICATES_RULE,
    duplicates,
    per_dataset,
    summary_or_why,
)
from sparse_transfer.console import yes_no

__all__ = ["ReportPaths", "format_summary", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
img { max-width: 100%; }
.source { color: #666; }
.caveat { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
"""


@dataclass(frozen=True)
class ReportPaths:
    """Where ``write_report`` put each artefact."""

    results: Path
    summary: Path
    figure: Path
    html: Path


def write_report(
    results: pd.DataFrame,
    out_dir: str | Path,
    *,
    title: str = "sparse-transfer report",
    source: str = "",
    reference: pd.DataFrame | None = None,
    provenance: SweepProvenance | None = None,
    failures: pd.DataFrame | None = None,
    speed: pd.DataFrame | None = None,
    speed_note: str = "",
) -> ReportPaths:
    """Write results.parquet, summary.csv, accuracy_vs_sparsity.png and report.html.

    ``reference`` (``paper_reference``'s summary of the paper) adds the overlay; ``provenance``
    adds each cell's configuration, search, cost and MLflow links; ``failures`` (columns cell,
    seed, failure, why) names the cells without final runs and the final runs that failed.
    ``speed`` (``analysis.speed.speedups``, its weights already checked) adds the speedup
    beside each summary row and the accuracy-vs-speedup figure; ``speed_note`` says where
    that speed comes from.
    Every file is written to a scratch folder first and moved into place only when all are
    written, so a failure leaves the previous report (or none), never half of a new one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = to_canonical(results, source=source or "<results>")
    summary, missing = summary_or_why(results)
    sections = []
    if speed is not None:
        summary = join_speed(summary, speed)
        sections = speed_section(summary, speed_note)
    names = ReportPaths(
        results=Path("results.parquet"),
        summary=Path("summary.csv"),
        figure=Path("accuracy_vs_sparsity.png"),
        html=Path("report.html"),
    )
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".report-") as scratch:
        staged = ReportPaths(*(Path(scratch) / p for p in astuple(names)))
        plot_accuracy_vs_sparsity(results, staged.figure, reference=reference, summary=summary)
        page = _html_page(
            title,
            source,
            results,
            summary,
            staged.figure,
            reference,
            provenance,
            failures,
            missing,
            sections,
        )
        staged.html.write_text(page, encoding="utf-8")
        results.to_parquet(staged.results, index=False)
        # Full precision on purpose: the CSV is data for later analysis, not a display table.
        summary.to_csv(staged.summary, index=False)
        for path in astuple(staged):
            os.replace(path, out_dir / path.name)
    return ReportPaths(*(out_dir / p for p in astuple(names)))


def format_summary(summary: pd.DataFrame) -> str:
    """``summarize``'s table for the terminal: the same table a finished sweep prints."""
    from sparse_transfer.console import summary_table

    return summary_table(summary)


def _text(value: object) -> str:
    """A label column read back from CSV may hold NaN where it was empty."""
    return value if isinstance(value, str) and value else "-"


def _percent_of(value: float) -> str:
    return f"{value * 100:g}%"


def _signed(value: float) -> str:
    return "-" if _missing(value) else f"{value:+.2f}"


def _plain(value: float) -> str:
    return "-" if _missing(value) else f"{value:.2f}"


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _html_page(
    title: str,
    source: str,
    results: pd.DataFrame,
    summary: pd.DataFrame,
    figure: Path,
    reference: pd.DataFrame | None,
    provenance: SweepProvenance | None,
    failures: pd.DataFrame | None = None,
    missing: str = "",
    speed_sections: list[str] | None = None,
) -> str:
    image = base64.b64encode(figure.read_bytes()).decode("ascii")
    esc = html.escape
    context = study_context(provenance.spec) if provenance else StudyContext()
    source_line = f'<p class="source">Source: {esc(source)}</p>' if source else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        *lead(results, summary, context.description),
        source_line,
        "<h2>Summary: mean Δ vs dense over datasets (points of test top-1)</h2>",
        f"<p>{esc(_INTERVAL_NOTE)}</p>",
        *([f'<p class="warning">{esc(missing)}</p>'] if missing else []),
        _html_table(_summary_shown(summary, context), _SUMMARY_FORMATS),
        *_failures_section(failures),
        *_duplicates_section(results),
        *_overlay_section(summary, reference, results),
        "<h2>Accuracy vs. sparsity</h2>",
        f'<img alt="accuracy vs sparsity" src="data:image/png;base64,{image}">',
        *(speed_sections or []),
        "<h2>Per dataset (over seeds)</h2>",
        _html_table(per_dataset(results), _DATASET_FORMATS),
        *(provenance_section(provenance, context) if provenance else []),
        "</body></html>",
    ]
    return "\n".join(parts)


_MODE_NAMES = {"full": "Full finetuning", "linear": "Linear finetuning"}


def lead(results: pd.DataFrame, summary: pd.DataFrame, description: str = "") -> list[str]:
    """The report's first paragraphs: what the numbers are, the study's own caveat, and per
    (architecture, mode) its strongest sparse result and whether it is within noise."""
    esc = html.escape
    seeds = sorted(results["seed"].astype(str).unique(), key=lambda s: (len(s), s))
    datasets = sorted(results["dataset"].astype(str).unique())
    parts = [
        "<p>Accuracies are top-1 on each dataset's <strong>test split</strong>, in percent: "
        f"the mean over {len(seeds)} seed{'s' * (len(seeds) != 1)} ({esc(', '.join(seeds))}) "
        "of each model on each dataset. A delta is that accuracy minus the dense model's on "
        "the same dataset (same architecture and mode), in points; the summary averages it "
        f"over {len(datasets)} dataset{'s' * (len(datasets) != 1)} "
        f"({esc(', '.join(datasets))}).</p>"
    ]
    if description:
        parts.append(
            f'<p class="caveat"><strong>About this study:</strong> {esc(description)}</p>'
        )
    findings = [f"<li>{esc(sentence)}</li>" for sentence in strongest_results(summary)]
    if findings:
        parts += ["<ul>", *findings, "</ul>"]
    return parts


def strongest_results(summary: pd.DataFrame) -> list[str]:
    """One sentence per (architecture, mode): its best sparse mean delta, and its noise."""
    sentences = []
    sparse = summary[~summary["method"].map(is_dense) & summary["mean_delta_pts"].notna()]
    for (arch, mode), group in sparse.groupby(["arch", "mode"], sort=False, dropna=False):
        best = group.loc[group["mean_delta_pts"].idxmax()]
        where = _MODE_NAMES.get(str(mode), f"{_text(mode)} mode")
        if isinstance(arch, str) and arch:
            where += f" of {arch}"
        delta = f"{best['mean_delta_pts']:+.2f} points against dense"
        if _missing(best["ci_low_pts"]) or _missing(best["ci_high_pts"]):
            verdict = "no interval (one dataset and one seed), so no verdict on noise"
        else:
            interval = f"95% interval [{best['ci_low_pts']:+.2f}, {best['ci_high_pts']:+.2f}]"
            noise = (
                "within noise, so not a finding"
                if yes_no(best["within_noise"]) == "yes"
                else "outside the noise"
            )
            verdict = f"{interval}: {noise}"
        sentences.append(
            f"{where}: the strongest sparse result is {best['method']} at "
            f"{_percent_of(best['sparsity'])} sparsity, {delta} ({verdict})."
        )
    return sentences


def _summary_shown(summary: pd.DataFrame, context: StudyContext) -> pd.DataFrame:
    """The summary as the page shows it: the interval as one column, the noise verdict as a
    word, and each upstream's own accuracy where the zoo recorded it."""
    shown = summary.copy()
    if context.upstream_top1:
        keys = zip(shown["arch"], shown["method"], shown["sparsity"].astype(float), strict=True)
        at = shown.columns.get_loc("sparsity") + 1
        shown.insert(at, "upstream_top1", [context.upstream_top1.get(k) for k in keys])
    interval = [
        "-" if _missing(low) or _missing(high) else f"[{low:+.2f}, {high:+.2f}]"
        for low, high in zip(shown["ci_low_pts"], shown["ci_high_pts"], strict=True)
    ]
    shown = shown.drop(columns=["ci_low_pts", "ci_high_pts"])
    shown.insert(shown.columns.get_loc("within_noise"), "interval", interval)
    shown["within_noise"] = shown["within_noise"].map(yes_no)
    return shown


_INTERVAL_NOTE = (
    "The 95% interval of each mean delta comes from a paired bootstrap over datasets and "
    "seeds (2000 seeded replicates). A row 'within noise' has an interval that contains 0: "
    "its sign is not a finding. The dense rows are the reference: they have no interval."
)
_SUMMARY_FORMATS = {
    "sparsity": _percent_of,
    "upstream_top1": lambda v: "-" if _missing(v) else f"{v:.1f}",
    "mean_delta_pts": _signed,
    "std_delta_pts": _plain,
    "speedup": speedup_text,
    "flops_speedup": speedup_text,
    "speedup_batch_size": lambda v: "-" if _missing(v) else f"{float(v):g}",
    "speedup_engine": lambda v: v if isinstance(v, str) else "-",
}
_DATASET_FORMATS = {
    "sparsity": _percent_of,
    "mean_top1": _plain,
    "std_top1": _plain,
    "dense_top1": _plain,
    "delta_pts": _signed,
}


def _failures_section(failures: pd.DataFrame | None) -> list[str]:
    """Cells with no final runs and final runs that failed (a divergent lr, ...): named here,
    never silently missing from the tables above."""
    if failures is None:
        return []
    listing = (
        _html_table(failures, {})
        if len(failures)
        else "<p>None: every cell has its final runs, and every final run finished.</p>"
    )
    return [f"<h2>Failed cells and final runs: {len(failures)}</h2>", listing]


def _duplicates_section(results: pd.DataFrame) -> list[str]:
    found = duplicates(results)
    listing = (
        _html_table(found, {"sparsity": _percent_of})
        if len(found)
        else "<p>None: every (cell, seed) has one row.</p>"
    )
    return [
        f"<h2>Duplicate (cell, seed) rows: {len(found)}</h2>",
        f"<p>{html.escape(DUPLICATES_RULE)}</p>",
        listing,
    ]


def _overlay_section(
    summary: pd.DataFrame, reference: pd.DataFrame | None, results: pd.DataFrame
) -> list[str]:
    if reference is None:
        return []
    table = overlay(summary, reference, results)
    formats = {
        "sparsity": _percent_of,
        "mean_delta_pts": _signed,
        "paper_mean_delta_pts": _signed,
        "difference_pts": _signed,
    }
    return [
        "<h2>Against the paper's published numbers</h2>",
        "<p>The paper's mean delta on the same datasets (its raw results, shipped in "
        "sparse_transfer/reference/raw_results/), and ours minus the paper's, in points, each "
        "side over as many seeds as the other (seeds_compared).</p>",
        *([f"<p>{html.escape(note)}</p>"] if (note := overlay_note(table)) else []),
        _html_table(table, formats),
    ]
