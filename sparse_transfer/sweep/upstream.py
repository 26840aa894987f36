"""Resolve each upstream model of a spec to a checkpoint file, building zoo entries if needed."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.config import SweepSpec
from sparse_transfer.models import ARCHS, load_upstream
from sparse_transfer.pruning import prunable_weights, sparsity_report
from sparse_transfer.storage import Storage
from sparse_transfer.zoo import RECIPES, ensure_entry, recipe_of

__all__ = ["resolve_upstreams"]

# How far a checkpoint's measured sparsity may sit from the spec's declared one.
DECLARED_SPARSITY_TOLERANCE = 0.005


def resolve_upstreams(spec: SweepSpec, store: Storage, log=print) -> dict[str, tuple[Path, str]]:
    """name -> (local checkpoint path, its key inside the storage or "")."""
    paths = {}
    for index, upstream in enumerate(spec.upstream):
        where = f"upstream[{index}] ({upstream.name})"
        key = ""
        if upstream.zoo and spec.zoo_dir:
            path = ensure_entry(Path(spec.zoo_dir).expanduser().resolve(), upstream.zoo, log=log)
        elif upstream.zoo:
            path, key = _zoo_in_storage(store, upstream.zoo, log)
        else:
            path = Path(upstream.checkpoint).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"{where}.checkpoint: {path} does not exist")
        checkpoint = load_upstream(path)
        if checkpoint.arch != upstream.arch:
            raise ValueError(
                f"{where}.arch: spec says {upstream.arch!r}, "
                f"checkpoint {path} holds {checkpoint.arch!r}"
            )
        model = checkpoint.build_model()
        classifier = ARCHS.get(checkpoint.arch).classifier
        measured = sparsity_report(prunable_weights(model, exclude=(classifier,)))[0]
        if abs(measured - upstream.sparsity) > DECLARED_SPARSITY_TOLERANCE:
            raise ValueError(
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
