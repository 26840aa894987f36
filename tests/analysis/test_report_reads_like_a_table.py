"""The report read as a person reads it, in a real browser: the top says what the numbers are
and what they show, the headers are words, each upstream's own accuracy and each cell's chosen
hyperparameters are there, and a dense row's "within noise" is empty on every surface."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pandas as pd
import yaml
from browser_helpers import page_text, screenshot

from sparse_transfer.analysis import write_report
from sparse_transfer.analysis.provenance import CellProvenance, FinalRun, SweepProvenance
from sparse_transfer.console import summary_table

LR = 0.031622776601683794
UPSTREAM_TOP1 = {"dense": 97.5, "gmp_90": 96.25, "magnitude_90": 91.0}


def _results() -> pd.DataFrame:
    rows = []
    for mode, shift in (("full", 0.0), ("linear", -3.0)):
        for dataset, base in (("digits_5to9", 95.0), ("digits_5to9_parity", 97.0)):
            for seed, jitter in (("0", -0.6), ("1", 0.0), ("2", 0.6)):
                top = base + shift + jitter
                rows += [
                    (mode, "dense", 0.0, dataset, seed, top),
                    (mode, "gmp", 0.9, dataset, seed, top + 0.25 - 1.5 * jitter),
                    (mode, "magnitude", 0.9, dataset, seed, top - 4.0),
                ]
    columns = ["mode", "method", "sparsity", "dataset", "seed", "top1"]
    return pd.DataFrame(rows, columns=columns).assign(arch="quickstart_cnn")


def _provenance(tmp_path: Path) -> SweepProvenance:
    zoo = tmp_path / "zoo" / "quickstart"
    zoo.mkdir(parents=True)
    for entry, top1 in UPSTREAM_TOP1.items():
        record = {"name": f"quickstart/{entry}", "upstream_val_top1": top1}
        (zoo / f"{entry}.json").write_text(json.dumps(record))
    spec = yaml.safe_load((files("sparse_transfer.config") / "quickstart.yaml").read_text())
    spec["upstream"] = [u for u in spec["upstream"] if u["name"] in UPSTREAM_TOP1]
    spec["zoo_dir"] = str(tmp_path / "zoo")
    cells = [
        CellProvenance(
            cell=f"{upstream}/{dataset}/{mode}",
            hparams={"lr": repr(LR), "weight_decay": "0.0001", "batch_size": "32", "epochs": "6"},
            search_trials=8,
            stopped_early=3,
            gpu_hours=None,
            cpu_hours=0.001,
            finals=[FinalRun(str(s), f"run{s}", "") for s in range(3)],
            best_search={"val_top1": 93.333333},
        )
        for upstream in UPSTREAM_TOP1
        for dataset in ("digits_5to9", "digits_5to9_parity")
        for mode in ("full", "linear")
    ]
    return SweepProvenance("quickstart-1", "abc", yaml.safe_dump(spec), "", "", cells)


def test_the_report_reads_like_a_papers_table(tmp_path):
    paths = write_report(_results(), tmp_path / "report", provenance=_provenance(tmp_path))
    text = page_text(paths.html.as_uri())
    png = screenshot(paths.html.as_uri(), tmp_path / "report.png", size="1280,1600")
    assert len(png) > 20_000
    print(f"screenshot: {tmp_path / 'report.png'}")
    top = text.split("Summary:")[0]
    # what the numbers are, at the top
    assert "top-1 on each dataset's test split" in top
    assert "mean over 3 seeds (0, 1, 2)" in top
    assert "over 2 datasets (digits_5to9, digits_5to9_parity)" in top
    assert "About this study: A smoke-scale study of the whole pipeline" in top
    for mode in ("Full", "Linear"):
        assert re.search(
            rf"{mode} finetuning of quickstart_cnn: the strongest sparse result is gmp at 90% "
            r"sparsity, \+0\.25 points against dense \(95% interval \[[-+]\d+\.\d\d, "
            r"[-+]\d+\.\d\d\]: within noise, so not a finding\)",
            top,
        ), top
    # headers are words
    for header in ("mean Δ vs dense (pts)", "95% interval (pts)", "within noise", "datasets"):
        assert header in text
    for name in ("mean_delta_pts", "ci_low_pts", "ci_high_pts", "n_datasets", "delta_pts"):
        assert name not in text
    # each upstream's own accuracy
    assert "upstream top-1 (%)" in text
    for top1 in UPSTREAM_TOP1.values():
        assert f" {top1:.1f} " in text
    # the chosen hyperparameters: 3 significant digits, searched apart from fixed, the score
    assert "searched (chosen) fixed winning validation score" in text
    assert "lr=0.0316 batch_size=32; epochs=6; weight_decay=0.0001 val_top1 93.33" in text
    assert repr(LR) not in text


def test_a_dense_rows_within_noise_is_empty_in_html_console_and_csv(tmp_path):
    paths = write_report(_results(), tmp_path / "report")
    csv = pd.read_csv(paths.summary, keep_default_na=False, dtype=str)
    dense = csv[csv["method"] == "dense"]
    assert list(dense["within_noise"]) == ["", ""]
    assert set(csv.loc[csv["method"] != "dense", "within_noise"]) <= {"True", "False"}
    summary = pd.read_csv(paths.summary, keep_default_na=False, na_values=[""])
    console = [line for line in summary_table(summary).splitlines() if " dense " in line]
    assert console and all(line.rstrip().endswith(" -") for line in console)  # interval "-"
    html = paths.html.read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("<h2>Summary")[1].split("</table>")[0])
    dense_cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows if ">dense<" in r]
    assert dense_cells and all(cells[-1] == "" for cells in dense_cells)
    sparse_cells = [
        re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows if ">dense<" not in r and "<td" in r
    ]
    assert {cells[-1] for cells in sparse_cells} <= {"yes", "no"}
