"""Full finetuning: every weight trains, but the upstream model's pruned weights stay zero."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sparse_transfer import metrics as M
from sparse_transfer.models import ARCHS, load_upstream, replace_classifier
from sparse_transfer.pruning import (
    MaskedParameters,
    SparsityDriftError,
    check_sparsity,
    global_magnitude_masks,
    prunable_weights,
)
from sparse_transfer.pruning.gmp import cubic_sparsity
from sparse_transfer.transfer.job import EpochOutcome, TransferJob, seeded_generator
from sparse_transfer.transfer.loop import (
    autocast_dtype,
    configure_device,
    evaluate_batches,
    make_optimizer,
    make_schedule,
    on_device,
    train_batches,
)

__all__ = ["finetune_full"]

# Masks are re-applied after every step, so measured sparsity must match exactly; the slack only
# absorbs weights that happen to be trained to exactly 0.0 (more zeros, never fewer).
SPARSITY_TOLERANCE = 1e-3


def finetune_full(job: TransferJob, resume: dict | None = None) -> Iterator[EpochOutcome]:
    upstream = load_upstream(job.upstream_path)
    arch = ARCHS.get(upstream.arch)
    device = torch.device(job.device)
    dataset = job.source(upstream.metadata["preprocessing"])
    generator = seeded_generator(job.seed)
    model = upstream.build_model()
    # the head the upstream model's authors attached (catalog entry's `head`)
    replace_classifier(model, arch, dataset.num_classes, upstream.metadata.get("head", "linear"))
    backbone = (arch.classifier,)
    on_device(model, device)
    configure_device(device, job.precision)
    precision = autocast_dtype(device, job.precision)
    # compiled for the steps; the plain module keeps the state dict's names
    forward = torch.compile(model) if job.compile else model
    masks = {
        k: v.to(device)
        for k, v in upstream.masks.items()
        if not k.startswith(arch.classifier + ".")
    }
    weights = prunable_weights(model, exclude=backbone)
    upstream_sparsity = check_sparsity(weights, masks)
    upstream_masks = masks

    train_split, eval_split = job.splits
    batch_size = int(job.hparams["batch_size"])
    hp = job.hparams
    optimizer = make_optimizer(model.parameters(), hp, device)
    schedule = make_schedule(optimizer, hp)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        generator.set_state(resume["generator"])
        start = int(resume["epoch"])
        if "masks" in resume:  # downstream pruning; else they are the upstream file's
            masks = {k: v.to(device) for k, v in resume["masks"].items()}

    def state(epoch: int) -> dict:
        saved = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "epoch": epoch,
        }
        if job.prune_to is not None:  # downstream pruning changes the masks as it goes
            saved["masks"] = masks
        return saved

    epochs = int(hp["epochs"])
    prepared = MaskedParameters(model, masks, grads=False)  # masks never regrow here
    for epoch in range(start + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        expected = upstream_sparsity
        if job.prune_to is not None:  # transfer, then prune: GMP towards the target
            expected = _scheduled(epoch, epochs, job, upstream_sparsity)
            masks = global_magnitude_masks(weights, expected)
            prepared = MaskedParameters(model, masks, grads=False)  # masks never regrow here
            prepared.zero_weights()
        elif prepared.masks is not masks:  # resumed with the saved masks
            prepared = MaskedParameters(model, masks, grads=False)  # masks never regrow here
        train = dataset.batches(
            train_split, train=True, batch_size=batch_size, generator=generator
        )
        loss = train_batches(
            forward,
            job.limit(train),
            optimizer,
            label_smoothing=float(hp["label_smoothing"]),
            masks=prepared,
            autocast_dtype=precision,
        )
        schedule.step()
        scores = {}
        if job.scores_at(epoch):
            held_out = dataset.batches(
                eval_split, train=False, batch_size=batch_size, generator=None
            )
            evaluated = evaluate_batches(
                forward, job.limit(held_out), dataset.num_classes, precision
            )
            scores = {f"{job.eval_prefix}_{k}": v for k, v in evaluated.items()}
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
            **scores,
            M.FINAL_SPARSITY: sparsity,
            M.UPSTREAM_SPARSITY: upstream_sparsity,
        }
        yield EpochOutcome(epoch, metrics, lambda e=epoch: state(e), done=epoch == epochs)


def _scheduled(epoch: int, epochs: int, job: TransferJob, initial: float) -> float:
    """Zhu & Gupta's cubic ramp from the upstream sparsity to the target, then flat."""
    ramp = max(1, round(job.prune_ramp * epochs))
    return cubic_sparsity(min(epoch, ramp), ramp, final=job.prune_to, initial=initial)
