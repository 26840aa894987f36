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
from sparse_transfer.analysis.paper import overlay
from sparse_transfer.analysis.provenance import SweepProvenance
from sparse_transfer.analysis.results import to_canonical
from sparse_transfer.analysis.speed import join_speed, speed_section, speedup_text
from sparse_transfer.analysis.summary import (
    DUPLICATES_RULE,
    duplicates,
    per_dataset,
    summary_or_why,
)

__all__ = ["ReportPaths", "format_summary", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
img { max-width: 100%; }
.source { color: #666; }
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
    """A fixed-width text table of ``summarize``'s output for the terminal."""
    headers = ["arch", "mode", "method", "sparsity", "datasets", "mean delta", "std"]
    rows = [
        [
            _text(row.arch),
            _text(row.mode),
            row.method,
            f"{row.sparsity * 100:g}%",
            str(row.n_datasets),
            _signed(row.mean_delta_pts),
            _plain(row.std_delta_pts),
        ]
        for row in summary.itertuples(index=False)
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    left_aligned = {0, 1, 2}

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left_aligned else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


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
    return value is None or (isinstance(value, float) and math.isnan(value))


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
    source_line = f'<p class="source">Source: {esc(source)}</p>' if source else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        source_line,
        "<h2>Summary: delta vs. dense, over datasets (pts)</h2>",
        f"<p>{esc(_INTERVAL_NOTE)}</p>",
        *([f'<p class="warning">{esc(missing)}</p>'] if missing else []),
        _html_table(_marked(summary), _SUMMARY_FORMATS),
        *_failures_section(failures),
        *_duplicates_section(results),
        *_overlay_section(summary, reference),
        "<h2>Accuracy vs. sparsity</h2>",
        f'<img alt="accuracy vs sparsity" src="data:image/png;base64,{image}">',
        *(speed_sections or []),
        "<h2>Per dataset (over seeds)</h2>",
        _html_table(per_dataset(results), _DATASET_FORMATS),
        *(provenance_section(provenance) if provenance else []),
        "</body></html>",
    ]
    return "\n".join(parts)


_INTERVAL_NOTE = (
    "ci_low_pts..ci_high_pts is a 95% interval of the mean delta from a paired bootstrap over "
    "datasets and seeds (2000 seeded replicates). Rows marked 'within noise' have an interval "
    "that contains 0: their sign is not a finding."
)
_SUMMARY_FORMATS = {
    "sparsity": _percent_of,
    "mean_delta_pts": _signed,
    "std_delta_pts": _plain,
    "ci_low_pts": _signed,
    "ci_high_pts": _signed,
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


def _marked(summary: pd.DataFrame) -> pd.DataFrame:
    noise = summary["within_noise"].map(lambda v: "within noise" if v else "")
    return summary.assign(within_noise=noise)


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


def _overlay_section(summary: pd.DataFrame, reference: pd.DataFrame | None) -> list[str]:
    if reference is None:
        return []
    formats = {
        "sparsity": _percent_of,
        "mean_delta_pts": _signed,
        "paper_mean_delta_pts": _signed,
        "difference_pts": _signed,
    }
    return [
        "<h2>Against the paper's published numbers</h2>",
        "<p>The paper's mean delta on the same datasets (its raw results, shipped in "
        "sparse_transfer/reference/raw_results/), and ours minus the paper's, in points.</p>",
        _html_table(overlay(summary, reference), formats),
    ]
