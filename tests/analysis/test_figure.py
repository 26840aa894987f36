"""The figure says what it shows: its title, ticks, bars and limits, read off the axes."""

from __future__ import annotations

import pandas as pd

from sparse_transfer.analysis import summarize
from sparse_transfer.analysis.figures import BARS_LABEL, accuracy_vs_sparsity_figure, plain_text


def _digits() -> pd.DataFrame:
    rows = []
    for dataset, base in (("digits_5to9", 95.0), ("digits_5to9_parity", 97.0)):
        for seed, jitter in (("0", 0.0), ("1", 0.6)):
            rows.append(("dense", 0.0, dataset, seed, base + jitter))
            for method, loss in (("gmp", 1.0), ("magnitude", 2.0)):
                for sparsity in (0.7, 0.9):
                    rows.append((method, sparsity, dataset, seed, base - loss * sparsity + jitter))
    frame = pd.DataFrame(rows, columns=["method", "sparsity", "dataset", "seed", "top1"])
    return frame.assign(arch="quickstart_cnn", mode="full")


def _figure(results: pd.DataFrame):
    with plain_text():
        return accuracy_vs_sparsity_figure(results)


def test_title_comes_from_the_data() -> None:
    title = _figure(_digits())._suptitle.get_text()
    assert "ImageNet" not in title
    assert "quickstart_cnn" in title and "digits_5to9" in title


def test_ticks_fall_at_the_measured_sparsities() -> None:
    absolute, delta = _figure(_digits()).axes[:2]
    for ax in (absolute, delta):
        assert list(ax.get_xticks()) == [70.0, 90.0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["70", "90"]


def test_bars_of_one_sparsity_are_offset_and_labelled() -> None:
    delta = _figure(_digits()).axes[1]
    assert BARS_LABEL in delta.get_title()
    assert "95% bootstrap interval over datasets and seeds" in delta.get_title()
    bars = {c.get_label(): c for c in delta.containers}
    assert set(bars) == {"gmp", "magnitude"}
    xs = {name: list(c.lines[0].get_xdata()) for name, c in bars.items()}
    for a, b in zip(xs["gmp"], xs["magnitude"], strict=True):
        assert a != b and abs(a - b) < 5  # apart, but still at the same sparsity
    # each bar spans the summary's 95% interval
    summary = summarize(_digits())
    for name, container in bars.items():
        rows = summary[summary["method"] == name].sort_values("sparsity")
        segments = container.lines[2][0].get_segments()
        assert [round(s[:, 1].min(), 9) for s in segments] == [
            round(v, 9) for v in rows["ci_low_pts"]
        ]
        assert [round(s[:, 1].max(), 9) for s in segments] == [
            round(v, 9) for v in rows["ci_high_pts"]
        ]


def test_the_dense_line_sits_inside_the_axes() -> None:
    absolute = _figure(_digits()).axes[0]
    dense = next(line for line in absolute.get_lines() if line.get_label() == "dense")
    bottom, top = absolute.get_ylim()
    level = dense.get_ydata()[0]
    assert bottom < level < top
    assert top - level >= 0.05 * (top - bottom)


def _noisy() -> pd.DataFrame:
    """gmp's deltas are inside the noise at every sparsity, magnitude's are clear losses."""
    rows = []
    for dataset, base in (("a", 90.0), ("b", 80.0), ("c", 70.0)):
        for seed, jitter in (("0", -1.5), ("1", 0.0), ("2", 1.5)):
            rows.append(("dense", 0.0, dataset, seed, base + jitter))
            for sparsity in (0.7, 0.9):
                rows.append(("gmp", sparsity, dataset, seed, base - jitter + 0.1))
                rows.append(("magnitude", sparsity, dataset, seed, base + jitter - 8 * sparsity))
    frame = pd.DataFrame(rows, columns=["method", "sparsity", "dataset", "seed", "top1"])
    return frame.assign(arch="resnet50", mode="full")


def _crowded() -> pd.DataFrame:
    """Five methods whose bars fill every corner of the delta panel."""
    rows = []
    for dataset, base in (("a", 90.0), ("b", 80.0)):
        for seed, jitter in (("0", -0.5), ("1", 0.5)):
            rows.append(("dense", 0.0, dataset, seed, base + jitter))
            for index, method in enumerate(["acdc", "gmp", "lth", "rigl", "str"]):
                for step, sparsity in enumerate((0.5, 0.7, 0.8, 0.9, 0.95)):
                    delta = 4.0 * ((index + step) % 5 - 2)
                    rows.append((method, sparsity, dataset, seed, base + delta + 2 * jitter))
    frame = pd.DataFrame(rows, columns=["method", "sparsity", "dataset", "seed", "top1"])
    return frame.assign(arch="resnet50", mode="full")


def test_the_legend_covers_no_error_bar_cap() -> None:
    for results in (_digits(), _noisy(), _crowded()):
        fig = _figure(results)
        fig.canvas.draw()
        delta = fig.axes[1]
        legend = delta.get_legend().get_window_extent()
        caps = [line for c in delta.containers for line in c.lines[1]]
        assert caps
        for cap in caps:
            points = delta.transData.transform(list(zip(*cap.get_data(), strict=True)))
            for x, y in points:
                assert not (legend.x0 <= x <= legend.x1 and legend.y0 <= y <= legend.y1)


def test_legend_markers_are_hollow_where_every_point_is() -> None:
    results = _noisy()
    summary = summarize(results).set_index("method")
    assert summary.loc["gmp", "within_noise"].all()
    assert not summary.loc["magnitude", "within_noise"].any()
    fig = _figure(results)
    handles = {h.get_label(): h for h in fig.axes[1].get_legend().legend_handles}
    assert handles["gmp"].get_markerfacecolor() == "white"
    assert handles["magnitude"].get_markerfacecolor() != "white"
