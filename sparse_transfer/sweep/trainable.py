"""The Tune trainable: one transfer trial, reporting every epoch, saving its state now and then.

A trial's files live in `<sweep>/trial_state/<trial key>/`, keyed by its ledger identity (not
Tune's trial id), so a trial handed to Tune again after a crash finds them:
- `state.pt`: everything needed to continue (never the masks of full finetuning: they are in
  the upstream file). Saved when `checkpoint_interval_s` has passed since the last save and at
  the epochs where early stopping decides, replaced atomically, uploaded in the background.
- `result.json`: the last epoch's result, written when the trial ends, so a trial whose end the
  driver never heard of reports it again instead of training again.
- `weights.safetensors`: a final run's weights, its MLflow artifact.
The driver removes the folder everywhere once the ledger holds the trial as told; a worker
removes its node's copies of folders that are gone from S3.

A trial that fails for its own reasons (a divergent loss, bad data, a full disk) reports the
failure as its result instead of raising: Tune's errors then mean only that a worker died, and
the search hands such a trial out again (see search.py).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import ray
import torch
from ray import tune

from sparse_transfer import metrics as M
from sparse_transfer.storage import Storage
from sparse_transfer.transfer import TransferJob, run_transfer

__all__ = [
    "RESULT_FILE",
    "STATE_FILE",
    "WEIGHTS_FILE",
    "Diverged",
    "remove_state",
    "state_parts",
    "transfer_trainable",
]

STATE_FILE = "state.pt"
RESULT_FILE = "result.json"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_CHECKPOINT_INTERVAL_S = 180.0


class Diverged(RuntimeError):
    """The training loss is NaN or infinite: no later epoch can recover."""


def state_parts(sweep_id: str, key: str, *name: str) -> tuple[str, ...]:
    return ("sweeps", sweep_id, "trial_state", key, *name)


def remove_state(store: Storage, parts: tuple[str, ...]) -> None:
    """A told trial's folder, gone from S3 and from this node."""
    store.remove(*parts)
    shutil.rmtree(store.local(*parts), ignore_errors=True)


def transfer_trainable(config: dict) -> None:
    settings = config["trial"]
    torch.set_num_threads(max(1, int(settings.get("threads", 1))))
    store = Storage(settings["storage"])
    folder = state_parts(settings["sweep_id"], settings["key"])
    with _held(store, settings["sweep_id"], settings["key"]):  # this node's clean-up skips it
        store.local(*folder).mkdir(parents=True, exist_ok=True)
        _clean_node_cache(store, settings["sweep_id"], keep=settings["key"])
        _run(settings, store, folder)


def _lock_path(store: Storage, sweep_id: str, key: str) -> Path:
    """A trial folder's lock sits beside it, not in it: a clean-up that removes the folder
    while holding the lock cannot pull it from under a trial about to take it. The clean-up
    removes the lock file too, under the lock; a taker that finds it gone after taking it
    opens the new one (see `_held`)."""
    return store.local(*state_parts(sweep_id, f"{key}.lock"))


@contextmanager
def _held(store: Storage, sweep_id: str, key: str, wait: bool = True):
    """The folder's lock, held while the body runs; None instead if `wait` is False and
    another process holds it."""
    path = _lock_path(store, sweep_id, key)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield None
                return
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(lock.fileno()).st_ino:
                continue  # removed (and maybe made again) while we waited: lock the file there
            yield lock
            return


