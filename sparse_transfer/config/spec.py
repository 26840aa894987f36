"""Pydantic models of a sweep spec: one YAML file describes one study."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sparse_transfer.config.space import (
    HYPERPARAMETERS,
    MAX_INT,
    Choice,
    Distribution,
    IntRange,
    LogUniform,
    SpaceValue,
    Strict,
    Uniform,
    candidates,
    check_space,
    contains,
    is_distribution,
    max_epochs,
)
from sparse_transfer.paths import check_uri, safe_parts

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
    "SpaceValue",
    "Search",
    "SweepSpec",
    "Tracking",
    "Uniform",
    "Upstream",
    "known",
    "max_epochs",
]

# full: finetune everything, upstream masks fixed; linear: frozen backbone, linear head;
# prune: full finetuning that also prunes, with GMP, up to `downstream_pruning.target_sparsity`.
MODES = ("full", "linear", "prune")


def _known_mode(value: str) -> str:
    if value not in MODES:
        raise ValueError(f"unknown mode {value!r}; valid: {', '.join(MODES)}")
    return value


Mode = Annotated[str, AfterValidator(_known_mode)]
# Bounds for values nobody means at their extremes: each would fail at run time, or never end.
MAX_TRIALS = 100_000
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_NAME = 200  # names, experiment names
MAX_URI = 4096
MAX_TEXT = 20_000  # a description
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=MAX_NAME)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]

DRY_RUN_BATCH_SIZE = 8
PAPER = "paper"  # an enqueued value that stands for the paper's value for the cell


def _known_dataset(value: str) -> str:
    from sparse_transfer.data import DATASETS
    from sparse_transfer.data.paper import PAPER_DATASETS

    if value in DATASETS or value in PAPER_DATASETS:
        return value
    names = [*DATASETS.names(), *PAPER_DATASETS.names()]
    raise ValueError(f"unknown dataset {value!r}; valid: {', '.join(names)}")


def is_file_dataset(name: str) -> bool:
    """True for datasets read from image files under a root (the paper's 12, image_folder);
    False for the in-memory quickstart datasets."""
    from sparse_transfer.data.paper import PAPER_DATASETS

    return name in PAPER_DATASETS


DatasetName = Annotated[str, AfterValidator(_known_dataset)]


def _sparsity_in_range(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {value}")
    return value


Sparsity = Annotated[float, AfterValidator(_sparsity_in_range)]  # fraction of pruned weights


def _usable_storage(value: str) -> str:
    """A local path or an s3:// URI, parsed as the storage layer will parse it: no
    credentials, and no bucket or key that would leave the local mirror."""
    from sparse_transfer.storage import Storage

    try:
        Storage(value)
    except ValueError as err:
        raise ValueError(str(err).removeprefix("storage: ")) from None
    return value


def _safe_uri(value: str) -> str:
    """Any URI field (a path, s3://, https://): no credentials; s3:// as storage takes it."""
    check_uri(value, where="")
    return _usable_storage(value) if value.startswith("s3://") else value


Uri = Annotated[str, Field(max_length=MAX_URI), AfterValidator(_safe_uri)]


def _safe_zoo_entry(value: str) -> str:
    safe_parts(value, where="")  # the entry's name is a path under the zoo directory
    return value


class Upstream(Strict):
    """One upstream (pretrained, possibly pruned) model, from one of three sources:

    - `zoo`: an entry of the project's zoo (built on demand);
    - `catalog`: a published checkpoint of the catalog (`sparse-transfer checkpoint list`),
      read from `checkpoint` when given, else from the entry's own source, else from
      `<checkpoint_root>/<catalog name>.pth`; arch, method and sparsity default to the entry's;
    - `checkpoint` alone: a file in the project's own upstream format.
    """

    name: Name
    arch: str | None = Field(None, max_length=MAX_NAME)
    method: str | None = Field(None, max_length=MAX_NAME)
    sparsity: Sparsity | None = None
    zoo: Annotated[str, Field(max_length=MAX_NAME), AfterValidator(_safe_zoo_entry)] | None = None
    catalog: str | None = Field(None, max_length=MAX_NAME)
    checkpoint: Uri | None = None

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str | None) -> str | None:
        from sparse_transfer.models import ARCHS

        return value if value is None else known(value, ARCHS, "architecture")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        from sparse_transfer.models.catalog import CATALOG

        if value is None or value in _methods() or value in _paper_methods(CATALOG):
            return value
        valid = [*_methods().names(), *sorted(_paper_methods(CATALOG))]
        raise ValueError(f"unknown pruning method {value!r}; valid: {', '.join(valid)}")

    @field_validator("catalog")
    @classmethod
    def _known_entry(cls, value: str | None) -> str | None:
        from sparse_transfer.models.catalog import CATALOG

        return value if value is None else known(value, CATALOG, "catalog entry")

    @model_validator(mode="after")
    def _one_source(self) -> Upstream:
        if self.catalog is not None:
            if self.zoo is not None:
                raise ValueError("set one source: `zoo` or `catalog`, not both")
            return self._from_catalog()
        if (self.zoo is None) == (self.checkpoint is None):
            raise ValueError(
                "set exactly one source: `zoo` (a zoo entry), `catalog` (a published "
                "checkpoint) or `checkpoint` (a file in the project's format)"
            )
        for field in ("arch", "method", "sparsity"):
            if getattr(self, field) is None:
                raise ValueError(f"{field}: required unless the model comes from `catalog`")
        if self.method not in _methods():
            raise ValueError(
                f"method: {self.method!r} names a published checkpoint's method; for a zoo "
                f"entry or own checkpoint use one of {', '.join(_methods().names())}"
            )
        return self

    def _from_catalog(self) -> Upstream:
        from sparse_transfer.models.catalog import CATALOG

        entry = CATALOG.get(self.catalog)
        for field in ("arch", "method", "sparsity"):
            given, declared = getattr(self, field), getattr(entry, field)
            if given is None:
                object.__setattr__(self, field, declared)
            elif given != declared:
                raise ValueError(
                    f"{field}: {given!r} contradicts catalog entry {entry.name!r} "
                    f"({field} {declared!r}); leave it out to take the entry's"
                )
        return self

    @property
    def source(self) -> str:
        if self.zoo:
            return f"zoo:{self.zoo}"
        if self.catalog:
            return f"catalog:{self.catalog}" + (f" ({self.checkpoint})" if self.checkpoint else "")
        return str(self.checkpoint)


def _methods():
    from sparse_transfer.pruning import METHODS

    return METHODS


def _paper_methods(catalog) -> set[str]:
    """The methods as the paper (and the catalog) spell them: "AC/DC", "RigL ERK 5x", ..."""
    return {catalog.get(name).method for name in catalog.names()}


class Search(Strict):
    # strict: YAML's `true` is not the integer 1
    trials_per_cell: int = Field(4, ge=1, le=MAX_TRIALS, strict=True)
    sampler: Literal["tpe", "random"] = "tpe"
    max_concurrent_trials: int = Field(2, ge=1, le=MAX_TRIALS, strict=True)
    metric: Literal["val_top1", "val_mean_class_acc"] = "val_top1"
    seed: Seed = 0
    # Search trials of one cell that may fail for their own reasons (each is replaced by a new
    # trial) before the cell is given up and reported as failed.
    max_failures_per_cell: int = Field(3, ge=0, le=1000, strict=True)
    # The first trials of every cell, in order: each a configuration of searched
    # hyperparameters (the rest are sampled). A value may be `paper`: the paper's value for
    # the cell's mode and dataset (sparse_transfer/reference/paper_hyperparameters.yaml), so
    # one entry enqueues lr 0.001 for most cells and 0.01 for aircraft and cars.
    enqueue: list[dict[str, float | int | str]] = Field(default_factory=list, max_length=1000)


class EarlyStopping(Strict):
    """Asynchronous successive halving within each cell (Optuna's SuccessiveHalvingPruner,
    deciding from the rungs in the sweep's ledger): a trial reaching epoch
    grace_period * reduction_factor**k goes on only if it is in the top 1/reduction_factor
    of its cell's trials there."""

    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, le=MAX_INT, strict=True)
    reduction_factor: int = Field(2, ge=2, le=100, strict=True)


