"""A real sweep core (local Ray Tune, ledger, MLflow) around a stand-in for the transfer loop:
trials that take milliseconds and do exactly what a test needs (fail, diverge, lose their
worker, take their time, write big states). Shared by the core, fault and benchmark code."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

from sweep_helpers import small_spec

from sparse_transfer.config import dump_spec
from sparse_transfer.sweep import runner
from sparse_transfer.sweep.cells import plan_cells
from sparse_transfer.tracking import SweepRecorder


def stand_in(behaviour: dict, log_dir: Path):
    """The real trainable with `run_transfer` replaced by a loop whose score rises with lr.
    `behaviour` maps a cell id to what its search trials do: "raise", "diverge", "slow:<s>"
    (seconds per epoch), "die" (the worker process exits at epoch 3 of Optuna trial 1, once),
    "big" (1 MB states); the key "<cell>@final" says what its final runs do."""

    def trainable(config: dict) -> None:
        import torch

        import sparse_transfer.sweep.trainable as real
        from sparse_transfer.transfer import EpochOutcome

        def run_transfer(settings, resume):
            cell = settings["cell"]
            what = behaviour.get(cell if settings["phase"] == "search" else f"{cell}@final", "")
            hp = settings["hparams"]
            epochs, start = int(hp["epochs"]), int(resume["epoch"]) if resume else 0
            for epoch in range(start + 1, epochs + 1):
                with open(log_dir / f"{settings['key']}.epochs", "a") as handle:
                    handle.write(f"{epoch}\n")
                if what.startswith("raise"):  # "raise:<s>": after <s> seconds
                    time.sleep(float(what[6:] or 0))
                    raise ValueError("bad data in this cell")
                if what.startswith("slow:"):
                    time.sleep(float(what[5:]))
                flag = log_dir / f"{settings['key']}.died"
                dies = what == "die" and settings.get("optuna_trial") == 1 and epoch == 3
                if dies and not flag.exists():
                    flag.touch()
                    os._exit(1)  # a reclaimed node: no clean-up, no goodbye
                score = min(100.0, 500 * float(hp["lr"]) * epoch / epochs)
                loss = float("nan") if what == "diverge" else 1.0 / epoch
                prefix = "val" if settings["phase"] == "search" else "test"
                metrics = {"epoch": epoch, "train_loss": loss, f"{prefix}_top1": score}

                size = 262144 if what == "big" else 2  # "big": a 1 MB state

                def state(e=epoch, size=size):
                    return {"epoch": e, "model": {"w": torch.full((size,), float(e))}}

                yield EpochOutcome(epoch, metrics, state, done=epoch == epochs)

        real.run_transfer = run_transfer
        real._job = lambda settings, store: settings
        real.transfer_trainable(config)

    return trainable


class _Silent:
    """TrialEvents that record nothing: the searcher's own cost, without MLflow's."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def bare_search(
    root: Path,
    cells: list,
    space: dict,
    *,
    record: bool = True,
    start: bool = True,
    outbox: str = "outbox",
    **settings,
):
    """The real searcher over the real ledger and MLflow record (SQLite and its outbox under
    `root`), with no Tune: the caller makes Tune's calls (suggest, record, on_trial_complete),
    so it decides which trial dies or reports when. `settings` override Settings' defaults;
    another `outbox` name is another machine's disk."""
    from sparse_transfer.storage import Storage
    from sparse_transfer.sweep.events import TrialEvents
    from sparse_transfer.sweep.ledger import Ledger
    from sparse_transfer.sweep.plans import Settings
    from sparse_transfer.sweep.search import CellSearch

    defaults = {
        "trials_per_cell": 1,
        "max_concurrent": 1,
        "max_failures_per_cell": 0,
        "sampler": "tpe",
        "seed": 0,
        "metric": "val_top1",
        "seeds": [],
        "pruner": None,
    }
    ledger = Ledger(root, None, (), "s")
    events = _Silent()
    if record:
        recorder = SweepRecorder(f"sqlite:///{root / 'mlflow.db'}", "e", "s", root / outbox)
        events = TrialEvents(
            recorder,
            ledger,
            parent_run_id=recorder.parent_run({}),
            commit="",
            store=Storage(str(root / "store")),
            sweep_id="s",
            totals={"search": len(cells) * settings.get("trials_per_cell", 1), "final": 0},
            metric="val_top1",
        )
    spaces = {cell.id: space for cell in cells}
    search = CellSearch(ledger, cells, spaces, Settings(**{**defaults, **settings}), {}, events)
    if start:
        search.start()
    return search


