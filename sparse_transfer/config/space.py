"""Search spaces: the hyperparameters a transfer trial takes, their distributions, and the
checks that run on every value a space can produce."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

__all__ = [
    "HYPERPARAMETERS",
    "LR_SCHEDULES",
    "MAX_INT",
    "Choice",
    "Distribution",
    "IntRange",
    "LogUniform",
    "SpaceValue",
    "Strict",
    "Uniform",
    "candidates",
    "check_space",
    "contains",
    "is_distribution",
    "max_epochs",
]


class Strict(BaseModel):
    # hide_input_in_errors: a refused value may be a secret (a URI with credentials).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


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
# `authors_step`: x0.1 after 0-indexed epochs E//3 and 2E//3, as the authors' ExponentialLR
# steps in on_epoch_end (51/50/49 epochs at lr, lr/10, lr/100 of 150); see transfer.loop.
LR_SCHEDULES = ("cosine", "authors_step", "constant")
# Epochs, batch sizes, step and the like: far above any real value, far below float overflow.
MAX_INT = 1_000_000


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
    step: int = Field(1, ge=1, le=MAX_INT)

    @model_validator(mode="after")
    def _bounds(self) -> IntRange:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class Choice(Strict):
    distribution: Literal["choice"]
    choices: list[StrictFloat | StrictInt | StrictStr] = Field(min_length=1, max_length=10_000)


Distribution = Annotated[
    LogUniform | Uniform | IntRange | Choice, Field(discriminator="distribution")
]
# A search-space value is either a distribution or a fixed value.
# Strict scalars: YAML's `true` is not the number 1.
Scalar = StrictFloat | StrictInt | StrictStr
SpaceValue = Distribution | Scalar


_DISTRIBUTIONS = (LogUniform, Uniform, IntRange, Choice)


def is_distribution(value: SpaceValue) -> bool:
    return isinstance(value, _DISTRIBUTIONS)


def check_space(mode: str, space: dict[str, SpaceValue], where: str = "") -> None:
    where = where or f"search_space.{mode}"
    if not space:
        raise ValueError(f"{where}: empty; give at least one hyperparameter")
    unknown = sorted(set(space) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(
            f"{where}: unknown hyperparameters {unknown}; valid: {', '.join(HYPERPARAMETERS)}"
        )
    for name, value in space.items():
        for candidate in candidates(value):
            _check_value(where, name, candidate)


def candidates(value: SpaceValue) -> list:
    if isinstance(value, Choice):
        return list(value.choices)
    if isinstance(value, LogUniform | Uniform | IntRange):
        return [value.low, value.high]
    return [value]


def contains(distribution: Distribution, value: object) -> bool:
    """Whether `value` is one a distribution can produce (bounds inclusive)."""
    if isinstance(distribution, Choice):
        return value in distribution.choices
    if isinstance(value, str | bool):
        return False
    if isinstance(distribution, IntRange):
        steps = (value - distribution.low) / distribution.step
        return (
            value == int(value)
            and steps == int(steps)
            and distribution.low <= value <= distribution.high
        )
    return distribution.low <= value <= distribution.high


def _check_value(prefix: str, name: str, value: object) -> None:
    where = f"{prefix}.{name}"
    if name == "lr_schedule":
        if value not in LR_SCHEDULES:
            raise ValueError(f"{where}: unknown schedule {value!r}; valid: {LR_SCHEDULES}")
        return
    if isinstance(value, str | bool) or not _finite(value):
        raise ValueError(f"{where}: must be a finite number, got {_short(value)}")
    if name in ("epochs", "batch_size") and (float(value) < 1 or float(value) != int(value)):
        raise ValueError(f"{where}: must be a positive integer, got {value!r}")
    if name in ("epochs", "batch_size") and int(value) > MAX_INT:
        raise ValueError(f"{where}: must be at most {MAX_INT}, got {value!r}")
    if name in ("lr",) and float(value) <= 0:
        raise ValueError(f"{where}: must be > 0, got {value!r}")
    if name in ("weight_decay", "momentum", "label_smoothing") and float(value) < 0:
        raise ValueError(f"{where}: must be >= 0, got {value!r}")
    if name == "label_smoothing" and float(value) >= 1:
        raise ValueError(f"{where}: must be < 1, got {value!r}")


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except OverflowError:  # an integer too large for a float
        return False


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def max_epochs(space: dict[str, SpaceValue]) -> int:
    """The most epochs any trial of this space can run (ASHA's max_t)."""
    value = space.get("epochs", HYPERPARAMETERS["epochs"])
    return int(max(candidates(value)))  # type: ignore[type-var]