def _run(settings: dict, store: Storage, folder: tuple[str, ...]) -> None:
    node = _node()
    # Files are trusted only if they were written for this very configuration: a ledger that
    # lost its last segment in a crash hands the same trial key to a new configuration.
    digest = config_digest(settings)
    if store.download(*folder, RESULT_FILE):  # it ended before a crash: say so again
        result = json.loads(store.local(*folder, RESULT_FILE).read_text())
        if result.pop("config_digest", None) == digest:
            tune.report({**result, "node": node})
            return
    resume = None
    if store.download(*folder, STATE_FILE):
        resume = torch.load(
            store.local(*folder, STATE_FILE), map_location="cpu", weights_only=True
        )
        if resume.get("config_digest") != digest:
            resume = None
    saver = _StateSaver(store, folder, settings, digest)
    clock = _Clock(settings, resume.get("hours", {}) if resume else {})
    try:
        job = _job(settings, store)
        # the dataset as results carry it: a variant (birdsnap:official-split) is tagged so
        label = job.dataset_label() if hasattr(job, "dataset_label") else settings["dataset"]
        if resume and "result" in resume:
            # The state is saved before its epoch's result reaches the ledger, and a crash in
            # between loses that result: say it again, so early stopping decides on it.
            tune.report({**resume["result"], **clock.hours(), "node": node})
        for outcome in run_transfer(job, resume):
            loss = float(outcome.metrics.get(M.TRAIN_LOSS, 0.0))
            if not math.isfinite(loss):
                raise Diverged(f"train loss is {loss} after epoch {outcome.epoch}")
            metrics = {**outcome.metrics, **clock.hours(), "node": node, "dataset": label}
            if outcome.done:
                saver.finish(outcome, metrics, final=settings["phase"] == "final")
            else:
                saver.maybe_save(outcome, metrics)
            tune.report(metrics)
    except Diverged as err:
        tune.report({"failure": "diverged", "error": str(err), **clock.hours(), "node": node})
    except OSError as err:
        # A full disk is the node's, not the trial's: the sweep halts and resumes later from
        # the state file, which a failed write leaves whole.
        failure = "disk_full" if err.errno == errno.ENOSPC else "error"
        message = f"{type(err).__name__}: {err}"
        tune.report({"failure": failure, "error": message, **clock.hours(), "node": node})
    except Exception as err:  # the trial's own failure: told FAIL, never retried as is
        traceback.print_exc()
        message = f"{type(err).__name__}: {err}"
        tune.report({"failure": "error", "error": message, **clock.hours(), "node": node})
    finally:
        saver.close()


class _Clock:
    """GPU- and CPU-hours of the trial so far (carried over a resume in the saved state)."""

    def __init__(self, settings: dict, before: dict) -> None:
        self.gpus = float(settings.get("gpu", 0))
        self.cpus = float(settings.get("cpus", settings.get("threads", 1)))
        self.before = float(before.get("wall_h", 0.0))
        self.started = time.monotonic()

    def hours(self) -> dict[str, float]:
        wall = self.before + (time.monotonic() - self.started) / 3600
        return {"wall_h": wall, M.GPU_HOURS: wall * self.gpus, M.CPU_HOURS: wall * self.cpus}


