"""The private or version-fragile parts of Ray, Optuna and MLflow the code relies on (listed in
sparse_transfer/sweep/search.py) are there, in the versions pyproject.toml pins."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("package", ["ray", "optuna", "mlflow"])
def test_the_installed_version_is_the_pinned_one(package: str) -> None:
    pins = dict(re.findall(r'"([a-z]+)(?:\[[a-z]+\])?==([0-9.]+)"', PYPROJECT.read_text()))
    assert package in pins, f"{package} is not pinned in pyproject.toml"
    assert version(package) == pins[package]


def test_the_private_names_relied_on_exist(tmp_path) -> None:
    import optuna
    from ray.tune.execution import class_cache

    assert isinstance(class_cache.ENV_VARS_TO_PROPAGATE, set)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="s")
    (study,) = storage.get_all_studies()
    assert isinstance(study._study_id, int)
