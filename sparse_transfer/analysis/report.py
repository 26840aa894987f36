"""A sweep's report: the results table, its summary, the figure and one self-contained HTML."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sparse_transfer.analysis.figures import plot_accuracy_vs_sparsity
from sparse_transfer.analysis.results import to_canonical
from sparse_transfer.analysis.summary import per_dataset, summarize

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
) -> ReportPaths:
    """Write results.parquet, summary.csv, accuracy_vs_sparsity.png and report.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = to_canonical(results, source=source or "<results>")
    summary = summarize(results)
    paths = ReportPaths(
        results=out_dir / "results.parquet",
        summary=out_dir / "summary.csv",
        figure=out_dir / "accuracy_vs_sparsity.png",
        html=out_dir / "report.html",
    )
    results.to_parquet(paths.results, index=False)
    # Full precision on purpose: the CSV is data for later analysis, not a display table.
    summary.to_csv(paths.summary, index=False)
    plot_accuracy_vs_sparsity(results, paths.figure)
    page = _html_page(title, source, summary, per_dataset(results), paths.figure)
    paths.html.write_text(page, encoding="utf-8")
    return paths


def format_summary(summary: pd.DataFrame) -> str:
    """A fixed-width text table of ``summarize``'s output for the terminal."""
    headers = ["mode", "method", "sparsity", "datasets", "mean delta", "std"]
    rows = [
        [
            row.mode or "-",
            row.method,
            f"{row.sparsity * 100:g}%",
            str(row.n_datasets),
            _signed(row.mean_delta_pts),
            _plain(row.std_delta_pts),
        ]
        for row in summary.itertuples(index=False)
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    left_aligned = {0, 1}

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left_aligned else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _signed(value: float) -> str:
    return "-" if _missing(value) else f"{value:+.2f}"


def _plain(value: float) -> str:
    return "-" if _missing(value) else f"{value:.2f}"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _html_page(
    title: str, source: str, summary: pd.DataFrame, datasets: pd.DataFrame, figure: Path
) -> str:
    image = base64.b64encode(figure.read_bytes()).decode("ascii")
    esc = html.escape
    source_line = f'<p class="source">Source: {esc(source)}</p>' if source else ""
    summary_formats = {
        "sparsity": _percent,
        "mean_delta_pts": _signed,
        "std_delta_pts": _plain,
    }
    dataset_formats = {
        "sparsity": _percent,
        "mean_top1": _plain,
        "std_top1": _plain,
        "dense_top1": _plain,
        "delta_pts": _signed,
    }
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            source_line,
            "<h2>Summary: delta vs. dense, over datasets (pts)</h2>",
            _html_table(summary, summary_formats),
            "<h2>Accuracy vs. sparsity</h2>",
            f'<img alt="accuracy vs sparsity" src="data:image/png;base64,{image}">',
            "<h2>Per dataset (over seeds)</h2>",
            _html_table(datasets, dataset_formats),
            "</body></html>",
        ]
    )


def _percent(value: float) -> str:
    return f"{value * 100:g}%"


def _html_table(frame: pd.DataFrame, formats: dict[str, Callable[[float], str]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            text = formats[column](value) if column in formats else str(value)
            css = ' class="text"' if isinstance(value, str) else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