class Budget(Strict):
    # When the sweep's trials have used this many GPU-hours, no new search trial starts and
    # every cell's final runs start from its search so far.
    gpu_hours: float | None = Field(None, gt=0, allow_inf_nan=False)


class Resources(Strict):
    # Per trial; more than any one node has would leave the trials pending forever. A
    # fraction of a GPU packs several trials on one (see infra/README.md: CUDA MPS).
    cpu: float = Field(1.0, gt=0, le=1024, allow_inf_nan=False)
    gpu: float = Field(0.0, ge=0, le=64, allow_inf_nan=False)
    # On a GPU: bf16 autocasts to bfloat16 (about twice the speed on Ampere and later);
    # fp32 computes without autocast but lets convolutions and matmuls use TF32 (10-bit
    # mantissas; torch's default for cuDNN convolutions); fp32-strict is IEEE fp32 throughout,
    # as the paper's authors trained. A CPU always computes in IEEE fp32.
    precision: Literal["bf16", "fp32", "fp32-strict"] = "bf16"
    compile: bool = False  # torch.compile the model for training (minutes of compiling first)
    # Final runs score the test split at their last epoch only (the report reads nothing
    # else); n: also every n epochs, for a learning curve. Search trials score validation
    # every epoch, since early stopping needs it.
    eval_every: int | None = Field(None, ge=1, le=MAX_INT, strict=True)
    # Linear finetuning's feature extraction: torch, or DeepSparse on the CPU (the paper's
    # sparse engine and training speedup; needs `make speed-env`). Features of the two agree
    # within 1e-3 + 1e-3 * max |feature| (tests/speed/test_deepsparse.py).
    feature_engine: Literal["torch", "deepsparse"] = "torch"
    # Loader worker processes per trial for file datasets (they read image bytes; decoding
    # runs on the device); default: one per CPU but one.
    loader_workers: int | None = Field(None, ge=0, le=1024, strict=True)
    # A trial saves its state when this many seconds have passed since its last save (and at
    # the epochs where early stopping decides): a crash costs at most this much of its work.
    checkpoint_interval_s: float = Field(180.0, ge=0, le=86400, allow_inf_nan=False)

    @property
    def workers(self) -> int:
        if self.loader_workers is not None:
            return self.loader_workers
        return max(0, int(self.cpu) - 1)


