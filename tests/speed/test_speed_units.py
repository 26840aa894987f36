"""Speed measurement pieces: the output check's tolerances, speedups and their reference, the
Pareto front, the weights rule of the join, and ONNX export of every architecture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sparse_transfer.analysis import write_report
from sparse_transfer.analysis.speed import (
    PUBLISHED,
    SPEED_SUMMARY_COLUMNS,
    pareto_front,
    speedups,
)
from sparse_transfer.models import ARCHS
from sparse_transfer.speed.engine_runner import compare_outputs
from sparse_transfer.speed.export import check_onnx, export_onnx
from sparse_transfer.speed.measure import SPEED_COLUMNS, add_speedups


def test_outputs_match_within_tolerance_and_not_beyond():
    reference = np.array([[10.0, 1.0, 0.0], [0.0, 5.0, 2.0]], dtype=np.float32)
    assert compare_outputs(reference, reference + 0.005)["outputs_match"]  # 1e-3 + 1e-3*10
    far = compare_outputs(reference, reference + 0.05)
    assert not far["outputs_match"] and far["max_abs_logit_diff"] == pytest.approx(0.05, rel=1e-4)
    swapped = reference.copy()
    swapped[1] = [0.0, 2.0, 5.0]
    assert compare_outputs(reference, swapped)["top1_agreement"] == 0.5
    assert not compare_outputs(reference, swapped)["outputs_match"]
    assert not compare_outputs(reference, reference[:1])["outputs_match"]
    nan = reference.copy()
    nan[0, 2] = np.nan
    assert not compare_outputs(reference, nan)["outputs_match"]


def test_a_near_tie_may_flip_without_failing_the_check():
    reference = np.array([[3.0, 3.0 + 1e-6, 0.0]], dtype=np.float32)
    flipped = np.array([[3.0 + 1e-6, 3.0, 0.0]], dtype=np.float32)
    result = compare_outputs(reference, flipped)
    assert result["outputs_match"] and result["top1_agreement"] == 0.0


def _rows(arch="cnn", dense=True):
    rows = []
    for method, sparsity, rate in [("dense", 0.0, 10.0), ("gmp", 0.9, 30.0)]:
        if method == "dense" and not dense:
            continue
        for engine, factor in [("onnxruntime", 1.0), ("deepsparse", 2.0)]:
            rows.append(
                {
                    "upstream": f"{method}_{sparsity}",
                    "arch": arch,
                    "method": method,
                    "sparsity": sparsity,
                    "engine": engine,
                    "batch_size": 64,
                    "images_per_s": rate * factor,
                    "flops_speedup": 1 / (1 - sparsity),
                    "status": "ok",
                    "weights": "trained",
                    "weights_sha256": f"sha-{method}",
                    "source": f"zoo:z/{method}",
                }
            )
    return pd.DataFrame(rows)


def test_speedups_are_against_the_dense_upstream_of_the_same_arch_and_engine():
    table = add_speedups(_rows())
    assert list(table.columns) == SPEED_COLUMNS
    sparse = table[(table["method"] == "gmp") & (table["engine"] == "deepsparse")].iloc[0]
    assert sparse["speedup_vs_dense_same_engine"] == pytest.approx(3.0)
    assert sparse["speedup_vs_onnxruntime_dense"] == pytest.approx(6.0)


def test_without_a_dense_upstream_speedups_are_empty_and_the_note_says_why():
    table = add_speedups(_rows(dense=False))
    assert table["speedup_vs_dense_same_engine"].isna().all()
    assert table["note"].str.contains("no dense upstream of cnn").all()


def test_pareto_front_keeps_only_the_undominated():
    frame = pd.DataFrame(
        {"speedup": [1.0, 2.0, 3.0, 2.5], "mean_delta_pts": [0.0, -0.5, -2.0, -3.0]}
    )
    assert pareto_front(frame).tolist() == [True, True, True, False]


def test_speed_of_random_weights_is_never_joined_with_published_accuracy():
    table = add_speedups(_rows())
    table["weights"] = "random (speed only)"
    with pytest.raises(ValueError, match="never joined") as err:
        speedups(table, PUBLISHED)
    assert "random (speed only)" in str(err.value) and "'dense_0.0'" in str(err.value)


def test_speed_of_other_weights_is_never_joined_with_a_sweeps_accuracy():
    table = add_speedups(_rows())
    same = {("cnn", "dense", 0.0): {"sha-dense"}, ("cnn", "gmp", 0.9): {"sha-gmp"}}
    assert len(speedups(table, same)) == 2
    other = {**same, ("cnn", "gmp", 0.9): {"sha-retrained"}}
    with pytest.raises(ValueError, match="upstream 'gmp_0.9'.*never joined"):
        speedups(table, other)


def test_published_checkpoints_speed_joins_the_papers_table():
    table = add_speedups(_rows())
    table["source"] = "catalog:cnn.x"
    found = speedups(table, PUBLISHED)
    assert set(found["speedup_engine"]) == {"deepsparse"}  # the sparse engine is shown


def test_report_carries_the_speedup_beside_each_row(tmp_path):
    results = pd.DataFrame(
        [
            {
                "arch": "cnn",
                "mode": mode,
                "method": method,
                "sparsity": sparsity,
                "dataset": dataset,
                "seed": seed,
                "top1": top1 + seed,
            }
            for mode in ("full", "linear")
            for method, sparsity, top1 in [("dense", 0.0, 90.0), ("gmp", 0.9, 88.0)]
            for dataset in ("a", "b")
            for seed in (0, 1)
        ]
    )
    speed = speedups(add_speedups(_rows()), {("cnn", "gmp", 0.9): {"sha-gmp"}})
    paths = write_report(results, tmp_path, speed=speed, speed_note="measured here")
    summary = pd.read_csv(paths.summary)
    assert list(summary.columns[-4:]) == SPEED_SUMMARY_COLUMNS
    assert summary.loc[summary["method"] == "gmp", "speedup"].tolist() == [3.0, 3.0]
    page = paths.html.read_text()
    assert "Accuracy vs. speedup" in page and "<svg" in page and "Pareto front" in page
    assert "3.00x" in page
    assert (
        "more accurate): cnn full dense 0% (1.00x); cnn full gmp 90% (3.00x); cnn linear" in page
    )


@pytest.mark.parametrize("arch", ARCHS.names())
def test_every_architecture_exports_and_onnxruntime_agrees_with_torch(arch, tmp_path):
    import onnxruntime as ort

    spec = ARCHS.get(arch)
    torch.manual_seed(0)
    model = spec.build(10).eval()
    path = export_onnx(model, spec.input_shape, tmp_path / f"{arch}.onnx")
    x = torch.randn(3, *spec.input_shape)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        reference = model(x).numpy()
    assert compare_outputs(reference, outputs)["outputs_match"]


def test_a_file_that_is_not_an_onnx_model_is_refused_by_name(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="model.onnx is not a valid ONNX model"):
        check_onnx(path)


def _catalog_speed(folder, weights="trained"):
    rows = []
    for method, sparsity, rate in [("Dense", 0.0, 27.0), ("AC/DC", 0.95, 85.0)]:
        rows.append(
            {
                "upstream": f"resnet50.{method}",
                "arch": "resnet50",
                "method": method,
                "sparsity": sparsity,
                "engine": "deepsparse",
                "batch_size": 64,
                "images_per_s": rate,
                "flops_speedup": 1.0,
                "status": "ok",
                "weights": weights,
                "weights_sha256": f"sha-{method}",
                "source": f"catalog:resnet50.{method}",
            }
        )
    folder.mkdir()
    add_speedups(pd.DataFrame(rows)).to_csv(folder / "speed.csv", index=False)
    return folder


def test_paper_tables_take_speed_measured_on_the_published_checkpoints(tmp_path):
    from typer.testing import CliRunner

    from sparse_transfer.cli import app

    speed = _catalog_speed(tmp_path / "speed")
    args = ["report", "--paper", "resnet50_full", "--speed", str(speed), "--out"]
    done = CliRunner().invoke(app, [*args, str(tmp_path / "report")])
    assert done.exit_code == 0, done.output
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    acdc = summary[(summary["method"] == "AC/DC") & (summary["sparsity"] == 0.95)]
    assert acdc["speedup"].iloc[0] == pytest.approx(85 / 27)
    assert summary.loc[summary["method"] == "STR", "speedup"].isna().all()  # not measured

    demo = _catalog_speed(tmp_path / "demo", weights="random (speed only)")
    done = CliRunner().invoke(
        app, ["report", "--paper", "resnet50_full", "--speed", str(demo), "--out", str(tmp_path)]
    )
    assert done.exit_code == 2 and "never joined" in done.output
    assert "random (speed only)" in done.output
