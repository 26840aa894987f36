"""Pydantic model of a zoo spec: how to build upstream models from one dense model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from sparse_transfer.config.loader import SpecError, _format
from sparse_transfer.config.space import MAX_INT
from sparse_transfer.config.spec import (
    MAX_TEXT,
    MAX_URI,
    Resources,
    Seed,
    Sparsity,
    Strict,
    Tracking,
    _usable_storage,
    known,
)
from sparse_transfer.pruning.policy import PolicyOverride, PruningPolicy, resolve_policy

__all__ = ["ZooEntrySpec", "ZooSpec", "load_zoo_spec"]


class ZooEntrySpec(Strict):
    method: str
    sparsity: Sparsity
    params: dict[str, Any] = Field(default_factory=dict)
    # changes to the method's pruning policy (which layers, how sparsity spreads); what is
    # left out keeps the method's published default (sparse_transfer/pruning/policy.py)
    policy: PolicyOverride | None = None

    @model_validator(mode="after")
    def _method_and_params(self) -> ZooEntrySpec:
        from sparse_transfer.pruning import METHODS, resolve_policy

        if self.method not in METHODS:
            raise ValueError(
                f"method: unknown pruning method {self.method!r}; valid: "
                f"{', '.join(METHODS.names())}"
            )
        if (self.method == "dense") != (self.sparsity == 0.0):
            raise ValueError("sparsity: dense has sparsity 0.0, and only dense does")
        params_type = getattr(METHODS.get(self.method), "params_type", None)
        if self.params and params_type is None:
            raise ValueError(f"params: method {self.method!r} takes no parameters")
        if params_type is not None:
            try:
                params_type(**self.params)
            except ValidationError as err:
                raise ValueError(f"params: {err}") from None
        resolve_policy(METHODS.get(self.method), self.policy)  # names the field it refuses
        return self

    def resolved_policy(self) -> PruningPolicy:
        from sparse_transfer.pruning import METHODS

        return resolve_policy(METHODS.get(self.method), self.policy)

    @property
    def entry(self) -> str:
        return (
            self.method
            if self.method == "dense"
            else f"{self.method}_{round(self.sparsity * 100)}"
        )


# Data-free methods: the only ones a speed-only zoo (`weights: random`) can prune with.
DATA_FREE_METHODS = ("dense", "magnitude")


class ZooSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", max_length=200)
    description: str = Field("", max_length=MAX_TEXT)
    arch: str
    # trained: pretrained on `dataset`, then pruned with finetuning. random: a speed-only zoo,
    # the architecture's seeded random initialisation pruned without data or finetuning
    # (inference speed does not depend on what the weights learned; accuracy does, so its
    # entries are marked and never reported beside accuracy).
    weights: Literal["trained", "random"] = "trained"
    num_classes: int = Field(1000, ge=1, le=MAX_INT, strict=True)  # random weights only
    dataset: str | None = None
    pretrain_epochs: int | None = Field(None, ge=1, le=MAX_INT, strict=True)
    prune_epochs: int | None = Field(None, ge=1, le=MAX_INT, strict=True)
    hparams: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=dict)
    entries: list[ZooEntrySpec] = Field(min_length=1, max_length=10_000)
    seed: Seed = 0
    resources: Resources = Resources()
    storage: Annotated[str, Field(max_length=MAX_URI), AfterValidator(_usable_storage)] = (
        "./sparse-transfer-runs"
    )
    tracking: Tracking = Tracking()

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        from sparse_transfer.models import ARCHS

        return known(value, ARCHS, "architecture")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        from sparse_transfer.data import DATASETS

        return value if value is None else known(value, DATASETS, "dataset")

    @model_validator(mode="after")
    def _weights(self) -> ZooSpec:
        trained_only = ("dataset", "pretrain_epochs", "prune_epochs")
        if self.weights == "trained":
            for field in trained_only:
                if getattr(self, field) is None:
                    raise ValueError(f"{field}: required (a zoo of trained weights)")
            return self
        for field in trained_only:
            if getattr(self, field) is not None:
                raise ValueError(f"{field}: a zoo of random weights is not trained; remove it")
        for index, entry in enumerate(self.entries):
            if entry.method not in DATA_FREE_METHODS:
                raise ValueError(
                    f"entries[{index}].method: random weights are pruned without data: "
                    f"{', '.join(DATA_FREE_METHODS)}, not {entry.method!r}"
                )
        return self

    @model_validator(mode="after")
    def _unique(self) -> ZooSpec:
        names = [e.entry for e in self.entries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"entries: duplicate entries {duplicates}")
        return self

    def entry_name(self, method: str, sparsity: float) -> str:
        return f"{self.name}/{ZooEntrySpec(method=method, sparsity=sparsity).entry}"

    def entry_names(self) -> list[str]:
        return [f"{self.name}/{e.entry}" for e in self.entries]


def load_zoo_spec(path: str | Path, overrides: list[str] | None = None) -> ZooSpec:
    from sparse_transfer.config.loader import apply_overrides, read_yaml

    path = Path(path)
    raw = read_yaml(path, "zoo spec")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a zoo spec is a YAML mapping")
    raw = apply_overrides(raw, overrides or [], source=str(path))
    try:
        return ZooSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(
            _format(err, str(path), ZooSpec).replace("sweep spec", "zoo spec")
        ) from None
