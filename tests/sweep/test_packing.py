"""Packing trials onto GPUs: a dataset's own resources, and final runs longest first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ledger_helpers import bare_search
from ray.tune.trainable import wrap_function
from sweep_helpers import small_spec

from sparse_transfer.config import SpecError
from sparse_transfer.sweep import runner
from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.finals import FinalQueue, final_run_cost


def cell(dataset: str) -> Cell:
    return Cell("dense", dataset, "full", "resnet50", "dense", 0.0, "x.pt", data_root="/d")


def test_the_final_queue_takes_the_largest_cost_and_the_earliest_of_equals():
    waiting = FinalQueue()
    for arrival, cost in enumerate([3, 1, 4, 1, 5, 9, 2, 6, 9]):
        waiting.add(arrival, cost)
    order = [waiting.take() for _ in range(9)]
    assert order == [5, 8, 7, 4, 2, 0, 6, 1, 3] and not waiting  # arrivals, by cost
    assert final_run_cost("pets", 10) == 36_800 > final_run_cost("flowers102", 10) == 20_400
    assert final_run_cost("digits_5to9", 7) == 7  # no known size: epochs still rank


def test_final_runs_start_longest_first(tmp_path):
    """epochs x training images: pets (3,680) before flowers102 (2,040) at equal epochs, and
    flowers102 at 100 epochs before pets at 10."""
    cells = [cell("flowers102"), cell("pets"), cell("digits_5to9")]
    search = bare_search(
        tmp_path, cells, {"epochs": 10}, record=False, seeds=[0], max_concurrent=10
    )
    started = [search.suggest(f"t{i}")["trial"]["dataset"] for i in range(3)]
    assert started == ["pets", "flowers102", "digits_5to9"]  # arrival order was flowers102 first


def test_final_run_order_reads_each_cells_epochs(tmp_path):
    cells = [cell("pets"), cell("flowers102")]
    search = bare_search(
        tmp_path, cells, {"epochs": 10}, record=False, start=False, seeds=[0], max_concurrent=9
    )
    search.plans[1].fixed = {**search.plans[1].fixed, "epochs": 100}  # shared by equal spaces
    search.start()
    assert [search.suggest(f"t{i}")["trial"]["dataset"] for i in range(2)] == [
        "flowers102",
        "pets",
    ]


def spec_with(tmp_path, overrides: dict):
    return small_spec(
        tmp_path,
        None,
        resources={"cpu": 2, "gpu": 1, "precision": "fp32-strict"},
        dataset_overrides=overrides,
    )


def test_dataset_overrides_set_a_datasets_resources(tmp_path):
    spec = spec_with(tmp_path, {"digits_5to9": {"resources": {"gpu": 0.25, "cpu": 1}}})
    assert spec.resources_for("digits_5to9").gpu == 0.25
    assert spec.resources_for("digits_5to9").precision == "fp32-strict"  # the rest is kept
    base = runner._base_config(SimpleNamespace(storage="s", sweep_id="x"), spec)
    search = bare_search(
        tmp_path, [cell("digits_5to9")], {"epochs": 1}, record=False, start=False, seeds=[0]
    )
    search.base_config = base
    search.start()
    config = search.suggest("t0")
    trial = config["trial"]
    assert (trial["gpu"], trial["cpus"], trial["precision"]) == (0.25, 1, "fp32-strict")
    request = wrap_function(runner._trainable(spec)).default_resource_request(config)
    assert request.required_resources == {"CPU": 1, "GPU": 0.25}


def test_a_datasets_resources_are_validated_by_name(tmp_path):
    with pytest.raises(
        (SpecError, ValueError), match=r"dataset_overrides\.digits_5to9\.resources\.gpu"
    ):
        spec_with(tmp_path, {"digits_5to9": {"resources": {"gpu": -1}}})
    with pytest.raises((SpecError, ValueError), match="precision"):
        spec_with(tmp_path, {"digits_5to9": {"resources": {"precision": "tf32"}}})
