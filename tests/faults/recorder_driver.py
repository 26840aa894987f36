"""A driver process that records simulated trials through a SweepRecorder (run by the MLflow
outage tests).

    recorder_driver.py log TRACKING_URI OUTBOX WORKDIR   # parent run, wait for WORKDIR/go,
        # then queue TRIALS trials of EPOCHS epochs, each closed with an artifact; write
        # WORKDIR/queued and wait to be killed
    recorder_driver.py drain TRACKING_URI OUTBOX WORKDIR  # send what OUTBOX holds, then exit
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sparse_transfer.tracking import SweepRecorder

SWEEP_ID = "killed-driver"
EXPERIMENT = "outage-driver"
TRIALS, EPOCHS = 3, 5


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.1)


def log(recorder: SweepRecorder, workdir: Path) -> None:
    parent = recorder.parent_run({"spec": "driver"})
    (workdir / "parent").write_text(parent)
    _wait_for(workdir / "go")  # the server is down from here on
    for number in range(TRIALS):
        trial = f"trial_{number}"
        tags = {"phase": "final", "cell": "c", "seed": str(number)}
        recorder.open_trial(trial, parent, tags, {"lr": 0.01 * (number + 1)}, run_name=trial)
        for epoch in range(1, EPOCHS + 1):
            recorder.log_epoch(trial, epoch, {"epoch": epoch, "loss": 1.0 / (epoch + number)})
        recorder.log_epoch(trial, EPOCHS - 1, {"epoch": EPOCHS - 1, "loss": 9.0})  # a re-report
        artifact = workdir / trial / "state.pt"
        artifact.parent.mkdir()
        artifact.write_text(f"weights of {trial}")
        recorder.close_trial(
            trial,
            "FINISHED",
            metrics={"final_sparsity": 0.5},
            tags={"node": "n1"},
            artifacts=artifact,
        )
    spec = workdir / "spec.yaml"
    spec.write_text("name: driver\n")
    recorder.log_parent_artifact(parent, spec)
    recorder.close_parent(parent)
    (workdir / "queued").write_text("")
    while True:
        time.sleep(60)


def main() -> None:
    mode, uri, outbox, workdir = sys.argv[1:5]
    recorder = SweepRecorder(uri, EXPERIMENT, SWEEP_ID, Path(outbox))
    if mode == "log":
        log(recorder, Path(workdir))
    else:
        assert recorder.drain(timeout=600), "the outbox did not drain"
        print(f"drained, {recorder.box.failed} refused", flush=True)


if __name__ == "__main__":
    main()
