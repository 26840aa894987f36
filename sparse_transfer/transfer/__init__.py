"""Full and linear finetuning as plain functions."""

from sparse_transfer.transfer.job import EpochOutcome, TransferJob

__all__ = ["EpochOutcome", "TransferJob", "run_transfer"]


def run_transfer(job: TransferJob, resume: dict | None = None):
    """Epoch-by-epoch outcomes of `job`, from `resume` (a state an earlier outcome gave) if set."""
    if job.mode in ("full", "prune"):
        from sparse_transfer.transfer.full import finetune_full

        return finetune_full(job, resume)
    if job.mode == "linear":
        from sparse_transfer.transfer.linear import finetune_linear

        return finetune_linear(job, resume)
    raise ValueError(f"unknown transfer mode {job.mode!r}; valid: full, linear, prune")
