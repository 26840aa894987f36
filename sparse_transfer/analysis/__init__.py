"""Results tables, summaries against the dense baseline, the figure and the HTML report."""

from __future__ import annotations

from sparse_transfer.analysis.figures import plot_accuracy_vs_sparsity
from sparse_transfer.analysis.report import ReportPaths, format_summary, write_report
from sparse_transfer.analysis.results import (
    DENSE_METHOD,
    RESULT_COLUMNS,
    is_dense,
    load_table,
    to_canonical,
)
from sparse_transfer.analysis.summary import (
    PER_DATASET_COLUMNS,
    SUMMARY_COLUMNS,
    per_dataset,
    summarize,
)

__all__ = [
    "DENSE_METHOD",
    "PER_DATASET_COLUMNS",
    "RESULT_COLUMNS",
    "SUMMARY_COLUMNS",
    "ReportPaths",
    "format_summary",
    "is_dense",
    "load_table",
    "per_dataset",
    "plot_accuracy_vs_sparsity",
    "summarize",
    "to_canonical",
    "write_report",
]
