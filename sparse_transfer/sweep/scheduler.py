"""ASHA within a cell: each cell has its own AsyncHyperBand rungs, so a trial is only ever
compared with trials of the same (upstream model, dataset, mode)."""

from __future__ import annotations

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

__all__ = ["CellASHA"]


class CellASHA(FIFOScheduler):
    def __init__(
        self, *, metric: str, max_t: dict[str, int], grace_period: int, reduction_factor: float
    ) -> None:
        super().__init__()
        self._metric = metric
        self.max_t = max_t  # mode -> most epochs a trial of that mode can run
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self._cells: dict[str, AsyncHyperBandScheduler] = {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # metric and mode are fixed at construction

    def _for(self, trial) -> AsyncHyperBandScheduler:
        settings = trial.config["trial"]
        cell = settings["cell"]
        if cell not in self._cells:
            self._cells[cell] = AsyncHyperBandScheduler(
                time_attr="epoch",
                metric=self._metric,
                mode="max",
                max_t=self.max_t[settings["mode"]],
                grace_period=self.grace_period,
                reduction_factor=self.reduction_factor,
            )
        return self._cells[cell]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        scheduler = self._for(trial)
        if trial.trial_id not in scheduler._trial_info:  # re-added after a restore
            scheduler.on_trial_add(tune_controller, trial)
        return scheduler.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        scheduler = self._for(trial)
        if trial.trial_id in scheduler._trial_info:
            scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._for(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"Using ASHA per cell ({len(self._cells)} cells)"
