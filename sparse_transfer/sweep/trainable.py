"""The Tune trainable: one transfer trial, reporting and saving its state every epoch.

A trial's state lives in `<sweep>/trial_state/<trial id>/state.pt`, replaced atomically each
epoch, rather than in Tune's checkpoint bookkeeping: with `num_to_keep`, Tune deletes old
checkpoints before its experiment snapshot points at the new one, so a driver killed in
between leaves a snapshot naming a deleted checkpoint and the resumed trial fails (seen in
tests/sweep/test_resume.py). Our file is always the last complete epoch.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import ray
import torch
from ray import tune

from sparse_transfer.storage import Storage
from sparse_transfer.transfer import TransferJob, run_transfer

__all__ = [
    "DONE_FILE",
    "STATE_FILE",
    "fetch_state",
    "mark_done",
    "state_path",
    "transfer_trainable",
]

STATE_FILE = "state.pt"
DONE_FILE = "done.json"


def _state_parts(settings: dict, trial_id: str, name: str) -> tuple[str, ...]:
    return ("sweeps", settings["sweep_id"], "trial_state", trial_id, name)


def state_path(settings: dict, trial_id: str, name: str = STATE_FILE) -> Path:
    """This node's copy of a trial's file; `fetch_state` brings it from remote storage."""
    return Storage(settings["storage"]).local(*_state_parts(settings, trial_id, name))


def fetch_state(settings: dict, trial_id: str, name: str = STATE_FILE) -> Path | None:
    store = Storage(settings["storage"])
    parts = _state_parts(settings, trial_id, name)
    return store.local(*parts) if store.download(*parts) else None


def mark_done(settings: dict, trial_id: str, result: dict) -> None:
    """Written by the driver when Tune completes a trial (also when ASHA stopped it early), so
    a trial that Tune's older snapshot still calls running is never trained again."""
    path = state_path(settings, trial_id, DONE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float | str)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics))
    os.replace(tmp, path)
    Storage(settings["storage"]).upload(*_state_parts(settings, trial_id, DONE_FILE))


def transfer_trainable(config: dict) -> None:
    settings = config["trial"]
    torch.set_num_threads(max(1, int(settings.get("threads", 1))))
    store = Storage(settings["storage"])
    upstream = Path(settings["upstream_path"])
    if settings.get("upstream_key"):  # kept in the storage: this node's copy, fetched if new
        key = settings["upstream_key"].split("/")
        upstream = store.local(*key)
        if not upstream.is_file():
            store.download(*key)
    job = TransferJob(
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
    )
    trial_id = tune.get_context().get_trial_id()
    done = fetch_state(settings, trial_id, DONE_FILE)
    if done is not None:  # completed before a crash: report the same last result, train nothing
        tune.report(json.loads(done.read_text()))
        return
    path = fetch_state(settings, trial_id)
    resume = torch.load(path, map_location="cpu", weights_only=True) if path else None
    path = state_path(settings, trial_id)
    # the dataset as results carry it (a variant such as birdsnap:official-split is tagged)
    extra = {"node": _node(), "dataset": job.dataset_label()}
    if resume is not None and int(resume["epoch"]) >= int(job.hparams["epochs"]):
        # Finished before the crash, but the driver never heard: say the last result again.
        tune.report({**resume["metrics"], **extra})
        return
    for outcome in run_transfer(job, resume):
        _save(path, {**outcome.state(), "metrics": outcome.metrics})
        store.upload(*_state_parts(settings, trial_id, STATE_FILE))
        tune.report({**outcome.metrics, **extra})


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # the file is always one whole epoch, never half of one


def _device(gpus: float) -> str:
    """CUDA only when the trial asked Ray for a GPU and this worker really has one."""
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def _node() -> str:
    try:
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # outside a Ray worker (direct calls in tests)
        return socket.gethostname()
