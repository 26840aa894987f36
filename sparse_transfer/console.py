"""What the console shows: the project's own lines, and Ray's, MLflow's and Alembic's chatter
only with `--verbose`.

Called by the CLI before Ray or MLflow is imported, so the settings reach every logger they
create and, through the environment, the processes a local Ray starts.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import urllib.parse
from pathlib import Path

# Loggers whose routine lines say nothing a user acts on: the token-authentication notice of
# every local Ray start, and MLflow's "Creating initial MLflow database tables" (Alembic).
# Logger names and phrases, not APIs: checked against Ray 2.60.0 and MLflow 3.17.2 on
# 2026-12-03.
_QUIET = {
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "alembic": logging.WARNING,
    "mlflow.store.db.utils": logging.WARNING,
}


class _Drop(logging.Filter):
    """Drops a logger's records that contain any of `phrases`."""

    def __init__(self, *phrases: str) -> None:
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self.phrases)


_DROPPED = {
    # Tune's lines on Ctrl-C ("Stop signal received ...", "Resume experiment with:
    # Tuner.restore(...)"): the project says it was interrupted and prints its own command
    # (`sparse-transfer resume ...`), which also restores Optuna and MLflow.
    "ray.tune.tune": _Drop("Tuner.restore(", "Stop signal received"),
    # "The `callbacks.on_step_begin` operation took 8.583 s, which may be a performance
    # bottleneck": timings of a busy machine, nothing a user of a sweep can act on.
    "ray.tune.utils.util": _Drop("may be a performance bottleneck"),
    "ray.tune.execution.tune_controller": _Drop("may be a performance bottleneck"),
}


def configure(verbose: bool) -> None:
    if verbose:
        return
    # MLflow reads its level once, at import, in this process and in every trial's.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # ... and draws a progress bar for every artifact the report reads back.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)
    for name, drop in _DROPPED.items():
        logger = logging.getLogger(name)
        if drop not in logger.filters:
            logger.addFilter(drop)


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """A fixed-width text table with a header row and a rule under it."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


# --- hints: commands printed after a sweep must run as printed, from any directory -----------

MLFLOW_PORT = 5000
DASHBOARD_PORT = 8080


def _tool(name: str, module: str) -> list[str]:
    """The tool of this interpreter's environment: its script beside `python`, else `-m`
    (a venv's bin/ is usually not on PATH after `make quickstart`)."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", module]


def mlflow_ui_command(tracking_uri: str, port: int = MLFLOW_PORT) -> list[str]:
    return [
        *_tool("mlflow", "mlflow"),
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--port",
        str(port),
    ]


def mlflow_view_url(base: str, experiment_id: str, view_key: str) -> str:
    """A saved view of an experiment's runs (see tracking.views)."""
    query = urllib.parse.urlencode({"viewStateShareKey": view_key})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def dashboard_command(store: Path, port: int = DASHBOARD_PORT) -> list[str]:
    """optuna-dashboard on an SQLite study db (`*.db`) or an Optuna journal file (a path)."""
    path = store.resolve()
    url = f"sqlite:///{path}" if path.suffix == ".db" else str(path)
    return [*_tool("optuna-dashboard", "optuna_dashboard._cli"), url, "--port", str(port)]


def shell(command: list[str]) -> str:
    return shlex.join(command)


def sweep_hints(tracking_uri: str, view: tuple[str, str] | None, optuna_store: Path | None):
    """The lines that tell a user how to look at a finished sweep's runs and studies.
    `view`: (experiment id, key) of the saved view of its final runs."""
    lines = []
    if tracking_uri.startswith(("http://", "https://")):  # a server: it is already up
        if view is not None:
            lines.append(f"mlflow:  {mlflow_view_url(tracking_uri, *view)}")
    else:
        lines.append(f"mlflow:  {shell(mlflow_ui_command(tracking_uri))}")
        if view is not None:
            base = f"http://127.0.0.1:{MLFLOW_PORT}"
            lines.append(f"         then open {mlflow_view_url(base, *view)}")
    if optuna_store is not None and optuna_store.is_file():
        lines.append(f"optuna:  {shell(dashboard_command(optuna_store))}")
        lines.append(f"         then open http://127.0.0.1:{DASHBOARD_PORT}")
    return lines


def summary_table(summary) -> str:
    """`summary.csv` for the terminal (the sweep's and `report`'s); with its arch column when
    it names one, and its interval columns (`ci_low_pts`, `ci_high_pts`, `within_noise`) when
    the report wrote them, so a delta inside the noise reads as such. A dense row's "within
    noise" is empty, as in summary.csv and the HTML report: it is the reference."""
    has_ci = {"ci_low_pts", "ci_high_pts", "within_noise"} <= set(summary.columns)
    has_arch = "arch" in summary.columns and any(not _missing(a) for a in summary["arch"])
    headers = ["arch"] * has_arch + ["mode", "method", "sparsity", "datasets", "mean delta", "std"]
    if has_ci:
        headers += ["95% interval", "within noise"]
    rows = []
    for row in summary.to_dict("records"):
        cells = [_text(row.get("arch"))] * has_arch + [
            _text(row["mode"]),
            str(row["method"]),
            percent(row["sparsity"]),
            str(row["n_datasets"]),
            _number(row["mean_delta_pts"], "+.2f"),
            _number(row["std_delta_pts"], ".2f"),
        ]
        if has_ci:
            low, high = row["ci_low_pts"], row["ci_high_pts"]
            interval = "-" if _missing(low) or _missing(high) else f"[{low:+.2f}, {high:+.2f}]"
            cells += [interval, yes_no(row["within_noise"])]
        rows.append(cells)
    first_number = 2 + has_arch
    return table(headers, rows, right=set(range(first_number, len(headers) - has_ci)))


def percent(fraction: float, digits: int | None = None) -> str:
    """A sparsity as every command and the report write it: `90%`, or `89.99%` with digits."""
    value = float(fraction) * 100
    return f"{value:.{digits}f}%" if digits is not None else f"{value:g}%"


def _missing(value) -> bool:
    if value is None or type(value).__name__ == "NAType":  # pandas' NA (no pandas import here)
        return True
    return value != value or value == ""  # NaN is not equal to itself


def _text(value) -> str:
    return "-" if _missing(value) else str(value)


def _number(value, fmt: str) -> str:
    return "-" if _missing(value) else format(float(value), fmt)


def yes_no(value) -> str:
    """within_noise as every surface shows it: yes, no, or empty where there is no interval."""
    if _missing(value):
        return ""
    if isinstance(value, str):
        value = value.strip().lower() in {"true", "1", "yes"}
    return "yes" if value else "no"
