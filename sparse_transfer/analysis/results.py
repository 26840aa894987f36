"""The canonical results table: one row per final run, whatever produced it.

Two on-disk formats are read into the same frame:

- the canonical one (``RESULT_COLUMNS``, top1 in percent), written by our sweeps and reports;
- the paper's published raw results (``dset,model,sparsity,seed,val_acc``, accuracy as a
  fraction), so the paper's numbers go through exactly the same summary code as ours.

The paper's files carry neither architecture nor transfer mode: both are in the file name
(``resnet50_full.csv``), and ``load_table`` takes them from there when nothing else says.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = [
    "ACCURACY_FORMATS",
    "DENSE_METHOD",
    "PAPER_TABLES",
    "RESULT_COLUMNS",
    "is_dense",
    "load_table",
    "paper_table",
    "to_canonical",
]

# A list, not a tuple: pandas reads ``frame[tuple]`` as one column key.
RESULT_COLUMNS: list[str] = ["arch", "mode", "method", "sparsity", "dataset", "seed", "top1"]

DENSE_METHOD = "dense"

_TEXT_COLUMNS = ("arch", "mode", "method", "dataset", "seed")
_OPTIONAL_COLUMNS = ("arch", "mode")
_PAPER_RENAMES = {"dset": "dataset", "model": "method"}
_PAPER_ACCURACY = "val_acc"
_UNNAMED = re.compile(r"^(Unnamed: \d+(_level_\d+)?)?$")
# "<arch>_<mode>.csv", the names of the paper's raw-results files as shipped here.
_ARCH_MODE_NAME = re.compile(r"^(?P<arch>[A-Za-z0-9]+)_(?P<mode>full|linear)$")

ACCURACY_FORMATS = (
    "accuracy is either a 'top1' column in percent (0-100), or the paper's 'val_acc' column "
    "as a fraction (0-1)"
)

# The paper's published raw results, shipped in the package (see reference/raw_results/).
PAPER_TABLES: dict[str, tuple[str, str]] = {
    "resnet50_full": ("resnet50", "full"),
    "resnet50_linear": ("resnet50", "linear"),
    "mobilenetv1_full": ("mobilenetv1", "full"),
    "mobilenetv1_linear": ("mobilenetv1", "linear"),
}


def is_dense(method: str) -> bool:
    """True for the dense baseline: the paper writes ``Dense``, our sweeps write ``dense``."""
    return str(method).strip().lower() == DENSE_METHOD


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's published tables (``PAPER_TABLES``), with its arch and mode."""
    from sparse_transfer.reference import RAW_RESULTS

    if name not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {name!r}; known: {sorted(PAPER_TABLES)}")
    arch, mode = PAPER_TABLES[name]
    return load_table(RAW_RESULTS / f"{name}.csv", mode=mode, arch=arch)


def load_table(
    path: str | Path, *, mode: str | None = None, arch: str | None = None
) -> pd.DataFrame:
    """Read a results CSV or Parquet file into the canonical table.

    ``mode``/``arch`` fill those columns where the file has none; without them, a file named
    ``<arch>_<full|linear>.csv`` (the paper's) gives them. Extra columns of a CSV are kept
    as text.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"results file not found: {path}")
    named = _ARCH_MODE_NAME.match(path.stem)
    if named:
        mode, arch = mode or named["mode"], arch or named["arch"]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame, lines = _read_csv(path)
        return _canonical(frame, str(path), mode, arch, lines)
    if suffix in (".parquet", ".pq"):
        return _canonical(pd.read_parquet(path), str(path), mode, arch, None)
    raise ValueError(f"{path}: unsupported results format {suffix!r}; use .csv or .parquet")


def to_canonical(
    frame: pd.DataFrame,
    *,
    source: str = "<table>",
    mode: str | None = None,
    arch: str | None = None,
) -> pd.DataFrame:
    """Validate and normalise an in-memory table (canonical or paper format).

    Columns beyond the canonical ones (``run_id``, ``cell``, ...) are kept after them;
    ``source`` names the table in error messages.
    """
    return _canonical(frame, source, mode, arch, None, from_file=False)


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """All fields as text, and each data row's line number, tolerating trailing commas.

    Read with ``csv`` rather than pandas: pandas silently drops (or shifts into the index) a
    field past the header; here a trailing empty field is dropped and a non-empty one is an
    error, so columns can never shift.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = list(csv.reader(handle))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the table as UTF-8"
        ) from None
    if not records:
        raise ValueError(f"{path}: empty results file (no header)")
    header = [name.strip() for name in records[0]]
    while header and not header[-1]:
        header.pop()
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in header {header}")
    rows, lines = [], []
    for line, fields in enumerate(records[1:], start=2):
        if not any(field.strip() for field in fields):
            continue
        if len(fields) < len(header) or any(f.strip() for f in fields[len(header) :]):
            raise ValueError(
                f"{path}: line {line} has {len(fields)} fields but the header names "
                f"{len(header)} columns {header}"
            )
        rows.append(fields[: len(header)])
        lines.append(line)
    return pd.DataFrame(rows, columns=header, dtype=str), lines


