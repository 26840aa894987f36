"""What the sweep core costs, measured side by side in one run (not a test: no pass/fail).

    .venv/bin/python benchmarks/sweep_core.py                 # every section, default sizes
    .venv/bin/python benchmarks/sweep_core.py overhead --trials 500 --repeats 3
    .venv/bin/python benchmarks/sweep_core.py driver --sizes 100 1000 10000
    .venv/bin/python benchmarks/sweep_core.py bytes

- overhead: wall seconds per trial of a sweep of short trials (each reports 4 epochs at once)
  against plain Ray Tune with OptunaSearch, ASHA and MLflowLoggerCallback on the same work and
  concurrency. The two sides are interleaved over `--repeats` runs; the median ratio is printed.
  The grid has 50 search trials per cell (10 cells at least: 200 cells at 10,000 trials), each
  with one final run; plain Tune runs as many trials in one study.
- driver: the driver's CPU seconds per trial for our bookkeeping alone (searcher, ledger,
  pruner, MLflow record into SQLite) at growing sweep sizes, with Tune's calls simulated: flat
  means nothing grows with the number of trials already run.
- scale: the driver's CPU per trial and resident memory at 1,000 and 100,000 simulated
  trials, each size in a fresh process (goal: both within 1.5x).
- segments: the objects a resume on another machine downloads, one per upload before the
  ledger's compaction and after it.
- bytes: bytes written to storage per trial-epoch of a ResNet-50 full-finetuning trial, and the
  checkpoint time as a share of epoch time, old policy (every epoch, masks included, hashed,
  uploaded on the training thread) against the new one (an interval and the rung epochs, no
  masks, uploaded in the background).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "600")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
EPOCHS = 4


# -- overhead ------------------------------------------------------------------------------


def _cells(trials: int) -> int:
    """Cells of a grid of this size: 50 search trials each (the paper has about 4), 10 at least."""
    return max(10, trials // 50)


def _ours(trials: int, concurrency: int, root: Path) -> float:
    from ledger_helpers import stand_in, unstarted
    from sweep_helpers import small_spec

    from sparse_transfer.sweep import runner

    cells = _cells(trials)
    spec = small_spec(
        root,
        None,
        upstream=[
            {
                "name": f"u{i}",
                "arch": "quickstart_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "zoo": "quickstart/dense",
            }
            for i in range(cells)
        ],
        modes=["linear"],
        seeds=[0],
        search_space={
            "linear": {
                "lr": {"distribution": "loguniform", "low": 0.001, "high": 0.2},
                "epochs": EPOCHS,
            }
        },
        search={"trials_per_cell": trials // cells, "max_concurrent_trials": concurrency},
        early_stopping={"scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    (root / "epochs").mkdir()
    trainable = stand_in({}, root / "epochs")
    runner._trainable = lambda spec: trainable
    planned, state = unstarted(spec, root, "bench")
    sweep_id = state.sweep_id
    ledger_dir = state.sweep_dir
    from sparse_transfer.sweep.ledger import Ledger

    started = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            ledger = Ledger(ledger_dir, state.store, ("sweeps", sweep_id), sweep_id)
            try:
                search = runner._run_tune(state, spec, planned, ledger, log=lambda _: None)
            finally:
                ledger.close()
            runner._recorder(state).drain()  # every record in MLflow, inside the timing
        finally:
            sys.stdout = stdout
    elapsed = time.perf_counter() - started
    assert search.finished, "the sweep did not finish"
    done = sum(p.done for p in search.plans)
    assert done == trials, f"{done} search trials told, not {trials}"
    return elapsed / (trials + cells)  # search trials and one final run per cell


def _plain(trials: int, concurrency: int, root: Path) -> float:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict) -> None:
        for epoch in range(1, EPOCHS + 1):
            tune.report({"epoch": epoch, "val_top1": 500 * config["lr"] * epoch / EPOCHS})

    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(0.001, 0.2)},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="val_top1", mode="max", seed=0),
            scheduler=ASHAScheduler(
                time_attr="epoch", metric="val_top1", mode="max", max_t=EPOCHS, grace_period=1
            ),
            num_samples=trials + _cells(trials),
            max_concurrent_trials=concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(root / "plain"),
            callbacks=[
                MLflowLoggerCallback(
                    tracking_uri=f"sqlite:///{root / 'plain.db'}", experiment_name="plain"
                )
            ],
            verbose=0,
        ),
    )
    started = time.perf_counter()
    tuner.fit()
    return (time.perf_counter() - started) / (trials + _cells(trials))


def overhead(trials: int, repeats: int, concurrency: int) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ratios = []
    for run in range(repeats):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            sides = [("ours", _ours, Path(a)), ("plain", _plain, Path(b))]
            if run % 2:  # interleave: each side goes first half of the time
                sides.reverse()
            seconds = {name: fn(trials, concurrency, root) for name, fn, root in sides}
        ratios.append(seconds["ours"] / seconds["plain"])
        print(
            f"overhead run {run + 1}/{repeats}: {trials} trials, concurrency {concurrency}: "
            f"ours {seconds['ours']:.3f} s/trial, plain Tune+OptunaSearch+MLflowLoggerCallback "
            f"{seconds['plain']:.3f} s/trial, ratio {ratios[-1]:.2f}",
            flush=True,
        )
    print(
        f"overhead: median ratio ours/plain over {repeats} runs: {statistics.median(ratios):.2f}"
    )
    ray.shutdown()


# -- driver CPU per trial -------------------------------------------------------------------


def driver(sizes: list[int], record_mlflow: bool) -> None:
    import optuna
    from ledger_helpers import bare_search, drive

    from sparse_transfer.config.space import LogUniform
    from sparse_transfer.sweep.cells import Cell

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_cell = 4
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            cells = [
                Cell(f"u{i}", "digits_5to9", "linear", "quickstart_cnn", "dense", 0.0, "x")
                for i in range(size // per_cell)
            ]
            space = {
                "lr": LogUniform(distribution="loguniform", low=0.001, high=0.2),
                "epochs": EPOCHS,
            }
            search = bare_search(
                root,
                cells,
                space,
                record=record_mlflow,
                start=False,  # inside the timing
                trials_per_cell=per_cell,
                max_concurrent=8,
                max_failures_per_cell=3,
                pruner=lambda: optuna.pruners.SuccessiveHalvingPruner(
                    min_resource=1, reduction_factor=2
                ),
                save_epochs=[1, 2],
            )
            with open(os.devnull, "w") as quiet:
                stdout, sys.stdout = sys.stdout, quiet
                started = time.process_time()
                search.start()
                done = drive(
                    search,
                    lambda config, epoch: {
                        "epoch": epoch,
                        "val_top1": 500 * config["hparams"]["lr"] * epoch / EPOCHS,
                    },
                )
                if record_mlflow:  # the outbox's thread sends on: count all its work
                    search.events.recorder.drain()
                cpu = time.process_time() - started
                sys.stdout = stdout
            search.ledger.close()
            size_bytes = (root / "ledger.jsonl").stat().st_size
            what = "searcher+ledger+pruner+MLflow" if record_mlflow else "searcher+ledger+pruner"
            print(
                f"driver ({what}): {done} trials: {1000 * cpu / done:.2f} ms CPU per trial, "
                f"ledger {size_bytes / done:.0f} bytes per trial",
                flush=True,
            )


# -- scale: memory and CPU per trial at 1,000 against 100,000 trials -------------------------


def _scale_one(size: int) -> None:
    """One size in a fresh process: the driver's CPU per trial (searcher, ledger, pruner) and
    its resident memory at the end, printed as one JSON line."""
    import json
    import resource

    import optuna
    from ledger_helpers import bare_search, drive

    from sparse_transfer.config.space import LogUniform
    from sparse_transfer.sweep.cells import Cell

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_cell = 4
    with tempfile.TemporaryDirectory() as tmp:
        cells = [
            Cell(f"u{i}", "digits_5to9", "linear", "quickstart_cnn", "dense", 0.0, "x")
            for i in range(size // per_cell)
        ]
        space = {"lr": LogUniform(distribution="loguniform", low=0.001, high=0.2), "epochs": 4}
        search = bare_search(
            Path(tmp),
            cells,
            space,
            record=False,
            start=False,
            trials_per_cell=per_cell,
            max_concurrent=8,
            max_failures_per_cell=3,
            pruner=None,
        )
        base_rss = _rss_mb()
        started = time.process_time()
        search.start()
        done = drive(
            search,
            lambda config, epoch: {
                "epoch": epoch,
                "val_top1": 100 * config["hparams"]["lr"] * epoch,
            },
        )
        cpu = time.process_time() - started
        rss = _rss_mb()
        search.ledger.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "trials": done,
                "cpu_ms": 1000 * cpu / done,
                "rss_mb": rss,
                "grown_mb": rss - base_rss,
                "peak_mb": peak,
            }
        ),
        flush=True,
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def scale(sizes: list[int]) -> None:
    import json
    import subprocess

    found = {}
    for size in sizes:
        out = (
            subprocess.run(
                [sys.executable, __file__, "_scale_one", "--sizes", str(size)],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        found[size] = json.loads(out)
        f = found[size]
        print(
            f"scale: {f['trials']} trials: {f['cpu_ms']:.2f} ms CPU per trial, resident "
            f"{f['rss_mb']:.0f} MB ({f['grown_mb']:.0f} MB grown while driving)",
            flush=True,
        )
    small, large = found[min(sizes)], found[max(sizes)]
    print(
        f"scale: {large['trials']} against {small['trials']} trials: CPU per trial x"
        f"{large['cpu_ms'] / small['cpu_ms']:.2f}, resident memory x"
        f"{large['rss_mb'] / small['rss_mb']:.2f} (goal: both within 1.5)",
        flush=True,
    )


def segments(uploads: int) -> None:
    """Objects a cross-machine resume downloads: one per upload before, after compaction."""
    import pytest
    from s3_helpers import s3_server

    from sparse_transfer.storage import Storage
    from sparse_transfer.sweep.ledger import LedgerBackend, fetch_ledger

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        server = s3_server(patch, Path(tmp))
        s3 = next(server)
        try:
            parts = ("sweeps", "s")
            store = Storage(s3.uri("bench"))
            backend = LedgerBackend(store.local(*parts, "ledger.jsonl"), store, parts)
            for n in range(uploads):
                backend.append_logs([{"op_code": 0, "n": n}])
                backend.sync()
            before = len(store.list_objects(*parts, "ledger"))
            backend.close()
            after = len(store.list_objects(*parts, "ledger"))
            fresh = Storage(s3.uri("bench"))
            fetch_ledger(fresh, parts, Path(tmp) / "fresh" / "ledger.jsonl")
            print(
                f"segments: {uploads} uploads: {before} objects for a resume to download "
                f"before the ledger closed, {after} after its compaction",
                flush=True,
            )
        finally:
            next(server, None)


# -- bytes and checkpoint share -----------------------------------------------------------


def bytes_and_share(images: int, epochs: int, interval_s: float) -> None:
    import torch

    from sparse_transfer.models import ARCHS
    from sparse_transfer.pruning import global_magnitude_masks, prunable_weights
    from sparse_transfer.transfer.loop import make_optimizer, train_step

    torch.set_num_threads(2)
    model = ARCHS.get("resnet50").build(num_classes=10)
    masks = global_magnitude_masks(prunable_weights(model, exclude=("fc",)), 0.9)
    hp = {"lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4}
    optimizer = make_optimizer(model.parameters(), hp)
    x, y = torch.randn(8, 3, 224, 224), torch.randint(0, 10, (8,))
    train_step(model, x, y, optimizer, masks=masks)  # momentum buffers exist from here on
    started = time.perf_counter()
    steps = max(1, images // 8)
    for _ in range(steps):
        train_step(model, x, y, optimizer, masks=masks)
    epoch_s = time.perf_counter() - started

    def serialized(state: dict) -> tuple[int, float]:
        started = time.perf_counter()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        return len(data), time.perf_counter() - started, data

    base = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}
    old_bytes, old_save_s, data = serialized({**base, "masks": masks})
    started = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    old_save_s += time.perf_counter() - started  # the old code hashed before uploading
    new_bytes, new_save_s, _ = serialized(base)
    for label, seconds in (("this CPU", epoch_s), ("a GPU epoch of 1 s (projection)", 1.0)):
        rung_epochs = 3  # e.g. grace 10, x3: 10, 30, 90 of 150 epochs
        old_saves = epochs
        new_saves = min(epochs, rung_epochs + int(epochs * seconds / interval_s))
        train = epochs * seconds
        print(
            f"bytes: ResNet-50 full finetuning, {images} images/epoch on {label} "
            f"({seconds:.2f} s/epoch), {epochs} epochs: old policy {old_bytes / 1e6:.0f} MB "
            f"x {old_saves} saves = {old_bytes * old_saves / epochs / 1e6:.0f} MB per "
            f"trial-epoch, checkpoint {100 * old_save_s * old_saves / train:.1f}% of epoch "
            f"time (upload not counted); new policy {new_bytes / 1e6:.0f} MB x {new_saves} "
            f"saves = {new_bytes * new_saves / epochs / 1e6:.1f} MB per trial-epoch, "
            f"checkpoint {100 * new_save_s * new_saves / train:.2f}% (upload in background)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "section", nargs="*", default=["overhead", "driver", "bytes", "scale", "segments"]
    )
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--no-mlflow", action="store_true", help="driver: leave MLflow out")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--uploads", type=int, default=200, help="segments: uploads")
    args = parser.parse_args()
    if "_scale_one" in args.section:
        _scale_one(args.sizes[0])
        return
    if "scale" in args.section:
        scale(
            args.sizes if len(args.sizes) > 1 and "driver" not in args.section else [1000, 100000]
        )
    if "segments" in args.section:
        segments(args.uploads)
    if "driver" in args.section:
        driver(args.sizes, not args.no_mlflow)
    if "bytes" in args.section:
        bytes_and_share(args.images, epochs=150, interval_s=180)
    if "overhead" in args.section:
        overhead(args.trials, args.repeats, args.concurrency)


if __name__ == "__main__":
    main()
