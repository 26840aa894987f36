"""Which layers a pruning method prunes and how it spreads the sparsity over them: data on
the method (its published convention), overridable per zoo entry, recorded in its metadata.

- `prune_first_conv`: the first convolution (few weights, much of the input signal);
- `prune_classifier`: the final linear layer (transfer replaces it; it is pruned upstream only
  where the method's paper does so);
- `distribution`: `uniform` (every pruned layer at the target), `global` (one ranking over all
  pruned layers), `erk` (Erdős–Rényi-Kernel densities), `learned` (the method learns it:
  STR) or `none` (dense).

The target sparsity is the fraction of pruned weights among the layers the policy prunes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Distribution", "PolicyOverride", "PruningPolicy", "resolve_policy"]

Distribution = Literal["uniform", "global", "erk", "learned", "none"]


class PruningPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prune_first_conv: bool
    prune_classifier: bool
    distribution: Distribution

    def exclude(self, first_conv: str, classifier: str) -> tuple[str, ...]:
        """Module names left dense, for `prunable_weights(..., exclude=...)`."""
        return tuple(
            name
            for name, pruned in (
                (first_conv, self.prune_first_conv),
                (classifier, self.prune_classifier),
            )
            if not pruned
        )


class PolicyOverride(BaseModel):
    """A zoo entry's changes to its method's policy; what it leaves out keeps the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prune_first_conv: bool | None = None
    prune_classifier: bool | None = None
    distribution: Distribution | None = None


def resolve_policy(method, override: PolicyOverride | None = None) -> PruningPolicy:
    """The method's default policy with an entry's override; raises ValueError naming the
    field when the method cannot spread sparsity that way."""
    policy: PruningPolicy = method.policy
    if override is not None:
        policy = policy.model_copy(update=override.model_dump(exclude_none=True))
    if policy.distribution not in method.distributions:
        raise ValueError(
            f"policy.distribution: method {method.name!r} cannot spread sparsity as "
            f"{policy.distribution!r}; it supports {', '.join(method.distributions)}"
        )
    return policy
