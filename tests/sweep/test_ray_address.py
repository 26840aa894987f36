"""Which cluster a sweep's driver joins: the one `--address` names, else $RAY_ADDRESS, else a
new local one; never the last cluster `ray start` made on the machine, which Ray's own
`ray.init()` joins (a sweep would train on it, and die with it: a suite's concurrent cluster
tests killed sweeps so)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from browser_helpers import free_port

from sparse_transfer.sweep.cluster import ray_address

RAY = str(Path(sys.executable).with_name("ray"))
JOINED = (
    "import ray; from sparse_transfer.sweep.runner import _start_ray; _start_ray(None); "
    "print(ray.get_runtime_context().gcs_address)"
)


def test_the_address_rule(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) == "local"
    assert ray_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # as `ray job submit` sets it
    assert ray_address(None) == "10.0.0.1:6379"
    assert ray_address("10.0.0.2:6379") == "10.0.0.2:6379"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sweep_without_an_address_starts_its_own_cluster_beside_one_ray_start_made():
    # a short private temp dir: Ray's socket paths are limited, and the machine's /tmp/ray
    # (other tests' clusters) stays out of it
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = temp
    started = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=1"]
        + ["--include-dashboard=false", "--disable-usage-stats"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        current = Path(temp) / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 120
        while not current.exists():
            assert time.monotonic() < deadline and started.poll() is None, "ray start failed"
            time.sleep(0.5)
        other = current.read_text().strip()
        run = subprocess.run(
            [sys.executable, "-c", JOINED],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        joined = run.stdout.split()[-1]
        assert joined != other, f"the sweep joined the cluster ray start made ({other})"
    finally:
        os.killpg(started.pid, signal.SIGKILL)
        started.wait()
