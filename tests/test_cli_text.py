"""What a user reads from the CLI without running a sweep: help, list headers, the summary."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from sparse_transfer.config.zoo_spec import load_zoo_spec

CLI = [sys.executable, "-m", "sparse_transfer.cli"]
COMMANDS = [
    [],
    ["validate"],
    ["sweep"],
    ["quickstart"],
    ["resume"],
    ["report"],
    ["zoo", "build"],
    ["zoo", "list"],
    ["checkpoint", "list"],
    ["checkpoint", "inspect"],
]


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _help(command: list[str]) -> str:
    return _cli(*command, "--help").stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_flags_are_not_shown_as_taking_values(command):
    text = _help(command)
    assert "<bool>" not in text
    assert re.search(r"--help\s+Show this message", text), text


@pytest.mark.parametrize("command", [["validate"], ["sweep"], ["quickstart"], ["zoo", "build"]])
def test_set_is_described_as_repeatable(command):
    text = " ".join(_help(command).split())
    assert "--set KEY=VALUE" in text
    assert "repeatable" in text


def test_zoo_build_help_example_is_accepted_by_the_zoo_spec(tmp_path):
    text = " ".join(_help(["zoo", "build"]).split())
    examples = re.findall(r"--set (\S+=\S+)", text.split("e.g.", 1)[1])
    assert examples, text
    zoo = load_zoo_spec("sweeps/zoo_demo.yaml", examples)  # raises SpecError if rejected
    assert zoo.name == "demo"


def test_validate_applies_set(tmp_path):
    assert "validate" in _help(["validate"])
    ok = _cli("validate", "sweeps/quickstart.yaml", "--set", "search.trials_per_cell=3")
    assert "60 search trials" in ok.stdout  # 20 cells x 3
    bad = _cli(
        "validate", "sweeps/quickstart.yaml", "--set", "search.trials_per_cell=0", check=False
    )
    assert bad.returncode == 1
    assert "search.trials_per_cell" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sweep_commands_have_verbose():
    for command in (["sweep"], ["quickstart"], ["resume"], ["zoo", "build"]):
        assert "--verbose" in _help(command)


def test_checkpoint_list_shows_where_each_entry_is_published_and_its_file_name():
    from sparse_transfer.models.catalog import CATALOG

    lines = _cli("checkpoint", "list").stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "name",
        "method",
        "sparsity",
        "format",
        "file (or source)",
        "published at",
    ]
    assert set(lines[1]) <= {"-", " "}
    rows = {line.split()[0]: line for line in lines[2:] if line and not line.startswith("An ")}
    published = [e for e in map(CATALOG.get, CATALOG.names()) if e.published_at]
    assert len(published) >= 30
    for entry in published:
        row = rows[entry.name]
        assert entry.published_at in row
        assert (entry.source or f"<checkpoint_root>/{entry.name}.pth") in row
        assert "fill in" not in row
    assert "resnet50.acdc_95" in rows and " 95% " in rows["resnet50.acdc_95"]
    hint = " ".join(lines[-3:])
    assert "published at" in hint and "checkpoint_root" in hint and "checkpoint:" in hint


def test_zoo_list_has_a_header(zoo_dir, tmp_path):
    shutil.copytree(zoo_dir, tmp_path / "zoo")
    lines = _cli("zoo", "list", "--storage", str(tmp_path)).stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "method", "target", "measured"]
    assert set(lines[1]) <= {"-", " "}
    (gmp,) = [line for line in lines[2:] if line.startswith("quickstart/gmp_90")]
    assert re.search(r"\sgmp\s+90%\s+\d+\.\d\d%\s", gmp), gmp  # as the report writes them


def _summary(**extra) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "mode": ["full", "full"],
            "method": ["dense", "gmp"],
            "sparsity": [0.0, 0.9],
            "n_datasets": [2, 2],
            "mean_delta_pts": [0.0, -0.41],
            "std_delta_pts": [0.0, 0.3],
            **extra,
        }
    )


def test_summary_shows_which_deltas_are_within_noise():
    from sparse_transfer.console import summary_table

    text = summary_table(
        _summary(
            ci_low_pts=[float("nan"), -1.2],
            ci_high_pts=[float("nan"), 0.35],
            within_noise=[None, True],
        )
    )
    header, _, dense, gmp = text.splitlines()
    assert "within noise" in header and "95% interval" in header
    assert gmp.split()[-1] == "yes" and "[-1.20, +0.35]" in gmp
    assert dense.rstrip().endswith(" -")  # no interval and an empty "within noise"


def test_summary_without_interval_columns_still_prints():
    from sparse_transfer.console import summary_table

    text = summary_table(_summary())
    assert "within noise" not in text
    assert "-0.41" in text.splitlines()[-1]


GROUPS = [[], ["zoo"], ["checkpoint"]]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: " ".join(g) or "top")
def test_help_lists_each_command_with_a_whole_sentence(group):
    text = _help(group)
    listing = text.split("Commands:", 1)[1].strip().splitlines()
    assert listing
    for line in listing:
        assert not line.rstrip().endswith("..."), line
        assert line.rstrip()[-1] in ".?", line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_placeholders_are_upper_case_words_without_python_types(command):
    text = _help(command)
    assert "<list[" not in text
    assert not re.search(r"^  (--[\w-]+|[\w.]+) <\w", text, flags=re.MULTILINE), text
    usage = text.splitlines()[0]
    for placeholder in re.findall(r"\{([^}]*)\}", usage):
        assert placeholder == placeholder.upper(), usage
    for option, value in re.findall(r"^\s+(--[\w-]+) ([^\s]+)  ", text, flags=re.MULTILINE):
        assert value == value.upper() and "[" not in value, (option, value)


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "/nonexistent.yaml"],
        ["validate", "sweeps/quickstart.yaml", "--set", "search.trial_per_cell=3"],
        ["sweep", "sweeps/quickstart.yaml", "--set", "search.trial_per_cell=3"],
        ["report", "--out", "/tmp/unused-report"],
        ["checkpoint", "inspect", "/nonexistent.pt"],
        ["resume", "/nonexistent"],
        ["zoo", "build", "/nonexistent/zoo_x.yaml"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_error_starts_the_same_way(args):
    done = _cli(*args, check=False)
    assert done.returncode != 0
    assert done.stderr.startswith("error: "), done.stderr


def test_the_reports_mlflow_command_is_the_one_a_sweep_prints(tmp_path):
    from sparse_transfer.console import sweep_hints
    from sparse_transfer.tracking.runs_table import ui_hint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    printed = sweep_hints(uri, None, None)[0].removeprefix("mlflow:").strip()
    assert ui_hint(uri).endswith(f"start it with {printed}")
