"""Which Ray cluster a driver joins.

Ray's `ray.init()` without an address joins the cluster `/tmp/ray/ray_current_cluster` names,
the last one `ray start` (or a test's `ray.cluster_utils.Cluster`) started on the machine, if
any: a sweep run without `--address` would silently train on whatever cluster was started
there last, and die with it. The project's rule instead: the address given, else
$RAY_ADDRESS (what `ray job submit` and KubeRay set for a job), else a new local instance.
(Ray's lookup order: checked against Ray 2.60.0, `ray._private.services
.get_ray_address_from_environment`, on 2026-12-04.)
"""

from __future__ import annotations

import os

__all__ = ["ray_address"]


def ray_address(address: str | None) -> str:
    """The address to pass to `ray.init`: `address`, else $RAY_ADDRESS, else "local"."""
    return address or os.environ.get("RAY_ADDRESS") or "local"
