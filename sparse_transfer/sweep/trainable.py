"""The Tune trainable: one transfer trial, reporting and checkpointing every epoch."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from sparse_transfer.transfer import TransferJob, run_transfer

__all__ = ["transfer_trainable"]

STATE_FILE = "state.pt"


def transfer_trainable(config: dict) -> None:
    settings = config["trial"]
    torch.set_num_threads(max(1, int(settings.get("threads", 1))))
    job = TransferJob(
        upstream_path=Path(settings["upstream_path"]),
        dataset=settings["dataset"],
        mode=settings["mode"],
        phase=settings["phase"],
        hparams=settings["hparams"],
        seed=int(settings["seed"]),
        feature_cache_dir=Path(settings["feature_cache_dir"]),
    )
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restarted trial continues after its last finished epoch
        with checkpoint.as_directory() as directory:
            resume = torch.load(Path(directory) / STATE_FILE, weights_only=True)
    node = _node()
    for outcome in run_transfer(job, resume):
        with tempfile.TemporaryDirectory() as directory:
            torch.save(outcome.state(), Path(directory) / STATE_FILE)
            tune.report(
                {**outcome.metrics, "node": node},
                checkpoint=tune.Checkpoint.from_directory(directory),
            )


def _node() -> str:
    try:
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # outside a Ray worker (direct calls in tests)
        return socket.gethostname()
