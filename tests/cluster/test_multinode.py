"""A sweep on a multi-node Ray cluster: a head and two worker nodes (separate raylets) on this
machine. Trials must land on more than one node, and every child run records its node."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ray.cluster_utils import Cluster
from sweep_helpers import child_runs, small_spec

from sparse_transfer.config import dump_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    # The head takes no trials (0 CPUs): trials can only run on the two worker nodes.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def test_sweep_runs_trials_on_several_nodes(cluster, zoo_dir, tmp_path):
    ray_cluster, workers = cluster
    spec = small_spec(
        tmp_path,
        zoo_dir,
        modes=["linear"],
        seeds=[0],
        search={"trials_per_cell": 3, "max_concurrent_trials": 2},
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparse_transfer.cli",
            "sweep",
            str(spec_file),
            "--address",
            ray_cluster.address,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=400,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (sweep_dir,) = (tmp_path / "runs" / "sweeps").iterdir()
    runs = child_runs(spec.tracking.uri, "small", sweep_dir.name)
    assert len(runs) == 2 * 3 + 2 * 1
    nodes = {r.data.tags["node"] for r in runs}
    worker_ids = {w.node_id[:12] for w in workers}
    assert nodes <= worker_ids, "a trial ran on the head, which offers no CPUs"
    assert len(nodes) == 2, f"all trials ran on one node: {nodes}"
