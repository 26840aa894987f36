"""Results tables, summaries against the dense baseline, the figure and the HTML report."""

from __future__ import annotations

from sparse_transfer.analysis.figures import plot_accuracy_vs_sparsity
from sparse_transfer.analysis.paper import OVERLAY_COLUMNS, overlay, paper_reference
from sparse_transfer.analysis.provenance import CellProvenance, FinalRun, SweepProvenance
from sparse_transfer.analysis.report import ReportPaths, format_summary, write_report
from sparse_transfer.analysis.results import (
    ACCURACY_FORMATS,
    DENSE_METHOD,
    PAPER_TABLES,
    RESULT_COLUMNS,
    is_dense,
    load_table,
    paper_table,
    to_canonical,
)
from sparse_transfer.analysis.summary import (
    DUPLICATES_RULE,
    PER_DATASET_COLUMNS,
    SUMMARY_COLUMNS,
    duplicates,
    per_dataset,
    summarize,
)

__all__ = [
    "ACCURACY_FORMATS",
    "DENSE_METHOD",
    "DUPLICATES_RULE",
    "OVERLAY_COLUMNS",
    "PAPER_TABLES",
    "PER_DATASET_COLUMNS",
    "RESULT_COLUMNS",
    "SUMMARY_COLUMNS",
    "CellProvenance",
    "FinalRun",
    "ReportPaths",
    "SweepProvenance",
    "duplicates",
    "format_summary",
    "is_dense",
    "load_table",
    "overlay",
    "paper_reference",
    "paper_table",
    "per_dataset",
    "plot_accuracy_vs_sparsity",
    "summarize",
    "to_canonical",
    "write_report",
]
