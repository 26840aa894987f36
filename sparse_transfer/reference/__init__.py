"""Reference data shipped with the package: the paper's hyperparameters (and, in
`raw_results/`, its published per-run results), with the attribution in each file's header."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml

__all__ = ["IMAGENET_STATS", "RAW_RESULTS", "paper_hyperparameters", "paper_value"]


@cache
def paper_hyperparameters() -> dict:
    """The parsed `paper_hyperparameters.yaml`: per mode, the authors' settings."""
    return yaml.safe_load((files(__package__) / "paper_hyperparameters.yaml").read_text())


def paper_value(mode: str, dataset: str, name: str):
    """The paper's value of hyperparameter `name` for a (mode, dataset) cell; KeyError with
    the known names when the paper has no such mode or hyperparameter."""
    modes = paper_hyperparameters()["modes"]
    if mode not in modes:
        raise KeyError(f"the paper has no mode {mode!r}; it has {', '.join(modes)}")
    settings = {**modes[mode], **modes[mode]["dataset_overrides"].get(dataset, {})}
    if name not in settings or name == "dataset_overrides":
        raise KeyError(f"the paper's {mode} settings have no {name!r}")
    return settings[name]


IMAGENET_STATS = paper_hyperparameters()["imagenet_stats"]

# The paper's published per-run results as shipped in the package: the one copy that the report
# and the tests read. The package is installed as files (setuptools), so this is a real folder.
RAW_RESULTS = Path(str(files(__package__) / "raw_results"))
