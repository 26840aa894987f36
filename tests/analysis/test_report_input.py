"""Careless and hostile report input: each gets a clear error naming the file, or is drawn
as plain text; and a failing report leaves no half-written one behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sparse_transfer.analysis import load_table, write_report

CLI = [sys.executable, "-m", "sparse_transfer.cli"]


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "report", *args], capture_output=True, text=True)


def test_percent_in_val_acc_states_the_expected_format(tmp_path: Path) -> None:
    path = tmp_path / "percent.csv"
    path.write_text("dset,model,sparsity,seed,val_acc\ncifar10,Dense,0.0,1,97.1\n")
    done = _report("--out", str(tmp_path / "r"), "--from-table", str(path), "--mode", "full")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "percent.csv" in message and "val_acc 97.1" in message
    assert "'val_acc' column as a fraction (0-1)" in message
    assert "'top1' column in percent (0-100)" in message
    assert "9710" not in message


def test_help_states_the_accuracy_formats() -> None:
    done = subprocess.run(
        [*CLI, "report", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    text = " ".join(done.stdout.split())
    assert "top1 in percent (0-100)" in text
    assert "val_acc a fraction (0-1)" in text
    assert "--paper" in text and "--all-sweeps" in text


def test_fractional_top1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fractions.csv"
    path.write_text(
        "arch,mode,method,sparsity,dataset,seed,top1\n"
        "r,full,dense,0.0,cifar10,1,0.97\nr,full,gmp,0.9,cifar10,1,0.75\n"
    )
    with pytest.raises(ValueError, match=r"fractions\.csv: every top1 value is in \[0, 1\]"):
        load_table(path)
    done = _report("--out", str(tmp_path / "r"), "--from-table", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Multiply by 100, or name the column val_acc" in done.stderr
    assert not (tmp_path / "r" / "summary.csv").exists()


def test_non_utf8_csv_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "method,sparsity,dataset,seed,top1\nr\xe9gl,0.9,cifar10,1,90\n".encode("latin-1")
    )
    with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text"):
        load_table(path)
    done = _report("--out", str(tmp_path / "r"), "--from-table", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "latin1.csv: not UTF-8" in done.stderr


def _with_method(name: str) -> pd.DataFrame:
    rows = [
        ("dense", 0.0, "a", "0", 90.0),
        ("dense", 0.0, "b", "0", 80.0),
        (name, 0.9, "a", "0", 88.0),
        (name, 0.9, "b", "0", 79.0),
    ]
    frame = pd.DataFrame(rows, columns=["method", "sparsity", "dataset", "seed", "top1"])
    return frame.assign(arch="r", mode="full")


def test_method_names_are_drawn_as_plain_text(tmp_path: Path) -> None:
    from sparse_transfer.analysis.figures import accuracy_vs_sparsity_figure, plain_text

    name = r"$\undefinedmacro$ <b>"
    paths = write_report(_with_method(name), tmp_path / "r")
    assert paths.figure.stat().st_size > 0
    assert "&lt;b&gt;" in paths.html.read_text() and "<b>" not in paths.html.read_text()
    with plain_text():
        fig = accuracy_vs_sparsity_figure(_with_method(name))
        labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert name in labels


def test_a_failing_report_leaves_no_half_written_one(tmp_path: Path, monkeypatch) -> None:
    from sparse_transfer.analysis import report

    out = tmp_path / "r"
    first = write_report(_with_method("gmp"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("the figure failed")

    monkeypatch.setattr(report, "plot_accuracy_vs_sparsity", broken)
    with pytest.raises(RuntimeError):
        write_report(_with_method("magnitude"), out)
    # the previous report is whole: same files, same bytes, no scratch folder left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert first.summary.is_file()


def test_readme_report_example_runs_from_a_clone(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "../shared" not in readme
    section = readme[readme.index("## Report") :]
    line = next(x for x in section.splitlines() if "report --paper" in x)
    args = line.split("sparse-transfer", 1)[1].split()
    args[args.index("--out") + 1] = str(tmp_path / "paper")
    done = subprocess.run([*CLI, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "paper" / "report.html").is_file()
    assert "top1` in percent (0-100) or the paper's `val_acc` as a fraction (0-1)" in readme
