"""Tune callbacks on the driver: MLflow runs per trial, and a live progress line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ray.tune import Callback
from ray.tune.stopper import Stopper

from sparse_transfer import metrics as M
from sparse_transfer.sweep.trainable import fetch_state, mark_done, state_path
from sparse_transfer.tracking import SweepRecorder

__all__ = ["FailFast", "MlflowTrials", "Progress"]

# A phase stops when this many trials failed before any trial finished: that is a bug or bad
# data, and every other trial would fail the same way after spending its share of the budget.
FAIL_FAST_AFTER = 3

_EPOCH_METRICS = (
    M.TRAIN_LOSS,
    M.LR,
    M.VAL_TOP1,
    M.VAL_MEAN_CLASS_ACC,
    M.TEST_TOP1,
    M.TEST_MEAN_CLASS_ACC,
    M.EPOCH,
)
_FINAL_METRICS = (M.FINAL_SPARSITY, M.UPSTREAM_SPARSITY, M.FEATURE_CACHE_HIT)


def _settings(trial) -> dict:
    return trial.config["trial"]


class MlflowTrials(Callback):
    def __init__(
        self,
        recorder: SweepRecorder,
        parent_run_id: str,
        commit: str,
        phase: str,
        told: Callable[[dict], bool],
    ) -> None:
        self.told = told  # whether a trial's result reached Optuna (see settle_lost_runs)
        self.recorder = recorder
        self.parent_run_id = parent_run_id
        self.commit = commit
        self.phase = phase
        self._last: dict[str, dict] = {}
        self._reconciled = False

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_last": {}, "_reconciled": False}

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self._reconciled:  # the first step, also after a restore
            self._reconciled = True
            known = {t.trial_id for t in trials}
            self.recorder.settle_lost_runs(self.phase, known, self.told)

    def _open(self, trial) -> str:
        s = _settings(trial)
        tags = {
            "method": s["method"],
            "sparsity": str(s["sparsity"]),
            "arch": s["arch"],
            "dataset": s["dataset"],
            "mode": s["mode"],
            "cell": s["cell"],
            "seed": str(s["seed"]),
            "phase": s["phase"],
            "upstream": s["upstream"],
            "precision": s.get("precision", "bf16"),
            "git_commit": self.commit,
        }
        if s["mode"] == "prune":
            tags["downstream_target"] = str(s["downstream_target"])
        if "optuna_trial" in s:
            tags["optuna_trial"] = str(s["optuna_trial"])
        return self.recorder.open_trial(
            trial.trial_id,
            self.parent_run_id,
            tags,
            s["hparams"],
            run_name=f"{s['phase']}/{s['cell']}/{trial.trial_id}",
        )

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._open(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._open(trial)
        dataset = result.get("dataset", _settings(trial)["dataset"])
        if dataset != _settings(trial)["dataset"]:  # a variant: never the paper's dataset
            self.recorder.client.set_tag(run_id, "dataset", dataset)
        self._last[trial.trial_id] = result
        epoch_metrics = {k: result[k] for k in _EPOCH_METRICS if k in result}
        self.recorder.log_epoch(trial.trial_id, int(result[M.EPOCH]), epoch_metrics)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._open(trial)
        result = self._last.pop(trial.trial_id, trial.last_result or {})
        s = _settings(trial)
        # test_top1 of final runs was logged with every epoch; its last value is the score.
        finals = {k: result[k] for k in _FINAL_METRICS if k in result}
        epochs = int(s["hparams"]["epochs"])
        stopped_early = int(result.get(M.EPOCH, 0)) < epochs
        tags = {
            "node": result.get("node", ""),
            "epochs_run": result.get(M.EPOCH, 0),
            "stopped_early": str(stopped_early).lower(),
        }
        state = state_path(s, trial.trial_id)
        mark_done(s, trial.trial_id, result)
        # A final run's last epoch is its result (nothing is selected on the test split), so
        # its checkpoint is the one to keep. Search trials' states only served resumption.
        artifacts = fetch_state(s, trial.trial_id) if s["phase"] == "final" else None
        self.recorder.close_trial(
            trial.trial_id, "FINISHED", metrics=finals, tags=tags, artifacts=artifacts
        )
        if s["phase"] == "search":
            state.unlink(missing_ok=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._open(trial)
        error = str(getattr(trial, "error_file", "") or "")
        self.recorder.close_trial(trial.trial_id, "FAILED", tags={"error_file": error})


class Progress(Callback):
    """One line per finished trial, plus the count so far: readable in any terminal or log."""

    def __init__(self, phase: str, total: int, metric: str) -> None:
        self.phase, self.total, self.metric = phase, total, metric
        self.done = self.failed = self.stopped = 0
        self.started = time.monotonic()

    def setup(self, **info) -> None:
        # Also runs after a restore: count trials that finished before the crash.
        self.started = time.monotonic()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if iteration == 0 and self.done == 0:
            self.done = sum(t.status == "TERMINATED" for t in trials)
            self.failed = sum(t.status == "ERROR" for t in trials)

    def _line(self, trial, text: str) -> None:
        elapsed = time.monotonic() - self.started
        count = self.done + self.failed
        print(
            f"[{self.phase} {count}/{self.total} {elapsed:6.0f}s] {_settings(trial)['cell']}: "
            f"{text}",
            file=sys.stdout,
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        result = trial.last_result or {}
        epochs = int(_settings(trial)["hparams"]["epochs"])
        ran = int(result.get(M.EPOCH, 0))
        note = ""
        if ran < epochs:
            self.stopped += 1
            note = f" (stopped by ASHA at epoch {ran}/{epochs})"
        score = result.get(self.metric, float("nan"))
        self._line(trial, f"{self.metric}={score:.2f}{note}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.failed += 1
        self._line(trial, f"FAILED, see {getattr(trial, 'error_file', '')}")


class FailFast(Callback):
    """Counts finished and failed trials; its `stopper` ends the phase once `threshold` trials
    failed and none finished. Trial-specific failures after a success never stop a phase."""

    def __init__(self, threshold: int = FAIL_FAST_AFTER) -> None:
        self.threshold = threshold
        self.failed = self.finished = 0
        self.stopper = _StopWhenAllFail(self)

    def on_step_begin(self, iteration, trials, **info) -> None:
        if iteration == 0:  # also after a restore: what finished or failed before the crash
            self.finished = sum(t.status == "TERMINATED" for t in trials)
            self.failed = sum(t.status == "ERROR" for t in trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished += 1

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.failed += 1

    @property
    def tripped(self) -> bool:
        return self.finished == 0 and self.failed >= self.threshold


class _StopWhenAllFail(Stopper):
    def __init__(self, counts: FailFast) -> None:
        self.counts = counts  # pickled together with the callback: one object after restore

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.counts.tripped
