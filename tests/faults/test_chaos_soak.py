"""Chaos soak: a sweep of 300 short search trials while a background thread kills a random trial
worker process every few seconds. Every trial ends exactly once, every cell spends exactly its
budget, and the per-trial overhead against the same sweep without faults is printed (a number
to read, not a time to assert)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from ledger_helpers import go, make_sweep
from optuna.trial import TrialState
from sweep_helpers import child_runs, ledger_trials

# serial: the overhead it prints is a ratio of two timings, read on a machine it has alone
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(1200)]
CELLS, PER_CELL, EVERY_S = 30, 10, 10.0


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _trial_workers() -> list[int]:
    """PIDs of this test's Ray workers running a Tune trial (Ray titles them
    ray::ImplicitFunc): children of the raylet that this process started, never another
    Ray's on the machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if (
            title.startswith(b"ray::ImplicitFunc")
            and _parent(_parent(int(entry.name))) == os.getpid()
        ):
            pids.append(int(entry.name))
    return pids


def _chaos(stop: threading.Event, kills: list[int]) -> None:
    rng = random.Random(0)
    while not stop.wait(EVERY_S):
        pids = _trial_workers()
        if pids:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills.append(1)
            except ProcessLookupError:
                pass


def _sweep(tmp_path: Path, monkeypatch, name: str):
    root = tmp_path / name
    root.mkdir()
    upstream = [
        {
            "name": f"u{i}",
            "arch": "quickstart_cnn",
            "method": "dense",
            "sparsity": 0.0,
            "zoo": "quickstart/dense",
        }
        for i in range(CELLS)
    ]
    return make_sweep(
        root,
        monkeypatch,
        {f"u{i}/digits_5to9/linear": "slow:0.1" for i in range(CELLS)},
        upstream=upstream,
        seeds=[0],
        search={"trials_per_cell": PER_CELL, "max_concurrent_trials": 2},
    )


def test_chaos_soak_every_trial_exactly_once(ray_runtime, tmp_path, monkeypatch, capsys):
    timings = {}
    for name in ("calm", "chaos"):
        spec, cells, state, _ = _sweep(tmp_path, monkeypatch, name)
        stop, kills = threading.Event(), []
        thread = threading.Thread(target=_chaos, args=(stop, kills), daemon=True)
        started = time.perf_counter()
        if name == "chaos":
            thread.start()
        try:
            go(state, spec, lines=[])
        finally:
            stop.set()
        timings[name] = (time.perf_counter() - started) / (CELLS * (PER_CELL + 1))

        for study, trials in ledger_trials(state.sweep_dir).items():
            assert len(trials) == PER_CELL, study
            odd = [
                (t.number, t.state.name, t.user_attrs.get("outcome"))
                for t in trials
                if t.state != TrialState.COMPLETE
            ]
            assert not odd, (study, odd)
        runs = child_runs(spec.tracking.uri, "small", state.sweep_id)
        assert len(runs) == CELLS * (PER_CELL + 1)
        assert Counter(r.data.tags["trial_id"] for r in runs).most_common(1)[0][1] == 1
        assert {r.info.status for r in runs} == {"FINISHED"}
        if name == "chaos":
            assert len(kills) >= 5, f"only {len(kills)} workers were killed"
            timings["kills"] = len(kills)
    with capsys.disabled():
        print(
            f"\nchaos soak: {CELLS * PER_CELL} search trials + {CELLS} final runs; "
            f"{timings['kills']} workers killed; {timings['calm']:.3f} s/trial without faults, "
            f"{timings['chaos']:.3f} s/trial with; ratio {timings['chaos'] / timings['calm']:.2f}"
        )
