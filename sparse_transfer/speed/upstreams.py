"""The upstream models of a sweep or zoo spec, each resolved to a checkpoint file, or to why
it could not be (one bad upstream never stops the others)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sparse_transfer.config import load_spec
from sparse_transfer.config.loader import read_yaml
from sparse_transfer.config.zoo_spec import load_zoo_spec

__all__ = ["SpeedUpstream", "SpecUpstreams", "resolve_spec"]


@dataclass
class SpeedUpstream:
    name: str
    arch: str
    method: str
    sparsity: float
    source: str  # zoo:<entry>, catalog:<name>, or the checkpoint's path
    path: Path | None = None
    error: str = ""  # set when it could not be loaded: names the upstream and the step


@dataclass
class SpecUpstreams:
    name: str  # the spec's name
    storage: str
    tracking_uri: str | None
    upstreams: list[SpeedUpstream]


def resolve_spec(path: Path, overrides: list[str], log=print) -> SpecUpstreams:
    """A zoo spec (a mapping with `entries`) or a sweep spec; raises config.SpecError when
    the spec is invalid."""
    raw = read_yaml(Path(path), "spec")
    if isinstance(raw, dict) and "entries" in raw:
        return _zoo_upstreams(path, overrides, log)
    return _sweep_upstreams(path, overrides, log)


def _zoo_upstreams(path: Path, overrides: list[str], log) -> SpecUpstreams:
    from sparse_transfer.storage import Storage
    from sparse_transfer.zoo import build_zoo, entry_path

    zoo = load_zoo_spec(path, overrides)
    store = Storage(zoo.storage)
    for name in zoo.entry_names():
        for suffix in (".pt", ".json"):
            store.download("zoo", *f"{name}{suffix}".split("/"))
    build_zoo(zoo, store.local("zoo"), log=log)
    upstreams = [
        SpeedUpstream(
            name=entry.entry,
            arch=zoo.arch,
            method=entry.method,
            sparsity=entry.sparsity,
            source=f"zoo:{zoo.name}/{entry.entry}",
            path=entry_path(store.local("zoo"), f"{zoo.name}/{entry.entry}"),
        )
        for entry in zoo.entries
    ]
    return SpecUpstreams(zoo.name, zoo.storage, zoo.tracking.uri, upstreams)


def _sweep_upstreams(path: Path, overrides: list[str], log) -> SpecUpstreams:
    from sparse_transfer.models.errors import CheckpointError
    from sparse_transfer.storage import Storage
    from sparse_transfer.sweep.upstream import resolve_upstreams

    spec = load_spec(path, overrides)
    store = Storage(spec.storage)
    _build_shipped_zoos(spec, store, log)
    upstreams = []
    for upstream in spec.upstream:
        found = SpeedUpstream(
            upstream.name, upstream.arch, upstream.method, upstream.sparsity, upstream.source
        )
        try:
            one = spec.model_copy(update={"upstream": [upstream]})
            found.path = resolve_upstreams(one, store, log=log, speed_only=True)[upstream.name][0]
        except (CheckpointError, KeyError, OSError, ValueError) as err:
            message = err.args[0] if err.args else err
            found.error = f"upstream {upstream.name!r}, step 'load': {message}"
        upstreams.append(found)
    return SpecUpstreams(spec.name, spec.storage, spec.tracking.uri, upstreams)


def _build_shipped_zoos(spec, store, log) -> None:
    """Build the zoos of the spec's zoo entries that a zoo spec under ./sweeps describes and
    that are not built yet (what `sparse-transfer zoo build` would do first)."""
    from sparse_transfer.zoo import RECIPES, build_zoo, entry_path

    zoo_dir = Path(spec.zoo_dir).expanduser() if spec.zoo_dir else store.local("zoo")
    wanted = {u.zoo.split("/", 1)[0] for u in spec.upstream if u.zoo}
    missing = {
        name
        for name in wanted - set(RECIPES)
        if any(
            not entry_path(zoo_dir, u.zoo).is_file()
            for u in spec.upstream
            if u.zoo and u.zoo.startswith(f"{name}/")
        )
    }
    for zoo_file in sorted(Path("sweeps").glob("zoo_*.y*ml")) if missing else []:
        try:
            zoo = load_zoo_spec(zoo_file)
        except Exception:  # a broken spec elsewhere is not this command's business
            continue
        if zoo.name in missing:
            log(f"building zoo {zoo.name} ({zoo_file})")
            build_zoo(zoo, zoo_dir, log=log)
