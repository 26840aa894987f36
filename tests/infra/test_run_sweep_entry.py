"""infra/run_sweep.py, the script `ray submit` and `ray job submit` run on a cluster's head."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "run_sweep.py"


@pytest.fixture(scope="module")
def entry():
    spec = importlib.util.spec_from_file_location("infra_run_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_runs_with_the_venv_python():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "--set" in out.stdout and "--resume" in out.stdout


def test_spec_and_overrides_are_parsed(entry):
    args = entry.parse_args(
        ["sweeps/quickstart.yaml", "--set", "a=b", "--set", "search.trials_per_cell=8"]
    )
    assert args.spec == "sweeps/quickstart.yaml"
    assert args.overrides == ["a=b", "search.trials_per_cell=8"]
    assert args.resume is None


def test_resume_is_parsed(entry):
    args = entry.parse_args(["--resume", "s3://bucket/runs/sweeps/quickstart-1"])
    assert (args.spec, args.resume) == (None, "s3://bucket/runs/sweeps/quickstart-1")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["sweeps/quickstart.yaml", "--resume", "x"],
        ["--resume", "x", "--set", "a=b"],
        ["--resume", "x", "--dry-run"],
    ],
    ids=["nothing", "spec-and-resume", "set-on-resume", "dry-run-on-resume"],
)
def test_ambiguous_command_lines_are_refused(entry, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cluster_storage_comes_first_so_an_explicit_set_wins(entry):
    env = {"SPARSE_TRANSFER_STORAGE": "/mnt/shared/runs"}
    assert entry.spec_overrides(["a=b"], env) == ["storage=/mnt/shared/runs", "a=b"]
    assert entry.spec_overrides(["a=b"], {}) == ["a=b"]


def test_a_relative_spec_is_found_in_the_mounted_repository(entry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # like `ray submit`: the script runs from ~, not the repo
    env = {"SPARSE_TRANSFER_REPO": str(REPO)}
    assert entry.resolve_spec("sweeps/quickstart.yaml", env) == REPO / "sweeps/quickstart.yaml"
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "quickstart.yaml").write_text("local copy")
    assert entry.resolve_spec("sweeps/quickstart.yaml", env) == Path("sweeps/quickstart.yaml")
    assert entry.resolve_spec("sweeps/missing.yaml", env) == Path("sweeps/missing.yaml")


def test_main_runs_the_sweep_on_the_cluster_it_runs_on(entry, monkeypatch, capsys):
    import sparse_transfer.sweep

    calls = []

    class State:
        sweep_dir, tracking_uri, experiment = "/runs/sweeps/q-1", "http://127.0.0.1:5000", "q"
        failed_cells: dict = {}

    def fake_run_sweep(spec, *, address=None, log=print):
        calls.append((spec, address))
        return State()

    monkeypatch.setattr(sparse_transfer.sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setenv("SPARSE_TRANSFER_STORAGE", "/mnt/shared/runs")
    monkeypatch.chdir(REPO)
    argv = ["sweeps/quickstart.yaml", "--set", "search.trials_per_cell=8"]
    assert entry.main(argv) == 0
    ((spec, address),) = calls
    assert address == "auto"
    assert spec.storage == "/mnt/shared/runs"
    assert spec.search.trials_per_cell == 8
    assert "/runs/sweeps/q-1" in capsys.readouterr().out


def test_main_dry_runs_the_paper_spec(entry, monkeypatch):
    import sparse_transfer.sweep

    calls = []

    class Stop(Exception):
        pass

    def record(spec, **kwargs):
        calls.append(spec)
        raise Stop  # no cluster here: stop at the call

    monkeypatch.setattr(sparse_transfer.sweep, "run_sweep", record)
    monkeypatch.chdir(REPO)
    with pytest.raises(Stop):
        entry.main(["sweeps/paper_resnet50_full.yaml", "--dry-run"])
    (spec,) = calls
    assert spec.dry_run and spec.name == "paper_resnet50_full-dryrun"


def test_main_reports_a_bad_spec_without_starting_anything(entry, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert entry.main([str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
