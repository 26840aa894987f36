"""The README says what the project is, in the words its commands print."""

from __future__ import annotations

import re
import subprocess

from sweep_helpers import REPO

README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_it_speaks_of_the_project_alone():
    for phrase in (
        "another helper",
        "closing notes",
        "was lent",
        "other jobs",
        "this project's machine",
        "previous settings",
        "the session",
    ):
        assert phrase not in README, phrase


def test_commands_use_no_venv_prefix_beyond_the_activation():
    for line in README.splitlines():
        if ".venv/bin/" in line:
            # printed output quotes the full path; the one instruction activates the venv
            assert line.startswith(("mlflow:", "optuna:")) or "source .venv/bin/activate" in line


def test_the_sample_output_has_the_columns_the_cli_prints():
    sample = _section("Try it").split("```", 3)[3]
    header = next(line for line in sample.splitlines() if "mean delta" in line)
    assert re.split(r"\s{2,}", header.strip())[-2:] == ["95% interval", "within noise"]
    assert "viewStateShareKey=final-" in sample
    assert "optuna-dashboard.jsonl" in sample and "ledger.jsonl" not in sample


def test_the_quickstart_is_described_with_its_own_seeds():
    seeds = re.search(r"^seeds: \[([^\]]*)\]", (REPO / "sweeps/quickstart.yaml").read_text(), re.M)
    count = len(seeds.group(1).split(","))
    assert f"two small digit tasks, {count} seeds" in _section("Report")


def test_the_stability_section_claims_only_what_its_table_shows():
    section = _section("How stable the quickstart is")
    assert "below dense in every run" not in section
    assert "benchmarks/quickstart_stability.py" in section


def test_mlruns_is_where_things_go_and_make_clean_removes_it():
    assert "mlruns/" in README.split("### Where things go", 1)[1].split("###", 1)[0]
    clean = subprocess.run(
        ["make", "-n", "clean"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "mlruns" in clean
