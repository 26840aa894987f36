"""A sweep whose S3 storage is reached through a fault-injecting proxy (connection resets,
500 and 503 answers, slow answers, truncated and corrupted bodies), killed mid-search and
resumed from S3 on a "new machine" (an empty local cache) with the faults still on."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from s3_helpers import BUCKET, CREDENTIALS, FAULTS, fault_proxy, s3_server
from sweep_helpers import CLI, REPO, child_runs, kill_when, small_spec, start_sweep

from sparse_transfer.config import dump_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a zoo, a sweep and a resume

s3 = pytest.fixture(s3_server)
FAULT_RATE = 0.1


@pytest.fixture
def proxy(s3):
    yield from fault_proxy(s3)


def _finished_search_runs(db: Path) -> int:
    """Read with sqlite3, not MLflow: an MLflow client here would race the sweep's own
    creation of the store (both would run its schema migrations)."""
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(
                "SELECT count(*) FROM runs JOIN tags ON runs.run_uuid = tags.run_uuid "
                "WHERE tags.key = 'phase' AND tags.value = 'search' AND runs.status = 'FINISHED'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sweep_through_s3_faults_resumes_from_s3_with_each_trial_once(
    s3, proxy, tmp_path, zoo_dir
):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = small_spec(
        tmp_path,
        zoo_dir,  # built once per session: this test is about the sweep's own files
        storage=proxy.uri("study"),
        tracking={"uri": tracking, "experiment": "faulty"},
        search={"trials_per_cell": 3, "max_concurrent_trials": 2},
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    env = {
        **os.environ,
        **CREDENTIALS,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SPARSE_TRANSFER_CACHE": str(tmp_path / "cache-first"),
    }
    # Our transfers (botocore) meet every fault; Tune's own experiment-state sync (pyarrow's
    # AWS SDK, with its own retries) goes through the proxy untouched.
    proxy.configure(rate=FAULT_RATE, kinds=FAULTS, agent="Botocore")
    log = tmp_path / "sweep.log"
    driver = start_sweep(spec_file, log, env, tmp_path)
    try:
        kill_when(driver, lambda: _finished_search_runs(tmp_path / "mlflow.db") >= 4, log)
    finally:
        if driver.poll() is None:  # never leave a sweep running against a stopped proxy
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix="study/sweeps/", Delimiter="/")
    (prefix,) = [p["Prefix"] for p in listed["CommonPrefixes"]]
    sweep_id = prefix.rstrip("/").rsplit("/", 1)[1]
    location = proxy.uri(f"study/sweeps/{sweep_id}")
    fresh = {**env, "SPARSE_TRANSFER_CACHE": str(tmp_path / "cache-second")}
    resume_log = tmp_path / "resume.log"
    with open(resume_log, "w") as out:
        resumed = subprocess.run(
            [*CLI, "resume", location],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=fresh,
            cwd=tmp_path,
            timeout=400,
        )
    output = resume_log.read_text()
    assert resumed.returncode == 0, output[-6000:]
    print(f"faults injected: {dict(proxy.injected)} in {proxy.requests} requests")
    assert set(proxy.injected) == set(FAULTS), proxy.injected

    runs = child_runs(tracking, "faulty", sweep_id)
    listing = "\n".join(
        sorted(
            f"{r.data.tags['trial_id']} {r.info.status} {r.data.tags.get('ledger_state')} "
            f"{r.data.tags.get('failure', '')} {r.data.tags.get('error', '')[:300]}"
            for r in runs
        )
    )
    trial_ids = [r.data.tags["trial_id"] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)), f"a trial has two MLflow runs:\n{listing}"
    assert sum(r.data.tags["phase"] == "search" for r in runs) == 4 * 3, listing
    assert sum(r.data.tags["phase"] == "final" for r in runs) == 4 * 2, listing
    assert {r.info.status for r in runs} == {"FINISHED"}, listing

    # Every object our code wrote is whole: its bytes match the SHA-256 it was stored with.
    base = f"study/sweeps/{sweep_id}/"
    report = fresh["SPARSE_TRANSFER_CACHE"] + f"/s3/{BUCKET}/{base}report"
    for name in ("summary.csv", "results.parquet", "report.html"):
        key = base + "report/" + name
        head = s3.client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        body = s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
        with open(f"{report}/{name}", "rb") as local:
            assert body == local.read(), f"{key} differs from the report the resume wrote"
