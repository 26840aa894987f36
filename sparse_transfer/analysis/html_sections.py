"""HTML building blocks of the report. Every piece of text is escaped: method names, cell
names and hyperparameter values come from user data."""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd

from sparse_transfer.analysis.provenance import CellProvenance, SweepProvenance
from sparse_transfer.analysis.study import StudyContext

__all__ = ["HEADERS", "html_table", "hours", "provenance_section", "significant"]


# The page's column headers: words, where the CSV and Parquet keep their column names.
HEADERS = {
    "arch": "architecture",
    "n_datasets": "datasets",
    "upstream_top1": "upstream top-1 (%)",
    "mean_delta_pts": "mean Δ vs dense (pts)",
    "std_delta_pts": "std over datasets (pts)",
    "interval": "95% interval (pts)",
    "within_noise": "within noise",
    "n_seeds": "seeds",
    "mean_top1": "mean test top-1 (%)",
    "std_top1": "std over seeds (pts)",
    "dense_top1": "dense test top-1 (%)",
    "delta_pts": "Δ vs dense (pts)",
    "paper_mean_delta_pts": "paper's mean Δ (pts)",
    "difference_pts": "ours − paper's (pts)",
    "top1_values": "top-1 values",
}


def html_table(frame: pd.DataFrame, formats: dict[str, Callable[[object], str]]) -> str:
    head = "".join(f"<th>{html.escape(HEADERS.get(str(c), str(c)))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            text = formats[column](value) if column in formats else str(value)
            css = ' class="text"' if isinstance(value, str) else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def significant(text: str, digits: int = 3) -> str:
    """A hyperparameter's value to `digits` significant digits; integers and words as given."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return str(text)
    if value.is_integer() and str(text).lstrip("-").isdigit():
        return str(text)
    return f"{value:.{digits}g}"


def hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def provenance_section(record: SweepProvenance, context: StudyContext | None = None) -> list[str]:
    """The sweep's commit, cost, spec and links, and one row per cell."""
    esc = html.escape
    context = context or StudyContext()
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
        "<p>Searched: the values the search chose, with the validation score that chose them "
        "(the best completed search trial's). Fixed: the spec's values. Three significant "
        "digits.</p>",
        _cells_table(record.cells, context),
        "<h3>Spec (resolved, as saved with the sweep)</h3>",
        f"<pre>{esc(record.spec or 'not found')}</pre>",
    ]


_CELL_HEADERS = (
    "cell",
    "searched (chosen)",
    "fixed",
    "winning validation score",
    "search trials",
    "stopped by ASHA",
    "GPU-hours",
    "CPU-hours",
    "final runs",
)


def _cells_table(cells: list[CellProvenance], context: StudyContext) -> str:
    head = "".join(f"<th>{name}</th>" for name in _CELL_HEADERS)
    rows = []
    for cell in cells:
        # a cell the saved spec does not describe: every value counts as chosen
        searched = context.searched.get(cell.cell, set(cell.hparams))
        chosen = _params(cell.hparams, searched, True)
        fixed = _params(cell.hparams, searched, False)
        score = cell.best_search.get(context.objective or "val_top1")
        shown = f"{context.objective or 'val_top1'} {score:.2f}" if score is not None else "-"
        runs = " ".join(_link(f"seed {run.seed}", run.url) for run in cell.finals)
        text = [cell.cell, chosen or "none", fixed or "none", shown]
        rows.append(
            "<tr>"
            + "".join(f'<td class="text">{html.escape(t)}</td>' for t in text)
            + f"<td>{cell.search_trials}</td><td>{cell.stopped_early}</td>"
            f"<td>{hours(cell.gpu_hours)}</td><td>{hours(cell.cpu_hours)}</td>"
            f'<td class="text">{runs}</td></tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _params(hparams: dict[str, str], searched: set[str], chosen: bool) -> str:
    """The searched (`chosen`) or the fixed hyperparameters, to 3 significant digits."""
    return "; ".join(
        f"{k}={significant(v)}" for k, v in sorted(hparams.items()) if (k in searched) == chosen
    )


def _link(text: str, url: str) -> str:
    if not url:
        return html.escape(text)
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'
