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
    from ray.tune.execution import class_cache

    assert isinstance(class_cache.ENV_VARS_TO_PROPAGATE, set)


def test_the_journal_replay_the_ledger_subclasses_is_as_checked() -> None:
    """sweep/ledger.py's `_NamedReplay` replaces Optuna 5.1.0's `_apply_create_study`,
    extends its `_apply_create_trial` and `_apply_set_trial_param`, and replaces its
    storage's `__init__` and `create_new_study`, relying on these names."""
    import inspect

    from optuna.storages import JournalStorage
    from optuna.storages.journal import _storage

    replay = _storage.JournalStorageReplayResult("w-")
    for name in ("_studies", "_trials", "_study_id_to_trial_ids", "_next_study_id"):
        assert hasattr(replay, name), name
    for name in (
        "_apply_create_study",
        "_apply_delete_study",
        "_apply_create_trial",
        "_apply_set_trial_param",
        "_is_issued_by_this_worker",
    ):
        assert callable(getattr(replay, name)), name
    assert _storage.JournalOperation.CREATE_STUDY is not None
    init = inspect.getsource(JournalStorage.__init__)
    for name in ("_worker_id_prefix", "_backend", "_thread_lock", "_replay_result"):
        assert f"self.{name} =" in init, name  # what our __init__ sets in its place
    assert "BaseJournalSnapshot" in init  # the one step ours leaves out: no snapshots
