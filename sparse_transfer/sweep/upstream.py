"""Before any compute: resolve each upstream model of a spec to a checkpoint file (building
zoo entries, fetching and converting published checkpoints), and check every dataset root."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.config import SweepSpec
from sparse_transfer.data.paper import PAPER_DATASETS
from sparse_transfer.models import ARCHS, load_upstream, save_upstream
from sparse_transfer.models.catalog import CATALOG
from sparse_transfer.models.checkpoint import file_sha256
from sparse_transfer.models.errors import CheckpointError
from sparse_transfer.models.fetch import fetch
from sparse_transfer.models.loading import load_entry, to_upstream
from sparse_transfer.pruning import prunable_weights, sparsity_report
from sparse_transfer.storage import Storage
from sparse_transfer.zoo import RANDOM_WEIGHTS, RECIPES, ensure_entry, recipe_of

__all__ = ["PreflightError", "check_data_roots", "resolve_upstreams"]


class PreflightError(ValueError):
    """Bad input found before any trial ran; the message names the spec key and the file."""


# How far a checkpoint's measured sparsity may sit from the spec's declared one.
DECLARED_SPARSITY_TOLERANCE = 0.005


def resolve_upstreams(
    spec: SweepSpec, store: Storage, log=print, *, speed_only: bool = False
) -> dict[str, tuple[Path, str]]:
    """name -> (local checkpoint path, its key inside the storage or ""). A zoo entry of
    random weights (built for speed only) is refused unless `speed_only`: transfer from
    weights that learned nothing is not the study, and its accuracy must never be reported."""
    paths = {}
    for index, upstream in enumerate(spec.upstream):
        where = f"upstream[{index}] ({upstream.name})"
        key = ""
        if upstream.catalog:
            paths[upstream.name] = _catalog_in_storage(spec, upstream, store, where, log)
            continue
        if upstream.zoo and spec.zoo_dir:
            path = ensure_entry(Path(spec.zoo_dir).expanduser().resolve(), upstream.zoo, log=log)
        elif upstream.zoo:
            path, key = _zoo_in_storage(store, upstream.zoo, log)
        else:
            path = Path(upstream.checkpoint).expanduser().resolve()
            if not path.is_file():
                raise PreflightError(f"{where}.checkpoint: {path} does not exist")
        checkpoint = load_upstream(path)
        if checkpoint.metadata.get("weights") == RANDOM_WEIGHTS and not speed_only:
            raise PreflightError(
                f"{where}: {path} holds random weights pruned for a speed measurement only "
                f"(zoo {checkpoint.metadata.get('zoo')!r}, weights: random); transferring "
                "them is not a study. Time them with `sparse-transfer speed`, or point the "
                "upstream at trained weights"
            )
        if checkpoint.arch != upstream.arch:
            raise PreflightError(
                f"{where}.arch: spec says {upstream.arch!r}, "
                f"checkpoint {path} holds {checkpoint.arch!r}"
            )
        model = checkpoint.build_model()
        classifier = ARCHS.get(checkpoint.arch).classifier
        weights = prunable_weights(model, exclude=(classifier,))
        # a zoo entry's sparsity is that of the layers its pruning policy prunes (its masks)
        if "policy" in checkpoint.metadata:
            weights = {n: w for n, w in prunable_weights(model).items() if n in checkpoint.masks}
        measured = sparsity_report(weights)[0]
        if abs(measured - upstream.sparsity) > DECLARED_SPARSITY_TOLERANCE:
            raise PreflightError(
                f"{where}.sparsity: spec says {upstream.sparsity}, "
                f"checkpoint {path} measures {measured:.4f}"
            )
        paths[upstream.name] = (path, key)
    return paths


def _zoo_in_storage(store: Storage, name: str, log) -> tuple[Path, str]:
    """A zoo entry kept in the sweep storage: fetched if another machine built it, built and
    uploaded otherwise."""
    packaged = name.split("/", 1)[0] in RECIPES
    names = recipe_of(name).entry_names() if packaged else [name]
    files = [f"{entry}{suffix}" for entry in names for suffix in (".pt", ".json")]
    for file in files:
        store.download("zoo", *file.split("/"))
    path = ensure_entry(store.local("zoo"), name, log=log)
    for file in files:
        if not store.exists("zoo", *file.split("/")):
            store.upload("zoo", *file.split("/"))
    return path, f"zoo/{name}.pt"


def _catalog_in_storage(spec: SweepSpec, upstream, store: Storage, where: str, log):
    """A published checkpoint, fetched (once per node), verified against its catalog entry and
    kept in the sweep storage in the project's format, so every node reads the converted file
    instead of fetching and converting again."""
    entry = CATALOG.get(upstream.catalog)
    source = upstream.checkpoint or entry.source
    if source is None:
        source = Storage(spec.checkpoint_root).child(f"{entry.name}.pth")
    try:
        local = fetch(source, sha256=entry.sha256)
        digest = file_sha256(local)
        name = f"{entry.name}-{digest[:16]}.pt"
        if not store.download("upstream", name):
            log(f"{where}: converting {source} ({entry.name})")
            save_upstream(
                store.local("upstream", name), to_upstream(load_entry(entry, path=local))
            )
            store.upload("upstream", name)
    except (CheckpointError, OSError) as err:
        key = "checkpoint" if upstream.checkpoint or entry.source else "checkpoint_root"
        raise PreflightError(f"{where}.{key}: {err}") from None
    return store.local("upstream", name), f"upstream/{name}"


def check_data_roots(spec: SweepSpec) -> None:
    """Every file dataset's root holds the splits the sweep reads (an S3 prefix: has objects),
    so a typo fails now and not in the first trial of a cluster run."""
    splits = ("train", "val", "trainval", "test") if spec.searches else ("trainval", "test")
    for dataset in spec.datasets:
        root = spec.dataset_root(dataset)
        if root is None:
            continue
        key = f"data_roots.{dataset}" if dataset in spec.data_roots else "data_root"
        try:
            if root.startswith("s3://"):
                if not Storage(root).exists():
                    raise FileNotFoundError(f"dataset {dataset!r}: nothing under {root}")
                continue
            for split in splits:
                PAPER_DATASETS.get(dataset).open(root, split)
        except (OSError, ValueError) as err:
            raise PreflightError(f"{key}: {err}") from None
