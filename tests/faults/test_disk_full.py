"""A full disk under the trials' state (a small tmpfs this test mounts, so the kernel itself
answers ENOSPC): the sweep halts naming the path, the previous state file stays whole, and a
resume once space is freed continues the trial from it."""

from __future__ import annotations

import subprocess

import pytest
import torch
from ledger_helpers import go, make_sweep
from optuna.trial import TrialState
from sweep_helpers import ledger_trials

from sparse_transfer.sweep import runner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    def mount(path):
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    mounted = []
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_halts_the_sweep_and_a_resume_continues(
    ray_runtime, tmp_path, monkeypatch, small_disk
):
    spec, cells, state, log_dir = make_sweep(
        tmp_path,
        monkeypatch,
        {"dense/digits_5to9/linear": "big"},
        search={"trials_per_cell": 1, "max_concurrent_trials": 1},
        upstream=[
            {
                "name": "dense",
                "arch": "quickstart_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "zoo": "quickstart/dense",
            }
        ],
    )
    disk = small_disk(state.sweep_dir / "trial_state")
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * int(2.2 * MB))  # room for one 1 MB state, not for two

    with pytest.raises(runner.SweepHalted, match="No space left|could not save") as halted:
        go(state, spec)
    assert str(disk) in str(halted.value) and "resume" in str(halted.value)
    (saved,) = disk.glob("*/state.pt")
    assert torch.load(saved, weights_only=True)["epoch"] == 1  # whole, the last good epoch
    assert not list(disk.glob("*/.*.tmp")), "a half-written state was left"

    ballast.unlink()
    go(runner.SweepState.load(state.sweep_dir), spec)
    (trials,) = ledger_trials(state.sweep_dir).values()
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    key = saved.parent.name
    trained = (log_dir / f"{key}.epochs").read_text().split()
    assert trained == ["1", "2", "2", "3", "4"], trained  # epoch 1 was not trained again
