"""Linear finetuning: the backbone is frozen; a linear head trains on cached features."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from sparse_transfer import metrics as M
from sparse_transfer.data.features import cache_key, cached_features
from sparse_transfer.models import ARCHS, UpstreamCheckpoint, load_upstream
from sparse_transfer.pruning import prunable_weights, sparsity_report
from sparse_transfer.transfer.job import EpochOutcome, TransferJob, seeded_generator
from sparse_transfer.transfer.loop import (
    autocast_dtype,
    configure_device,
    effective_precision,
    evaluate,
    make_optimizer,
    make_schedule,
    on_device,
    train_epoch,
)

__all__ = ["extract_features", "finetune_linear"]


@torch.no_grad()
def extract_features(
    upstream: UpstreamCheckpoint, job: TransferJob, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate-layer features (on the CPU), no augmentation (as the paper), in eval mode."""
    arch = ARCHS.get(upstream.arch)
    device = torch.device(job.device)
    model = on_device(upstream.build_model().eval(), device)
    configure_device(device, job.precision)
    _set_classifier(model, arch.classifier, nn.Identity())
    source = job.source(upstream.metadata["preprocessing"])
    precision = autocast_dtype(device, job.precision)
    features, labels = [], []
    batch_size = max(int(job.hparams["batch_size"]), 256)
    batches = job.limit(source.batches(split, train=False, batch_size=batch_size, generator=None))
    if job.feature_engine == "deepsparse":
        from sparse_transfer.speed.features import extract_with_deepsparse

        return extract_with_deepsparse(model.cpu(), batches, arch.input_shape, batch_size)
    for x, y in batches:
        with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
            features.append(model(x).float().cpu())
        labels.append(y.cpu())
    return torch.cat(features), torch.cat(labels)


def _set_classifier(model: nn.Module, path: str, module: nn.Module) -> None:
    *parents, last = path.split(".")
    for part in parents:
        model = getattr(model, part)
    setattr(model, last, module)


def finetune_linear(job: TransferJob, resume: dict | None = None) -> Iterator[EpochOutcome]:
    upstream = load_upstream(job.upstream_path)
    arch = ARCHS.get(upstream.arch)
    preprocessing = upstream.metadata["preprocessing"]
    num_classes = job.source(preprocessing).num_classes
    generator = seeded_generator(job.seed)
    if job.feature_cache_dir is None:
        raise ValueError("linear finetuning needs a feature cache directory")

    hits = []

    def features(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        # Features of another copy of the dataset (another root), or of a dry run's few
        # batches, must never pass for these.
        extra = {
            "data_root": job.data_root,
            "max_batches": job.max_batches,
        }
        variant = {**preprocessing, **{k: v for k, v in extra.items() if v}}
        device = torch.device(job.device)
        key = cache_key(
            upstream.sha256,
            job.dataset,
            split,
            variant,
            precision=effective_precision(device, job.precision),
            device_type=device.type,
            engine=job.feature_engine,
        )
        x, y, hit = cached_features(
            job.feature_cache_dir,
            key,
            lambda: extract_features(upstream, job, split),
            storage=job.storage,
        )
        hits.append(hit)
        return x, y

    train_split, eval_split = job.splits
    train_x, train_y = features(train_split)
    eval_x, eval_y = features(eval_split)
    # over the layers the upstream method pruned (its masks), as full finetuning measures it
    backbone = prunable_weights(upstream.build_model(), exclude=(arch.classifier,))
    masked = {n: w for n, w in backbone.items() if n in upstream.masks} or backbone
    backbone_sparsity = sparsity_report(masked)[0]

    hp = job.hparams
    device = torch.device(job.device)
    train_x, train_y, eval_x, eval_y = (t.to(device) for t in (train_x, train_y, eval_x, eval_y))
    head = nn.Linear(train_x.shape[1], num_classes).to(device)
    optimizer = make_optimizer(head.parameters(), hp)
    schedule = make_schedule(optimizer, hp)
    start = 0
    if resume is not None:
        head.load_state_dict(resume["head"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        generator.set_state(resume["generator"])
        start = int(resume["epoch"])

    def state(epoch: int) -> dict:
        return {
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "epoch": epoch,
        }

    epochs = int(hp["epochs"])
    for epoch in range(start + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        loss = train_epoch(
            head,
            train_x,
            train_y,
            optimizer,
            batch_size=int(hp["batch_size"]),
            generator=generator,
            label_smoothing=float(hp["label_smoothing"]),
        )
        schedule.step()
        scores = {}
        if job.scores_at(epoch):
            evaluated = evaluate(head, eval_x, eval_y, num_classes)
            scores = {f"{job.eval_prefix}_{k}": v for k, v in evaluated.items()}
        metrics = {
            M.EPOCH: epoch,
            M.TRAIN_LOSS: loss,
            M.LR: lr,
            **scores,
            M.FINAL_SPARSITY: backbone_sparsity,
            M.UPSTREAM_SPARSITY: backbone_sparsity,
            M.FEATURE_CACHE_HIT: float(all(hits)),
        }
        yield EpochOutcome(epoch, metrics, lambda e=epoch: state(e), done=epoch == epochs)
