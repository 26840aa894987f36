"""Resolve each upstream model of a spec to a checkpoint file, building zoo entries if needed."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.config import SweepSpec
from sparse_transfer.models import ARCHS, load_upstream
from sparse_transfer.pruning import prunable_weights, sparsity_report
from sparse_transfer.zoo import ensure_entry

__all__ = ["resolve_upstreams"]

# How far a checkpoint's measured sparsity may sit from the spec's declared one.
DECLARED_SPARSITY_TOLERANCE = 0.005


def resolve_upstreams(spec: SweepSpec, zoo_dir: Path, log=print) -> dict[str, Path]:
    paths = {}
    for index, upstream in enumerate(spec.upstream):
        where = f"upstream[{index}] ({upstream.name})"
        if upstream.zoo:
            path = ensure_entry(zoo_dir, upstream.zoo, log=log)
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
        paths[upstream.name] = path
    return paths
