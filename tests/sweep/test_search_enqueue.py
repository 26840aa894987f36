"""search.enqueue: the configurations a spec enqueues are the first trials of every cell's
Optuna study, once, also when the searcher is rebuilt over the same ledger."""

from __future__ import annotations

from dataclasses import replace

from sweep_helpers import small_spec

from sparse_transfer.config.spec import SweepSpec
from sparse_transfer.sweep import runner
from sparse_transfer.sweep.cells import plan_cells
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.sweep.search import CellSearch


class _Silent:  # the searcher's events (MLflow, console) are not what this test looks at
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _searcher(spec: SweepSpec, tmp_path) -> CellSearch:
    cells = plan_cells(spec, {u.name: (tmp_path / f"{u.name}.pt", "") for u in spec.upstream})
    settings = replace(runner._search_settings(spec, cells), max_concurrent=100)
    searcher = CellSearch(
        Ledger(tmp_path, None, (), "s1"),
        cells,
        {cell.id: spec.space(cell.mode, cell.dataset) for cell in cells},
        settings,
        {},
        _Silent(),
    )
    searcher.start()
    return searcher


def _spec(tmp_path) -> SweepSpec:
    raw = small_spec(tmp_path, None).model_dump(mode="json")
    raw["search"]["enqueue"] = [{"lr": 0.03}, {"lr": "paper"}]
    raw["search_space"]["full"]["lr"]["low"] = 0.001  # holds the paper's full lr, 0.001
    raw["search_space"]["linear"]["lr"]["low"] = 0.005  # ... and its linear lr, 0.01
    return SweepSpec.model_validate(raw)


def test_every_cells_first_trials_are_the_enqueued_configurations(tmp_path):
    spec = _spec(tmp_path)
    searcher = _searcher(spec, tmp_path)
    by_cell: dict[str, list[dict]] = {}
    for n in range(len(searcher.plans) * spec.search.trials_per_cell):
        trial = searcher.suggest(f"t{n}")["trial"]
        by_cell.setdefault(trial["cell"], []).append(trial["hparams"])
    assert len(by_cell) == 4
    for cell in (p.cell for p in searcher.plans):
        first, second, third = by_cell[cell.id]
        assert first["lr"] == 0.03
        # `paper`: the paper's lr for the cell's mode (full finetuning 0.001, linear 0.01)
        assert second["lr"] == (0.001 if cell.mode == "full" else 0.01)
        if cell.mode == "full":  # what an entry leaves out is sampled
            assert first["batch_size"] in (32, 64)
        assert third["lr"] not in (0.03, 0.01, 0.001)  # then the sampler takes over


def test_a_resumed_study_is_not_enqueued_again(tmp_path):
    spec = _spec(tmp_path)
    searcher = _searcher(spec, tmp_path)
    searcher.suggest("t0")  # the first cell asks its first trial
    searcher.ledger.close()
    again = _searcher(spec, tmp_path)  # a new driver over the same ledger
    study = again.studies.search(again.plans[0])
    waiting = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert len(study.trials) == 2 and len(waiting) == 1  # one asked, one still enqueued