ResourceValue = StrictBool | StrictInt | StrictFloat | StrictStr | None


class DatasetOverride(Strict):
    """One dataset's changes: to the search space of each mode's cells, and to the resources
    of its trials (e.g. `gpu: 0.25` for a small dataset, so four trials share a GPU)."""

    full: dict[str, SpaceValue] | None = None
    linear: dict[str, SpaceValue] | None = None
    prune: dict[str, SpaceValue] | None = None
    resources: dict[str, ResourceValue] = {}

    def spaces(self) -> dict[str, dict[str, SpaceValue]]:
        return {m: getattr(self, m) for m in MODES if getattr(self, m) is not None}


class Tracking(Strict):
    uri: Uri | None = None
    experiment: str | None = Field(None, max_length=MAX_NAME)


class DownstreamPruning(Strict):
    """Transfer, then prune: gradual magnitude pruning (Zhu & Gupta's cubic schedule) during
    full finetuning, from the upstream model's sparsity to `target_sparsity` over the first
    `ramp_fraction` of the epochs. Cells whose upstream is already as sparse are skipped."""

    target_sparsity: float = Field(gt=0.0, lt=1.0)
    ramp_fraction: float = Field(2 / 3, gt=0.0, le=1.0)


class SweepSpec(Strict):
    name: Name
    description: str = Field("", max_length=MAX_TEXT)
    upstream: list[Upstream] = Field(min_length=1, max_length=10_000)
    datasets: list[DatasetName] = Field(min_length=1, max_length=1000)
    modes: list[Mode] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1, max_length=1000)
    search_space: dict[Mode, dict[str, SpaceValue]]
    # Per-dataset changes to the search space, e.g. the paper's lr 0.1 for aircraft and cars:
    # {aircraft: {full: {lr: 0.1}}}, merged over `search_space` for that dataset's cells; and
    # to `resources`: {flowers102: {resources: {gpu: 0.25}}}, merged over `resources`.
    dataset_overrides: dict[str, DatasetOverride] = {}
    # Where file datasets live: `<data_root>/<dataset>` (a local path or s3:// prefix), unless
    # `data_roots` names a dataset's own root.
    data_root: Uri | None = None
    data_roots: dict[str, Uri] = {}
    # Where catalog checkpoints without a source are read: `<checkpoint_root>/<name>.pth`.
    checkpoint_root: Uri | None = None
    downstream_pruning: DownstreamPruning | None = None
    search: Search = Search()
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    budget: Budget = Budget()
    storage: Annotated[str, Field(max_length=MAX_URI), AfterValidator(_usable_storage)] = (
        "./sparse-transfer-runs"
    )
    zoo_dir: Uri | None = None  # default: <storage>/zoo
    tracking: Tracking = Tracking()
    # Set by `sparse-transfer sweep --dry-run` (see `as_dry_run`), never by hand.
    dry_run: bool = False

    @model_validator(mode="after")
    def _cross_fields(self) -> SweepSpec:
        _check_unique([u.name for u in self.upstream], "upstream")
        _check_unique(self.modes, "modes")
        _check_unique(self.datasets, "datasets")
        _check_unique(self.seeds, "seeds")
        for mode in self.modes:
            if mode not in self.search_space:
                raise ValueError(f"search_space: no entry for mode {mode!r} (listed in modes)")
            check_space(mode, self.search_space[mode])
        for index, upstream in enumerate(self.upstream):
            if upstream.method.lower() == "dense" and upstream.sparsity != 0.0:
                raise ValueError(f"upstream[{index}].sparsity: a dense model has sparsity 0.0")
            if upstream.catalog and not upstream.checkpoint and self.checkpoint_root is None:
                from sparse_transfer.models.catalog import CATALOG

                if CATALOG.get(upstream.catalog).source is None:
                    raise ValueError(
                        f"upstream[{index}].checkpoint: catalog entry {upstream.catalog!r} has "
                        "no published file; give its `checkpoint` (a path, s3:// or https://) "
                        "or a `checkpoint_root` holding <catalog name>.pth"
                    )
        self._check_datasets()
        self._check_enqueue()
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
                most = max(max_epochs(self.space(mode, d)) for d in self.datasets)
                if self.early_stopping.grace_period > most:
                    raise ValueError(
                        f"early_stopping.grace_period: {self.early_stopping.grace_period} is "
                        f"above the most epochs a {mode} trial can run ({most})"
                    )
        return self

    def _check_datasets(self) -> None:
        # Overrides and roots may name datasets the spec does not run (a spec narrowed with
        # --set datasets=[...] keeps working), but every name must be a real dataset.
        for dataset, override in self.dataset_overrides.items():
            _check_dataset_key(dataset, "dataset_overrides")
            for mode, space in override.spaces().items():
                check_space(mode, space, where=f"dataset_overrides.{dataset}.{mode}")
            self.resources_for(dataset)  # raises naming the field
        for dataset in self.data_roots:
            _check_dataset_key(dataset, "data_roots")
        for dataset in self.datasets:
            if not is_file_dataset(dataset) and dataset in self.data_roots:
                raise ValueError(
                    f"data_roots.{dataset}: {dataset!r} ships with the package; it has no root"
                )
            if is_file_dataset(dataset) and self.dataset_root(dataset) is None:
                raise ValueError(
                    f"data_root: dataset {dataset!r} is read from image files; set `data_root` "
                    f"(holding {dataset}/) or `data_roots.{dataset}`"
                )

    def _check_enqueue(self) -> None:
        if len(self.search.enqueue) > self.search.trials_per_cell:
            raise ValueError(
                f"search.enqueue: {len(self.search.enqueue)} configurations, more than "
                f"search.trials_per_cell ({self.search.trials_per_cell})"
            )
        for (mode, dataset), space in self.cell_spaces().items():
            for index, params in enumerate(self.enqueued(mode, dataset)):
                for name, value in params.items():
                    where = f"search.enqueue[{index}].{name}"
                    if not is_distribution(space.get(name)):
                        raise ValueError(
                            f"{where}: not searched in the {mode} cells of {dataset!r}; "
                            "enqueue names searched hyperparameters only"
                        )
                    if not contains(space[name], value):
                        raise ValueError(
                            f"{where}: {value!r} is outside the searched {space[name]} "
                            f"of the {mode} cells of {dataset!r}"
                        )

    def enqueued(self, mode: str, dataset: str) -> list[dict[str, float | int | str]]:
        """The configurations enqueued as the first trials of a (mode, dataset) cell, with
        each `paper` value replaced by the paper's value for that mode and dataset."""
        from sparse_transfer.reference import paper_value

        def resolve(name: str, value):
            if value != PAPER:
                return value
            try:
                return paper_value("full" if mode == "prune" else mode, dataset, name)
            except KeyError as err:
                raise ValueError(f"search.enqueue: {name}: paper: {err.args[0]}") from None

        return [{k: resolve(k, v) for k, v in e.items()} for e in self.search.enqueue]

    def space(self, mode: str, dataset: str | None = None) -> dict[str, SpaceValue]:
        """The search space of a mode's cells (of one dataset's cells, with its overrides)."""
        override = self.dataset_overrides.get(dataset) if dataset else None
        changes = override.spaces().get(mode, {}) if override else {}
        return {**self.search_space[mode], **changes}  # type: ignore[index]

    def resources_for(self, dataset: str) -> Resources:
        """The resources of a dataset's trials: `resources` with its overrides."""
        override = self.dataset_overrides.get(dataset)
        if override is None or not override.resources:
            return self.resources
        try:
            return Resources.model_validate({**self.resources.model_dump(), **override.resources})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"dataset_overrides.{dataset}.resources.{where}: {first['msg']}"
            ) from None

    def cell_spaces(self) -> dict[tuple[str, str], dict[str, SpaceValue]]:
        return {(m, d): self.space(m, d) for m in self.modes for d in self.datasets}

    @property
    def searches(self) -> bool:
        """False when every cell's hyperparameters are fixed: there is nothing to search, so
        the sweep goes straight to the final runs (the paper's fixed-hyperparameter grid)."""
        return any(is_distribution(v) for s in self.cell_spaces().values() for v in s.values())

    def as_dry_run(self) -> SweepSpec:
        """The same study through every layer at a tiny cost: one search trial per cell, one
        epoch, one seed, small batches (and the trials read 2 batches per pass). Its runs go
        to their own MLflow experiment, so they never mix with the real study's."""

        def tiny(space: dict[str, SpaceValue]) -> dict[str, int]:
            batch = min(candidates(space.get("batch_size", HYPERPARAMETERS["batch_size"])))
            return {"epochs": 1, "batch_size": min(int(batch), DRY_RUN_BATCH_SIZE)}

        raw = self.model_dump(mode="json")
        raw.update(name=f"{self.name}-dryrun", dry_run=True, seeds=self.seeds[:1])
        raw["search"]["trials_per_cell"] = 1
        # the first enqueued configuration still runs, with the dry run's epochs and batches
        raw["search"]["enqueue"] = [
            {k: v for k, v in e.items() if k not in ("epochs", "batch_size")}
            for e in self.search.enqueue[:1]
        ]
        raw["early_stopping"]["scheduler"] = "none"
        raw["tracking"]["experiment"] = f"{self.tracking.experiment or self.name}-dryrun"
        for mode, space in self.search_space.items():
            raw["search_space"][mode].update(tiny(space))
        for dataset, override in self.dataset_overrides.items():
            for mode, space in override.spaces().items():
                raw["dataset_overrides"][dataset][mode].update(
                    {k: v for k, v in tiny(self.space(mode, dataset)).items() if k in space}
                )
        return SweepSpec.model_validate(raw)

    def dataset_root(self, dataset: str) -> str | None:
        """Where a file dataset lives (a local path or s3:// URI); None for packaged data."""
        if not is_file_dataset(dataset):
            return None
        if dataset in self.data_roots:
            return self.data_roots[dataset]
        if self.data_root is None:
            return None
        from sparse_transfer.storage import Storage

        return Storage(self.data_root).child(dataset)


def known(value: str, registry, kind: str) -> str:
    """`value` if the registry holds it; else an error listing the valid names."""
    if value not in registry:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(registry.names())}")
    return value


def _check_dataset_key(name: str, where: str) -> None:
    try:
        _known_dataset(name)
    except ValueError as err:
        raise ValueError(f"{where}.{name}: {err}") from None


def _check_unique(values: list, what: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise ValueError(f"{what}: duplicates {sorted(seen, key=str)}")
