from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sparse_transfer.analysis import RESULT_COLUMNS, is_dense, load_table, to_canonical

CANONICAL_CSV = """arch,mode,method,sparsity,dataset,seed,top1,run_id
resnet50,full,dense,0.0,cifar10,21,97.5,r1
resnet50,full,gmp,0.9,cifar10,21,96.25,r2
"""

PAPER_CSV = """dset,model,sparsity,seed,val_acc,
aircraft,Dense,0.0,seed_21,0.8362,
aircraft, AC/DC ,0.8,seed_21,0.8326
aircraft,RigL ERK 1x,0.95,seed_23,0.5,
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_canonical_csv_keeps_text_and_extras(tmp_path: Path) -> None:
    table = load_table(_write(tmp_path, "r.csv", CANONICAL_CSV))
    assert list(table.columns) == [*RESULT_COLUMNS, "run_id"]
    assert table["seed"].tolist() == ["21", "21"]
    assert table["top1"].tolist() == [97.5, 96.25]
    assert table["sparsity"].dtype == float
    assert table["run_id"].tolist() == ["r1", "r2"]


def test_parquet_round_trip(tmp_path: Path) -> None:
    table = load_table(_write(tmp_path, "r.csv", CANONICAL_CSV))
    table.to_parquet(tmp_path / "r.parquet", index=False)
    pd.testing.assert_frame_equal(load_table(tmp_path / "r.parquet"), table)


def test_paper_format_with_trailing_commas(tmp_path: Path) -> None:
    table = load_table(_write(tmp_path, "paper.csv", PAPER_CSV), mode="full")
    assert list(table.columns) == RESULT_COLUMNS
    assert table["method"].tolist() == ["Dense", "AC/DC", "RigL ERK 1x"]
    assert table["dataset"].tolist() == ["aircraft"] * 3
    assert table["seed"].tolist() == ["seed_21", "seed_21", "seed_23"]
    assert table["top1"].tolist() == pytest.approx([83.62, 83.26, 50.0])
    assert table["sparsity"].tolist() == [0.0, 0.8, 0.95]
    assert set(table["mode"]) == {"full"}
    assert set(table["arch"]) == {""}


def test_mode_column_wins_over_argument_and_defaults_to_empty(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", CANONICAL_CSV)
    assert set(load_table(path, mode="linear")["mode"]) == {"full"}
    paper = _write(tmp_path, "paper.csv", PAPER_CSV)
    assert set(load_table(paper)["mode"]) == {""}
    assert set(load_table(paper, arch="resnet50")["arch"]) == {"resnet50"}


def test_extra_non_empty_field_is_an_error_not_a_shift(tmp_path: Path) -> None:
    text = "dset,model,sparsity,seed,val_acc\naircraft,Dense,0.0,seed_21,0.8,oops\n"
    with pytest.raises(ValueError, match=r"bad\.csv: line 2 has 6 fields"):
        load_table(_write(tmp_path, "bad.csv", text))


def test_missing_file_and_unknown_suffix_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found: .*nope.csv"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"r\.json: unsupported results format '\.json'"):
        load_table(_write(tmp_path, "r.json", "{}"))


def test_missing_columns_lists_missing_and_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "few.csv", "method,dataset,top1\ndense,cifar10,90\n")
    with pytest.raises(ValueError) as error:
        load_table(path)
    message = str(error.value)
    assert "few.csv" in message
    assert "missing required columns ['sparsity', 'seed']" in message
    assert "found ['method', 'dataset', 'top1']" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("gmp,1.0,cifar10,1,90", r"data row 2 \(line 3\): sparsity 1\.0 is missing or outside"),
        ("gmp,-0.1,cifar10,1,90", r"data row 2 \(line 3\): sparsity -0\.1"),
        ("gmp,0.5,cifar10,1,100.5", r"data row 2 \(line 3\): top1 100\.5 .*outside \[0, 100\]"),
        ("gmp,0.5,cifar10,1,", r"data row 2 \(line 3\): top1 nan is missing"),
    ],
)
def test_out_of_range_values_name_file_and_row(tmp_path: Path, row: str, expected: str) -> None:
    text = f"method,sparsity,dataset,seed,top1\ndense,0.0,cifar10,1,91\n{row}\n"
    with pytest.raises(ValueError, match=r"range\.csv: " + expected):
        load_table(_write(tmp_path, "range.csv", text))


def test_paper_fraction_above_one_is_rejected(tmp_path: Path) -> None:
    text = "dset,model,sparsity,seed,val_acc\naircraft,Dense,0.0,seed_21,83.6\n"
    with pytest.raises(ValueError, match="top1"):
        load_table(_write(tmp_path, "pct.csv", text))


def test_to_canonical_names_the_source() -> None:
    frame = pd.DataFrame({"method": ["dense"], "sparsity": [1.5], "dataset": ["x"]})
    frame = frame.assign(seed=[1], top1=[50.0])
    with pytest.raises(ValueError, match="my sweep: data row 1: sparsity"):
        to_canonical(frame, source="my sweep")


@pytest.mark.parametrize(("method", "dense"), [("dense", True), ("Dense", True), ("GMP", False)])
def test_is_dense(method: str, dense: bool) -> None:
    assert is_dense(method) is dense
