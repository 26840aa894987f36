"""Pydantic models of a sweep spec: one YAML file describes one study."""

from __future__ import annotations

import math
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "HYPERPARAMETERS",
    "MODES",
    "Choice",
    "Distribution",
    "DownstreamPruning",
    "EarlyStopping",
    "IntRange",
    "LogUniform",
    "Resources",
    "Search",
    "SweepSpec",
    "Tracking",
    "Uniform",
    "Upstream",
]

# full: finetune everything, upstream masks fixed; linear: frozen backbone, linear head;
# prune: full finetuning that also prunes, with GMP, up to `downstream_pruning.target_sparsity`.
MODES = ("full", "linear", "prune")
Mode = Literal["full", "linear", "prune"]

# Every knob the transfer trainer understands, with its default. A search space may sample any of
# them; the rest take these values. Names are the ones logged as MLflow params.
HYPERPARAMETERS: dict[str, float | int | str] = {
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "epochs": 10,
    "batch_size": 64,
    "label_smoothing": 0.0,
    "lr_schedule": "cosine",
}
LR_SCHEDULES = ("cosine", "step", "constant")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogUniform(Strict):
    distribution: Literal["loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> LogUniform:
        if self.low <= 0:
            raise ValueError(f"loguniform low must be > 0, got {self.low}")
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class Uniform(Strict):
    distribution: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> Uniform:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class IntRange(Strict):
    distribution: Literal["int"]
    low: int
    high: int
    step: int = 1

    @model_validator(mode="after")
    def _bounds(self) -> IntRange:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class Choice(Strict):
    distribution: Literal["choice"]
    choices: list[float | int | str] = Field(min_length=1)


Distribution = Annotated[
    LogUniform | Uniform | IntRange | Choice, Field(discriminator="distribution")
]
# A search-space value is either a distribution or a fixed value.
SpaceValue = Distribution | float | int | str


def _known_dataset(value: str) -> str:
    from sparse_transfer.data import DATASETS

    return _known(value, DATASETS, "dataset")


DatasetName = Annotated[str, AfterValidator(_known_dataset)]


def _sparsity_in_range(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {value}")
    return value


Sparsity = Annotated[float, AfterValidator(_sparsity_in_range)]  # fraction of pruned weights


class Upstream(Strict):
    """One upstream (pretrained, possibly pruned) model."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    arch: str
    method: str
    sparsity: Sparsity
    zoo: str | None = None
    checkpoint: str | None = None

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        from sparse_transfer.models import ARCHS

        return _known(value, ARCHS, "architecture")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from sparse_transfer.pruning import METHODS

        return _known(value, METHODS, "pruning method")

    @model_validator(mode="after")
    def _one_source(self) -> Upstream:
        if (self.zoo is None) == (self.checkpoint is None):
            raise ValueError("set exactly one source: `zoo` (a zoo entry) or `checkpoint`")
        return self

    @property
    def source(self) -> str:
        return f"zoo:{self.zoo}" if self.zoo else str(self.checkpoint)


class Search(Strict):
    trials_per_cell: int = Field(4, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    max_concurrent_trials: int = Field(2, ge=1)
    metric: Literal["val_top1", "val_mean_class_acc"] = "val_top1"
    seed: int = 0


class EarlyStopping(Strict):
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class Resources(Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class Tracking(Strict):
    uri: str | None = None
    experiment: str | None = None

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value and "@" in (urlparse(value).netloc or ""):
            raise ValueError(
                "credentials do not belong in a spec; set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment"
            )
        return value


class DownstreamPruning(Strict):
    """Transfer, then prune: gradual magnitude pruning (Zhu & Gupta's cubic schedule) during
    full finetuning, from the upstream model's sparsity to `target_sparsity` over the first
    `ramp_fraction` of the epochs. Cells whose upstream is already as sparse are skipped."""

    target_sparsity: float = Field(gt=0.0, lt=1.0)
    ramp_fraction: float = Field(2 / 3, gt=0.0, le=1.0)


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    upstream: list[Upstream] = Field(min_length=1)
    datasets: list[DatasetName] = Field(min_length=1)
    modes: list[Mode] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    search_space: dict[Mode, dict[str, SpaceValue]]
    downstream_pruning: DownstreamPruning | None = None
    search: Search = Search()
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    storage: str = "./sparse-transfer-runs"
    zoo_dir: str | None = None  # default: <storage>/zoo
    tracking: Tracking = Tracking()

    @field_validator("storage")
    @classmethod
    def _usable_storage(cls, value: str) -> str:
        from sparse_transfer.storage import Storage, StorageError

        try:
            Storage(value)
        except StorageError as err:
            raise ValueError(str(err).removeprefix("storage: ")) from None
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> SweepSpec:
        _check_unique([u.name for u in self.upstream], "upstream")
        _check_unique(self.datasets, "datasets")
        _check_unique(self.seeds, "seeds")
        for mode in self.modes:
            if mode not in self.search_space:
                raise ValueError(f"search_space: no entry for mode {mode!r} (listed in modes)")
            _check_space(mode, self.search_space[mode])
        for index, upstream in enumerate(self.upstream):
            if upstream.method == "dense" and upstream.sparsity != 0.0:
                raise ValueError(f"upstream[{index}].sparsity: a dense model has sparsity 0.0")
        if "prune" in self.modes:
            if self.downstream_pruning is None:
                raise ValueError(
                    "downstream_pruning: mode 'prune' needs downstream_pruning.target_sparsity"
                )
            target = self.downstream_pruning.target_sparsity
            if all(u.sparsity >= target for u in self.upstream):
                raise ValueError(
                    f"downstream_pruning.target_sparsity: {target} is not above the sparsity "
                    "of any upstream model, so mode 'prune' has no cell"
                )
        if self.early_stopping.scheduler == "asha":
            for mode in self.modes:
                most = max_epochs(self.search_space[mode])
                if self.early_stopping.grace_period > most:
                    raise ValueError(
                        f"early_stopping.grace_period: {self.early_stopping.grace_period} is "
                        f"above the most epochs a {mode} trial can run ({most})"
                    )
        return self

    def space(self, mode: str) -> dict[str, SpaceValue]:
        return self.search_space[mode]  # type: ignore[index]


def _known(value: str, registry, kind: str) -> str:
    if value not in registry:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(registry.names())}")
    return value


def _check_unique(values: list, what: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise ValueError(f"{what}: duplicates {sorted(seen, key=str)}")


def _check_space(mode: str, space: dict[str, SpaceValue]) -> None:
    if not space:
        raise ValueError(f"search_space.{mode}: empty; give at least one hyperparameter")
    unknown = sorted(set(space) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(
            f"search_space.{mode}: unknown hyperparameters {unknown}; "
            f"valid: {', '.join(HYPERPARAMETERS)}"
        )
    for name, value in space.items():
        for candidate in _candidates(value):
            _check_value(mode, name, candidate)


def _candidates(value: SpaceValue) -> list:
    if isinstance(value, Choice):
        return list(value.choices)
    if isinstance(value, LogUniform | Uniform | IntRange):
        return [value.low, value.high]
    return [value]


def _check_value(mode: str, name: str, value: object) -> None:
    where = f"search_space.{mode}.{name}"
    if name == "lr_schedule":
        if value not in LR_SCHEDULES:
            raise ValueError(f"{where}: unknown schedule {value!r}; valid: {LR_SCHEDULES}")
        return
    if isinstance(value, str) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ValueError(f"{where}: must be a finite number, got {value!r}")
    if name in ("epochs", "batch_size") and (float(value) < 1 or float(value) != int(value)):
        raise ValueError(f"{where}: must be a positive integer, got {value!r}")
    if name in ("lr",) and float(value) <= 0:
        raise ValueError(f"{where}: must be > 0, got {value!r}")
    if name in ("weight_decay", "momentum", "label_smoothing") and float(value) < 0:
        raise ValueError(f"{where}: must be >= 0, got {value!r}")
    if name == "label_smoothing" and float(value) >= 1:
        raise ValueError(f"{where}: must be < 1, got {value!r}")


def max_epochs(space: dict[str, SpaceValue]) -> int:
    """The most epochs any trial of this space can run (ASHA's max_t)."""
    value = space.get("epochs", HYPERPARAMETERS["epochs"])
    return int(max(_candidates(value)))  # type: ignore[type-var]
