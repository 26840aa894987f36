"""What follows from the ledger's events: the MLflow record of each trial, the console line,
and the removal of a told trial's saved state. Nothing here decides what runs."""

from __future__ import annotations

import sys
import time

from sparse_transfer import metrics as M
from sparse_transfer.storage import Storage
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.sweep.trainable import WEIGHTS_FILE, remove_state, state_parts
from sparse_transfer.tracking import SweepRecorder
from sparse_transfer.tracking.views import final_run_name

__all__ = ["TrialEvents"]

_EPOCH_METRICS = (
    M.TRAIN_LOSS,
    M.LR,
    M.VAL_TOP1,
    M.VAL_MEAN_CLASS_ACC,
    M.TEST_TOP1,
    M.TEST_MEAN_CLASS_ACC,
    M.EPOCH,
    M.GPU_HOURS,
    M.CPU_HOURS,
)
# A trial's run is closed from the ledger's outcome, also after a crash lost its last epochs'
# records: the outcome's test scores are recorded then.
_FINAL_METRICS = (
    M.TEST_TOP1,
    M.TEST_MEAN_CLASS_ACC,
    M.FINAL_SPARSITY,
    M.UPSTREAM_SPARSITY,
    M.FEATURE_CACHE_HIT,
    M.GPU_HOURS,
    M.CPU_HOURS,
)
_CONFIG_TAGS = ("precision", "dataset_variant")  # set by the spec and data layer when present


class TrialEvents:
    def __init__(
        self,
        recorder: SweepRecorder,
        ledger: Ledger,
        *,
        parent_run_id: str,
        commit: str,
        store: Storage,
        sweep_id: str,
        totals: dict[str, int],  # phase -> trials the sweep will tell
        metric: str,
    ) -> None:
        self.recorder, self.ledger = recorder, ledger
        self.parent_run_id, self.commit = parent_run_id, commit
        self.store, self.sweep_id = store, sweep_id
        self.totals, self.metric = totals, metric
        self.counts = {phase: 0 for phase in totals}
        self.failed = 0
        self.configs: dict[str, dict] = {}
        self.started_at = time.monotonic()

    def count_told(self, phase: str, n: int = 1) -> None:
        """Trials told before this start: the progress counter goes on from them."""
        self.counts[phase] = self.counts.get(phase, 0) + n

    # -- a trial's life --------------------------------------------------------------------

    def started(self, key: str, config: dict) -> None:
        self.configs[key] = config
        tags = {
            "method": config["method"],
            "sparsity": str(config["sparsity"]),
            "arch": config["arch"],
            "dataset": config["dataset"],
            "mode": config["mode"],
            "cell": config["cell"],
            "seed": str(config["seed"]),
            "phase": config["phase"],
            "upstream": config["upstream"],
            "git_commit": self.commit,
            **{name: str(config[name]) for name in _CONFIG_TAGS if name in config},
        }
        if config["mode"] == "prune":
            tags["downstream_target"] = str(config["downstream_target"])
        if "optuna_trial" in config:
            tags["optuna_trial"] = str(config["optuna_trial"])
        self.recorder.open_trial(
            key,
            self.parent_run_id,
            tags,
            config["hparams"],
            run_name=final_run_name(config)
            if config["phase"] == "final"
            else f"{config['phase']}/{config['cell']}/{key}",
        )

    def epoch(self, key: str, result: dict) -> None:
        if key in self.configs:
            metrics = {k: result[k] for k in _EPOCH_METRICS if k in result}
            self.recorder.log_epoch(key, int(result[M.EPOCH]), metrics)

    def retried(self, key: str, attempt: int) -> None:
        cell = self.configs.get(key, {}).get("cell", key)
        self._line(cell, f"its worker was lost; resuming from its saved state (retry {attempt})")

    def told(self, key: str, phase: str, state: str, outcome: dict, quiet: bool = False):
        """A trial the ledger now holds as COMPLETE, PRUNED or FAIL: close its MLflow run with
        what the ledger kept, and remove its saved state once the ledger is durable. `quiet`:
        told before this start, its MLflow run left open by a crash."""
        config = self.configs.get(key)
        epochs = int(config["hparams"]["epochs"]) if config else 0
        ran = int(outcome.get(M.EPOCH, 0))
        tags = {
            "node": outcome.get("node", ""),
            "epochs_run": ran,
            "stopped_early": str(state == "PRUNED").lower(),
            "ledger_state": state,
        }
        if config and outcome.get("dataset", config["dataset"]) != config["dataset"]:
            tags["dataset"] = outcome["dataset"]  # a variant: never the paper's dataset
        if "failure" in outcome:
            tags["failure"] = outcome["failure"]
            tags["error"] = outcome.get("error", "")[:500]
        artifacts = None
        parts = state_parts(self.sweep_id, key)
        # A final run's last epoch is its result; its weights are the artifact to keep.
        if phase == "final" and state == "COMPLETE" and self.store.download(*parts, WEIGHTS_FILE):
            artifacts = self.store.local(*parts, WEIGHTS_FILE)
        finals = {k: outcome[k] for k in _FINAL_METRICS if k in outcome}
        status = "FAILED" if state == "FAIL" else "FINISHED"
        self.recorder.close_trial(key, status, metrics=finals, tags=tags, artifacts=artifacts)
        self.configs.pop(key, None)
        self.ledger.backend.after_durable(lambda: remove_state(self.store, parts))
        if not quiet:
            self._progress(key, phase, state, outcome, epochs, ran, config)

    def abandon(self, keys: list[str]) -> None:
        """Trials in flight when the sweep is given up: their runs end KILLED."""
        for key in keys:
            if key in self.configs:
                self.recorder.close_trial(key, "KILLED", tags={"abandoned": "fail-fast"})

    def cell_failed(self, cell: str, why: str) -> None:
        self._print(f"cell {cell} FAILED: {why}")

    def note(self, text: str) -> None:
        self._print(text)

    # -- the console ---------------------------------------------------------------------

    def _progress(self, key, phase, state, outcome, epochs, ran, config) -> None:
        if state == "FAIL":
            self.failed += 1
            note = f"FAILED ({outcome.get('failure', '')}): {outcome.get('error', '')[:200]}"
        else:
            self.counts[phase] = self.counts.get(phase, 0) + 1
            metric = self.metric if phase == "search" else M.TEST_TOP1
            note = f"{metric}={float(outcome.get(metric, float('nan'))):.2f}"
            if state == "PRUNED":
                note += f" (stopped early at epoch {ran}/{epochs})"
        cell = config["cell"] if config else key
        self._line(cell, note, phase)

    def _line(self, cell: str, text: str, phase: str | None = None) -> None:
        elapsed = time.monotonic() - self.started_at
        counts = " ".join(f"{p} {self.counts[p]}/{n}" for p, n in self.totals.items() if n)
        self._print(f"[{counts} {elapsed:6.0f}s] {cell}: {text}")

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stdout, flush=True)
