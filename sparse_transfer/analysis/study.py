"""What the report says about the study besides its results, read from the spec saved with the
sweep: its description (the quickstart's smoke-scale caveat), which hyperparameters were
searched, and each upstream model's own accuracy where the zoo recorded it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = ["StudyContext", "study_context"]


@dataclass(frozen=True)
class StudyContext:
    description: str = ""
    # cell id ("<upstream>/<dataset>/<mode>") -> the hyperparameters searched there
    searched: dict[str, set[str]] = field(default_factory=dict)
    # (arch, method, sparsity) -> the upstream's own top-1 (%) on its validation split
    upstream_top1: dict[tuple[str, str, float], float] = field(default_factory=dict)
    objective: str = ""  # the validation metric the search maximised


def study_context(spec_text: str) -> StudyContext:
    """The context of a resolved spec's YAML; an empty one when it cannot be read (a report
    of what there is, never a failed report)."""
    try:
        raw = yaml.safe_load(spec_text) if spec_text else None
    except yaml.YAMLError:
        raw = None
    if not isinstance(raw, dict):
        return StudyContext()
    return StudyContext(
        description=str(raw.get("description") or ""),
        searched=_searched(raw),
        upstream_top1=_upstream_top1(raw),
        objective=str((raw.get("search") or {}).get("metric") or "val_top1"),
    )


def _searched(raw: dict) -> dict[str, set[str]]:
    from sparse_transfer.config import SpecError, parse_spec
    from sparse_transfer.config.space import is_distribution

    try:
        spec = parse_spec(raw, source="the saved spec")
    except SpecError:
        return {}
    searched = {}
    for (mode, dataset), space in spec.cell_spaces().items():
        names = {name for name, value in space.items() if is_distribution(value)}
        for upstream in spec.upstream:
            searched[f"{upstream.name}/{dataset}/{mode}"] = names
    return searched


def _upstream_top1(raw: dict) -> dict[tuple[str, str, float], float]:
    by_entry = _zoo_accuracies(raw)
    found = {}
    for upstream in raw.get("upstream") or []:
        value = by_entry.get(upstream.get("zoo") or "")
        if value is not None:
            key = (str(upstream["arch"]), str(upstream["method"]), float(upstream["sparsity"]))
            found[key] = float(value)
    return found


def _zoo_accuracies(raw: dict) -> dict[str, float]:
    """Zoo entry name -> its recorded `upstream_val_top1`, from the spec's zoo folder or the
    zoo in its storage (S3: fetched to this node)."""
    if not any((u or {}).get("zoo") for u in raw.get("upstream") or []):
        return {}
    try:
        if raw.get("zoo_dir"):
            root = Path(raw["zoo_dir"]).expanduser()
            entries = [json.loads(p.read_text()) for p in root.rglob("*.json")]
        elif raw.get("storage"):
            from sparse_transfer.storage import Storage
            from sparse_transfer.zoo import list_entries

            entries = list_entries(Storage(str(raw["storage"])))
        else:
            return {}
    except (OSError, ValueError):
        return {}
    return {
        str(e["name"]): float(e["upstream_val_top1"])
        for e in entries
        if isinstance(e, dict) and "name" in e and e.get("upstream_val_top1") is not None
    }
