"""Full finetuning: every weight trains, but the upstream model's pruned weights stay zero."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sparse_transfer import metrics as M
from sparse_transfer.data import DATASETS
from sparse_transfer.models import ARCHS, load_upstream, replace_classifier
from sparse_transfer.pruning import (
    SparsityDriftError,
    apply_masks,
    check_sparsity,
    global_magnitude_masks,
    prunable_weights,
)
from sparse_transfer.pruning.gmp import cubic_sparsity
from sparse_transfer.transfer.job import EpochOutcome, TransferJob, seeded_generator
from sparse_transfer.transfer.loop import (
    evaluate,
    make_optimizer,
    make_schedule,
    normalize,
    train_epoch,
)

__all__ = ["finetune_full"]

# Masks are re-applied after every step, so measured sparsity must match exactly; the slack only
# absorbs weights that happen to be trained to exactly 0.0 (more zeros, never fewer).
SPARSITY_TOLERANCE = 1e-3


def finetune_full(job: TransferJob, resume: dict | None = None) -> Iterator[EpochOutcome]:
    upstream = load_upstream(job.upstream_path)
    arch = ARCHS.get(upstream.arch)
    dataset = DATASETS.get(job.dataset)
    generator = seeded_generator(job.seed)
    model = upstream.build_model()
    replace_classifier(model, arch, dataset.num_classes)
    backbone = (arch.classifier,)
    device = torch.device(job.device)
    model.to(device)
    masks = {
        k: v.to(device)
        for k, v in upstream.masks.items()
        if not k.startswith(arch.classifier + ".")
    }
    weights = prunable_weights(model, exclude=backbone)
    upstream_sparsity = check_sparsity(weights, masks)
    upstream_masks = masks

    preprocessing = upstream.metadata["preprocessing"]
    train_split, eval_split = job.splits
    train_x, train_y = dataset.load(train_split)
    eval_x, eval_y = dataset.load(eval_split)
    train_x, eval_x = normalize(train_x, preprocessing), normalize(eval_x, preprocessing)
    train_x, train_y, eval_x, eval_y = (t.to(device) for t in (train_x, train_y, eval_x, eval_y))

    hp = job.hparams
    optimizer = make_optimizer(model.parameters(), hp)
    schedule = make_schedule(optimizer, hp)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        generator.set_state(resume["generator"])
        start = int(resume["epoch"])
        masks = {k: v.to(device) for k, v in resume["masks"].items()}

    def state(epoch: int) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "epoch": epoch,
            "masks": masks,  # downstream pruning changes them as it goes
        }

    epochs = int(hp["epochs"])
    for epoch in range(start + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        expected = upstream_sparsity
        if job.prune_to is not None:  # transfer, then prune: GMP towards the target
            expected = _scheduled(epoch, epochs, job, upstream_sparsity)
            masks = global_magnitude_masks(weights, expected)
            apply_masks(model, masks)
        loss = train_epoch(
            model,
            train_x,
            train_y,
            optimizer,
            batch_size=int(hp["batch_size"]),
            generator=generator,
            label_smoothing=float(hp["label_smoothing"]),
            masks=masks,
            augment=True,
        )
        schedule.step()
        scores = evaluate(model, eval_x, eval_y, dataset.num_classes)
        sparsity = check_sparsity(weights, masks)
        if masks is not upstream_masks:  # what the upstream model pruned stays pruned
            check_sparsity(weights, upstream_masks)
        if abs(sparsity - expected) > SPARSITY_TOLERANCE:
            raise SparsityDriftError(
                f"sparsity drifted from {expected:.4f} to {sparsity:.4f} in epoch {epoch}"
            )
        metrics = {
            M.EPOCH: epoch,
            M.TRAIN_LOSS: loss,
            M.LR: lr,
            f"{job.eval_prefix}_top1": scores["top1"],
            f"{job.eval_prefix}_mean_class_acc": scores["mean_class_acc"],
            M.FINAL_SPARSITY: sparsity,
            M.UPSTREAM_SPARSITY: upstream_sparsity,
        }
        yield EpochOutcome(epoch, metrics, lambda e=epoch: state(e), done=epoch == epochs)


def _scheduled(epoch: int, epochs: int, job: TransferJob, initial: float) -> float:
    """Zhu & Gupta's cubic ramp from the upstream sparsity to the target, then flat."""
    ramp = max(1, round(job.prune_ramp * epochs))
    return cubic_sparsity(min(epoch, ramp), ramp, final=job.prune_to, initial=initial)
