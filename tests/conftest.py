"""Shared fixtures: a real local Ray runtime and a real MLflow SQLite store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from skip_guard import pytest_runtest_makereport  # noqa: F401  (a hook: see skip_guard)

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(items):
    """The slow end-to-end files first (a stable sort: files keep their order): `make test`
    hands whole files to its workers in this order, so the longest start early rather than
    finishing the run on one worker while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def ray_runtime():
    """One real local Ray instance for the in-process sweep tests (2 CPUs, like CI)."""
    import ray

    ray.init(  # "local": never a cluster another test started (see tests/sweep/test_ray_address)
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """The quickstart zoo, built once per test session (a few seconds) and shared."""
    from sparse_transfer.zoo import QUICKSTART_RECIPE, ensure_entry

    path = tmp_path_factory.mktemp("zoo")
    for name in QUICKSTART_RECIPE.entry_names():
        ensure_entry(path, name, log=lambda _: None)
    return path