class _StateSaver:
    """Saves on an interval and at early-stopping epochs; one background upload at a time,
    and a newer save supersedes a waiting one."""

    def __init__(
        self, store: Storage, folder: tuple[str, ...], settings: dict, digest: str
    ) -> None:
        self.store, self.folder, self.digest = store, folder, digest
        self.interval = float(settings.get("checkpoint_interval_s", DEFAULT_CHECKPOINT_INTERVAL_S))
        self.epochs = {int(e) for e in settings.get("save_epochs", [])}
        self.saved_at = time.monotonic()
        self._pending = threading.Event()
        self._stop = False
        self._thread = None
        if store.is_remote:
            self._thread = threading.Thread(target=self._uploads, daemon=True)
            self._thread.start()

    def maybe_save(self, outcome, metrics: dict) -> None:
        due = time.monotonic() - self.saved_at >= self.interval
        if not (due or outcome.epoch in self.epochs):
            return
        state = outcome.state()
        state["hours"] = {"wall_h": metrics["wall_h"]}
        state["config_digest"] = self.digest
        state["result"] = {k: v for k, v in metrics.items() if k not in ("node", "wall_h")}
        _save(self.store.local(*self.folder, STATE_FILE), state)
        self.saved_at = time.monotonic()
        self._pending.set()

    def finish(self, outcome, metrics: dict, *, final: bool) -> None:
        """The last epoch: the result (and a final run's weights), uploaded before it is told."""
        if final:
            from safetensors.torch import save_file

            weights = outcome.state().get("model") or outcome.state().get("head") or {}
            path = self.store.local(*self.folder, WEIGHTS_FILE)
            tmp = path.with_name(f".{path.name}.tmp")
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
            os.replace(tmp, path)
            self.store.upload(*self.folder, WEIGHTS_FILE)
        path = self.store.local(*self.folder, RESULT_FILE)
        tmp = path.with_name(f".{path.name}.tmp")
        kept = {k: v for k, v in metrics.items() if k != "node"}
        tmp.write_text(json.dumps({**kept, "config_digest": self.digest}))
        os.replace(tmp, path)
        self.store.upload(*self.folder, RESULT_FILE)

    def _uploads(self) -> None:
        while True:
            self._pending.wait()
            self._pending.clear()
            if self._stop:
                return
            try:
                self.store.upload(*self.folder, STATE_FILE)
            except Exception as err:  # the next save tries again; the local file is whole
                print(f"trial state upload failed: {err}", flush=True)

    def close(self) -> None:
        """No new upload; the one under way finishes before the trial ends."""
        self._stop = True
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def config_digest(settings: dict) -> str:
    """What a trial trains, as a digest: its cell, phase, hyperparameters and seed."""
    what = {k: settings.get(k) for k in ("cell", "phase", "hparams", "seed")}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _save(path: Path, state: dict) -> None:
    """Atomic: the file is always one whole epoch. A failed write (a full disk) leaves the
    previous file as it was and says which path it could not write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: torch's own file writer hides ENOSPC
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        message = f"could not save the trial state to {path}: {err.strerror}"
        raise OSError(err.errno, message) from err


def _clean_node_cache(store: Storage, sweep_id: str, keep: str) -> None:
    """Remove this node's copies of trial folders the driver removed from S3 (told trials),
    and their lock files, so the listing stays as long as the trials in flight here."""
    if not store.is_remote:
        return  # local storage: the driver's removal was the only copy
    root = store.local(*state_parts(sweep_id, ""))
    names = {p.name.removesuffix(".lock") for p in root.iterdir()} if root.is_dir() else set()
    for name in names - {keep}:
        with _held(store, sweep_id, name, wait=False) as lock:
            # Held elsewhere: a trial runs on it now. Nothing in S3: its trial was told (a
            # trial's state is in S3 from its first save on, uploaded before it ends).
            if lock and not store.list_objects(*state_parts(sweep_id, name)):
                shutil.rmtree(root / name, ignore_errors=True)
                _lock_path(store, sweep_id, name).unlink(missing_ok=True)


def _job(settings: dict, store: Storage) -> TransferJob:
    upstream = Path(settings["upstream_path"])
    if settings.get("upstream_key"):  # kept in the storage: this node's copy, fetched if new
        key = settings["upstream_key"].split("/")
        upstream = store.local(*key)
        if not upstream.is_file():
            store.download(*key)
    return TransferJob(
        upstream_path=upstream,
        dataset=settings["dataset"],
        mode=settings["mode"],
        phase=settings["phase"],
        hparams=settings["hparams"],
        seed=int(settings["seed"]),
        feature_cache_dir=store.local("features"),
        storage=store,
        device=_device(float(settings.get("gpu", 0))),
        prune_to=settings.get("downstream_target") if settings["mode"] == "prune" else None,
        prune_ramp=float(settings.get("downstream_ramp", 2 / 3)),
        data_root=settings.get("data_root") or None,
        loader_workers=int(settings.get("loader_workers", 0)),
        max_batches=settings.get("max_batches"),
        precision=settings.get("precision", "bf16"),
        compile=bool(settings.get("compile", False)),
        eval_every=settings.get("eval_every"),
        feature_engine=settings.get("feature_engine", "torch"),
    )


def _device(gpus: float) -> str:
    """CUDA only when the trial asked Ray for a GPU and this worker really has one."""
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def _node() -> str:
    try:
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # outside a Ray worker (direct calls in tests)
        return socket.gethostname()