def _canonical(
    frame: pd.DataFrame,
    source: str,
    mode: str | None,
    arch: str | None,
    lines: Sequence[int] | None,
    *,
    from_file: bool = True,  # a sweep's own results are percent by construction
) -> pd.DataFrame:
    frame = _drop_empty_unnamed(frame.rename(columns=lambda c: str(c).strip()), source)
    frame = _from_paper_format(frame)
    accuracy_column = frame.attrs.get("accuracy_column", "top1")
    _check_columns(frame, source)
    frame = frame.copy()
    for column, fill in (("mode", mode), ("arch", arch)):
        if column not in frame.columns:
            frame[column] = fill or ""
        frame[column] = frame[column].fillna(fill or "").astype(str).str.strip()
        if fill:
            frame.loc[frame[column] == "", column] = fill
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].map(_as_text)
    for column in ("sparsity", "top1"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame = frame.reset_index(drop=True)
    _check_ranges(frame, source, lines, accuracy_column, from_file)
    extras = [c for c in frame.columns if c not in RESULT_COLUMNS]
    return frame[RESULT_COLUMNS + extras]


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value).strip()


def _drop_empty_unnamed(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Drop the blank column a trailing comma creates; refuse one that holds data."""
    for column in [c for c in frame.columns if _UNNAMED.match(c)]:
        values = frame[column].map(_as_text)
        if (values != "").any():
            raise ValueError(
                f"{source}: column {column!r} has no header but holds values; "
                "the rows have more fields than the header"
            )
        frame = frame.drop(columns=column)
    return frame


def _from_paper_format(frame: pd.DataFrame) -> pd.DataFrame:
    renames = {old: new for old, new in _PAPER_RENAMES.items() if new not in frame.columns}
    frame = frame.rename(columns=renames)
    if "top1" not in frame.columns and _PAPER_ACCURACY in frame.columns:
        # The paper stores accuracy as a fraction; we report percent everywhere.
        accuracy = pd.to_numeric(frame[_PAPER_ACCURACY], errors="coerce")
        frame = frame.drop(columns=_PAPER_ACCURACY).assign(top1=accuracy * 100.0)
        frame.attrs["accuracy_column"] = _PAPER_ACCURACY
    return frame


def _check_columns(frame: pd.DataFrame, source: str) -> None:
    required = [c for c in RESULT_COLUMNS if c not in _OPTIONAL_COLUMNS]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: missing required columns {missing}; found {list(frame.columns)}. "
            f"Expected the canonical columns {RESULT_COLUMNS} (arch and mode optional) "
            "or the paper's raw format dset,model,sparsity,seed,val_acc; " + ACCURACY_FORMATS
        )


def _check_ranges(
    frame: pd.DataFrame,
    source: str,
    lines: Sequence[int] | None,
    accuracy_column: str,
    from_file: bool = True,
) -> None:
    paper = accuracy_column == _PAPER_ACCURACY
    checks = (
        (
            "sparsity",
            frame["sparsity"],
            ~frame["sparsity"].between(0.0, 1.0, inclusive="left"),
            "[0, 1)",
        ),
        (
            accuracy_column,
            frame["top1"] / 100.0 if paper else frame["top1"],
            ~frame["top1"].between(0.0, 100.0),
            "[0, 1] (a fraction)" if paper else "[0, 100]",
        ),
    )
    for column, values, bad, allowed in checks:
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            where = f"data row {row + 1}" + (f" (line {lines[row]})" if lines else "")
            hint = f"; {ACCURACY_FORMATS}" if column == accuracy_column else ""
            raise ValueError(
                f"{source}: {where}: {column} {float(values.iloc[row])} is missing or "
                f"outside {allowed}{hint}"
            )
    if from_file and not paper and len(frame) and frame["top1"].max() <= 1.0:
        # Every accuracy at most 1%: a fraction written into the percent column, not results.
        raise ValueError(
            f"{source}: every top1 value is in [0, 1] (max {frame['top1'].max():g}), which "
            f"reads as fractions, not percent; {ACCURACY_FORMATS}. Multiply by 100, or name "
            "the column val_acc"
        )
