"""HTML building blocks of the report. Every piece of text is escaped: method names, cell
names and hyperparameter values come from user data."""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd

from sparse_transfer.analysis.provenance import CellProvenance, SweepProvenance

__all__ = ["html_table", "hours", "provenance_section"]


def html_table(frame: pd.DataFrame, formats: dict[str, Callable[[object], str]]) -> str:
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


def hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def provenance_section(record: SweepProvenance) -> list[str]:
    """The sweep's commit, cost, spec and links, and one row per cell."""
    esc = html.escape
    trials = sum(c.search_trials for c in record.cells)
    stopped = sum(c.stopped_early for c in record.cells)
    return [
        "<h2>How these numbers were made</h2>",
        "<ul>",
        f"<li>sweep: {_link(record.sweep_id, record.url)}</li>",
        f"<li>commit: <code>{esc(record.commit or 'unknown')}</code></li>",
        f"<li>search: {trials} trials in all, {stopped} of them stopped early by ASHA</li>",
        f"<li>GPU-hours: {hours(record.gpu_hours)}; CPU-hours: {hours(record.cpu_hours)} "
        "(search and final runs)</li>",
        f"<li>links: {esc(record.ui_hint)}</li>" if record.ui_hint else "",
        "</ul>",
        "<h3>Cells: the chosen hyperparameters (of the final runs), search and cost</h3>",
        _cells_table(record.cells),
        "<h3>Spec (resolved, as saved with the sweep)</h3>",
        f"<pre>{esc(record.spec or 'not found')}</pre>",
    ]


def _cells_table(cells: list[CellProvenance]) -> str:
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "cell",
            "hyperparameters",
            "search trials",
            "stopped by ASHA",
            "GPU-hours",
            "CPU-hours",
            "final runs",
        )
    )
    rows = []
    for cell in cells:
        params = "; ".join(f"{k}={v}" for k, v in sorted(cell.hparams.items()))
        runs = " ".join(_link(f"seed {run.seed}", run.url) for run in cell.finals)
        rows.append(
            f'<tr><td class="text">{html.escape(cell.cell)}</td>'
            f'<td class="text">{html.escape(params)}</td>'
            f"<td>{cell.search_trials}</td><td>{cell.stopped_early}</td>"
            f"<td>{hours(cell.gpu_hours)}</td><td>{hours(cell.cpu_hours)}</td>"
            f'<td class="text">{runs}</td></tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _link(text: str, url: str) -> str:
    if not url:
        return html.escape(text)
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'
