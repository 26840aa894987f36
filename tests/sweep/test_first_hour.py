"""A researcher's first hour on a tiny sweep: a console that holds only the project's lines,
Ctrl-C that names only our resume command, printed hints that run as printed, and a report
that a real browser renders with its table and the chosen hyperparameters."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM_FLAGS, page_text
from sweep_helpers import CLI, child_runs, small_spec

from sparse_transfer.config import dump_spec

# The fixture runs two sweeps: on a busy 2-core machine they take longer than the default 600 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# A log line of Ray, MLflow or Alembic: "2026-... WARNING file.py:85 -- ...",
# "2026/... INFO mlflow.store.db.utils: ...", "INFO  [alembic.runtime.migration] ...".
NOISE = re.compile(
    r"^(\S+ \S+\s+)?(WARNING|INFO)\b.*(\.py:\d+ --|mlflow|alembic|ray)", re.MULTILINE
)


@pytest.fixture(scope="module")
def tiny_sweep(zoo_dir, tmp_path_factory):
    """A 4-cell sweep, Ctrl-C'd after its first search trial and resumed with --verbose:
    (quiet console of the interrupted run, verbose console of the resume, sweep dir)."""
    root = tmp_path_factory.mktemp("first_hour")
    spec = small_spec(root, zoo_dir, search={"trials_per_cell": 2, "max_concurrent_trials": 2})
    spec_file = root / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_AUTH_MODE", None)  # unset: every local Ray start warns about its tokens
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    quiet_log = root / "sweep.log"
    with open(quiet_log, "w") as log:
        process = subprocess.Popen(
            [*CLI, "sweep", str(spec_file)], stdout=log, stderr=log, env=env, cwd=root
        )
    deadline = time.monotonic() + 300
    while "[search 1/" not in quiet_log.read_text():
        assert process.poll() is None, quiet_log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.5)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=180) == 130, quiet_log.read_text()[-3000:]
    (sweep_dir,) = (root / "runs" / "sweeps").iterdir()
    resumed = subprocess.run(
        [*CLI, "resume", str(sweep_dir), "--verbose"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return quiet_log.read_text(), resumed.stdout + resumed.stderr, sweep_dir, spec


def test_console_holds_only_the_projects_lines(tiny_sweep):
    quiet, verbose, _, _ = tiny_sweep
    assert "[search 1/" in quiet
    assert not NOISE.findall(quiet), quiet
    # --verbose lets the same loggers through (Ray's token notice at least)
    assert NOISE.search(verbose), verbose


def test_ctrl_c_names_only_our_resume_command(tiny_sweep):
    quiet, _, sweep_dir, _ = tiny_sweep
    assert "sparse-transfer resume" in quiet
    assert "Tuner.restore" not in quiet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hint(console: str, label: str) -> tuple[list[str], str]:
    """The command after `label:` and the URL on the `then open` line after it."""
    lines = console.splitlines()
    # the last such line: a sweep also names its store when it starts ("mlflow: sqlite:...")
    index = [i for i, line in enumerate(lines) if line.startswith(f"{label}:")][-1]
    command = shlex.split(lines[index].removeprefix(f"{label}:"))
    url = lines[index + 1].split("then open", 1)[1].strip()
    return command, url


def _get(url: str, timeout: float = 300) -> bytes:  # a busy machine starts mlflow slowly
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _serve(command: list[str], old_port: str, cwd: Path):
    """Start a printed command on a free port (tests run side by side); same command else."""
    port = str(_free_port())
    command = [port if part == old_port else part for part in command]
    assert port in command, command
    server = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return server, port


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_printed_mlflow_command_serves_the_runs_page(tiny_sweep, tmp_path):
    _, console, sweep_dir, spec = tiny_sweep
    command, url = _hint(console, "mlflow")
    assert Path(command[0]).is_file() or command[:2] == [sys.executable, "-m"]
    assert re.fullmatch(
        r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?viewStateShareKey=final-.+", url
    )
    server, port = _serve(command, "5000", tmp_path)  # another directory: no cwd-relative path
    try:
        base = f"http://127.0.0.1:{port}"
        assert b"<html" in _get(f"{base}/").lower()
        found = json.loads(
            _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=small")
        )["experiment"]
        assert f"/#/experiments/{found['experiment_id']}/runs" in url
        tags = {t["key"]: t["value"] for t in found.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on runs
        assert "tags.phase = 'final'" in tags["mlflow.note.content"]
        view = json.loads(tags[f"mlflow.sharedViewState.final-{state_id(sweep_dir)}"])
        assert view["searchFilter"] == (
            f"tags.phase = 'final' and tags.sweep_id = '{state_id(sweep_dir)}'"
        )
        # what the page shows, in a browser: a final run's test_top1
        finals = [
            r
            for r in child_runs(state_uri(sweep_dir), "small", state_id(sweep_dir))
            if r.data.tags.get("phase") == "final"
        ]
        text = page_text(url.replace(":5000/", f":{port}/"), wait_ms=30_000, width=2200)
        top1 = finals[0].data.metrics["test_top1"]
        # the runs table shows a metric as logged, or rounded to 3 decimals (MLflow 3.17
        # shows 75.46468377113342 as is; a short value such as 79.625 reads the same either way)
        assert str(top1) in text or f" {round(top1, 3):g} " in text, text[-2000:]
    finally:
        _stop(server)


def test_printed_optuna_dashboard_command_serves_the_sweeps_studies(tiny_sweep, tmp_path):
    _, console, sweep_dir, _ = tiny_sweep
    command, url = _hint(console, "optuna")
    # a snapshot of the sweep's search studies: never its ledger
    assert str((sweep_dir / "optuna-dashboard.jsonl").resolve()) in command
    assert not any("ledger" in part for part in command)
    assert url == "http://127.0.0.1:8080"
    server, port = _serve(command, "8080", tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        assert b"<html" in _get(f"{base}/dashboard").lower()
        studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        assert len(studies) == 4  # a search study per cell, no final-run studies
        assert all(not s["study_name"].endswith("/final") for s in studies)
    finally:
        _stop(server)


# --- the report in a real browser ------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def _browse(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=180,
        )


def state_id(sweep_dir: Path) -> str:
    return json.loads((sweep_dir / "state.json").read_text())["sweep_id"]


def state_uri(sweep_dir: Path) -> str:
    return json.loads((sweep_dir / "state.json").read_text())["tracking_uri"]


def _lr_texts(value: float) -> set[str]:
    return {f"{value:{fmt}}" for fmt in (".3g", ".4g", ".3e", ".4f")} | {repr(value)}


def test_report_renders_in_a_browser_with_table_and_hyperparameters(tiny_sweep, tmp_path):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must check the report in Chromium; .ci/run installs it")
        pytest.skip("no Chromium here (apt-get install chromium)")
    _, _, sweep_dir, spec = tiny_sweep
    page = sweep_dir / "report" / "report.html"
    shot = tmp_path / "report.png"
    done = _browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), done.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 20_000, "a blank page compresses to a few KB"

    dom = _browse(chromium, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    text = " ".join(text.split())
    for column in ("method", "sparsity", "gmp", "dense"):
        assert column in text
    assert re.search(r"[+-]\d+\.\d\d", text), "the summary's deltas"
    # each cell's chosen hyperparameters, as the final runs used them
    state = json.loads((sweep_dir / "state.json").read_text())
    finals = [
        r
        for r in child_runs(state["tracking_uri"], "small", state["sweep_id"])
        if r.data.tags.get("phase") == "final"
    ]
    assert finals
    assert re.search(r"\blr\b", text), "the hyperparameters' names"
    for run in finals:
        lr = float(run.data.params["lr"])
        assert _lr_texts(lr) & set(re.findall(r"[\d.e+-]+", text)), (lr, text[:3000])


def test_report_shows_accuracy_vs_speedup_in_a_browser(tiny_sweep, tmp_path):
    """The quickstart CNN's measured speed beside its accuracy: `speed` on the sweep's spec,
    then `report --speed`, read back as the browser renders it (the figure is inline SVG,
    so its axis labels and legend are text on the page)."""
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must check the report in Chromium; .ci/run installs it")
        pytest.skip("no Chromium here (apt-get install chromium)")
    _, _, sweep_dir, _ = tiny_sweep
    root = sweep_dir.parents[2]
    state = json.loads((sweep_dir / "state.json").read_text())
    speed = tmp_path / "speed"
    measured = subprocess.run(
        [
            *CLI,
            "speed",
            str(root / "spec.yaml"),
            "--out",
            str(speed),
            "--engines",
            "torch,onnxruntime",
            "--batch-size",
            "16",
            "--repeats",
            "3",
            "--no-latency",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=600,
    )
    assert measured.returncode == 0, measured.stdout[-2000:] + measured.stderr[-2000:]
    report = tmp_path / "report"
    done = subprocess.run(
        [
            *CLI,
            "report",
            "--experiment",
            "small",
            "--tracking-uri",
            state["tracking_uri"],
            "--sweep-id",
            state["sweep_id"],
            "--speed",
            str(speed),
            "--out",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    dom = _browse(chromium, report / "report.html", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = " ".join(re.sub(r"<[^>]+>", " ", dom.stdout).split())
    assert "Accuracy vs. speedup" in text
    for label in (
        "full: accuracy vs. measured speedup",
        "linear: accuracy vs. measured speedup",
        "measured speedup vs dense",
        "quickstart_cnn Pareto front",
        "gmp 90%",
    ):
        assert label in text, label
    assert re.search(
        r"Pareto front \(no other model is both faster and more accurate\): "
        r"quickstart_cnn full",
        text,
    ), text[-3000:]
    speedups = re.findall(r"\b(\d+\.\d\d)x\b", text)
    assert "1.00" in speedups and len(speedups) >= 4  # dense and gmp_90, both modes