def drive(search, result_of) -> int:
    """Tune's calls, made until the searcher is finished: each trial it hands out reports
    `result_of(config, epoch)` for each of its epochs, up to one where its cell's pruner stops
    it, then completes. The number of trials handed out."""
    handed = 0
    while not search.finished:
        live = []
        while (config := search.suggest(f"t{handed}")) not in (None, "FINISHED"):
            live.append((f"t{handed}", config["trial"]))
            handed += 1
        for trial_id, config in live:
            result = {}
            for epoch in range(1, int(config["hparams"]["epochs"]) + 1):
                result = result_of(config, epoch)
                if search.record(trial_id, result):
                    break
            search.on_trial_complete(trial_id, result)
    return handed


def make_sweep(tmp_path: Path, monkeypatch, behaviour: dict, **changes):
    """A fresh sweep over 2 upstream models x digits_5to9 x linear (2 cells), unstarted."""
    raw = {
        "modes": ["linear"],
        "seeds": [0, 1],
        "search_space": {
            "linear": {"lr": {"distribution": "loguniform", "low": 0.02, "high": 0.2}, "epochs": 4}
        },
        "search": {"trials_per_cell": 3, "max_concurrent_trials": 2},
        "early_stopping": {"scheduler": "none"},
        "resources": {"checkpoint_interval_s": 0},
        **changes,
    }
    spec = small_spec(tmp_path, None, **raw)
    log_dir = tmp_path / "epochs"
    log_dir.mkdir()
    trainable = stand_in(behaviour, log_dir)
    monkeypatch.setattr(runner, "_trainable", lambda spec: trainable)
    cells, state = unstarted(spec, tmp_path, f"small-{tmp_path.name}")
    return spec, cells, state, log_dir


def unstarted(spec, tmp_path: Path, sweep_id: str):
    """The cells and state of a sweep that is made (spec, cells, parent run) but not run."""
    cells = plan_cells(spec, {u.name: (tmp_path / f"{u.name}.pt", "") for u in spec.upstream})
    parent = SweepRecorder(spec.tracking.uri, "small", sweep_id).parent_run({})
    state = runner.SweepState(
        sweep_id, spec.storage, spec.tracking.uri, "small", parent, runner.RUNNING, ""
    )
    state.sweep_dir.mkdir(parents=True)
    (state.sweep_dir / runner.SPEC_FILE).write_text(dump_spec(spec))
    runner.save_cells(state.sweep_dir / runner.CELLS_FILE, cells)
    return cells, state


def go(state, spec, lines: list | None = None):
    log = (lambda line: lines.append(line)) if lines is not None else print
    return runner._continue(state, spec, address=None, log=log)


def ledger_failures(sweep_dir: Path) -> int:
    """Trials the ledger holds as FAIL, read from its file as the driver writes it."""
    path = sweep_dir / "ledger.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    return sum('"op_code":6' in line and '"state":3' in line for line in lines)


def finished_runs(db: Path, status: str = "FINISHED") -> int:
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(
                "SELECT count(*) FROM runs JOIN tags ON runs.run_uuid = tags.run_uuid "
                "WHERE tags.key = 'phase' AND tags.value = 'search' AND runs.status = ?",
                (status,),
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def interrupt_when(ready) -> threading.Thread:
    """Ctrl-C to this process once `ready()`: Tune stops its trials and returns."""

    def watch() -> None:
        while not ready():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
