"""The driver killed twice during one search on S3 storage (a local moto server), each resume in a
fresh process with an empty node cache, so all it has is what reached S3. Then: every cell
spent exactly its budget, no configuration repeats within a cell, every early-stopping decision
(before and after the crashes) follows successive halving over all of its cell's rungs, with
rungs recorded before a crash among them, no trial state is left in S3, and every trial is in
MLflow exactly once."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter, defaultdict

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from s3_helpers import BUCKET, s3_server
from sweep_helpers import CLI, child_runs, kill_when, small_spec, start_sweep
from test_resume import _finished_search_runs

from sparse_transfer.config import dump_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRIALS = 6
REDUCTION = 2


@pytest.fixture
def s3(monkeypatch, tmp_path):
    yield from s3_server(monkeypatch, tmp_path)


def _ledger_lines(s3, sweep_prefix: str) -> list[dict]:
    """The ledger as S3 holds it: its latest compacted object (c<end>.jsonl, bytes 0..end),
    then the segments (<offset>.jsonl) after it, in order."""
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{sweep_prefix}/ledger/")
    names = [item["Key"].rsplit("/", 1)[1] for item in listed.get("Contents", [])]
    compacted = max((n for n in names if n.startswith("c")), default=None)
    end = int(compacted[1:].removesuffix(".jsonl")) if compacted else 0
    segments = sorted(n for n in names if not n.startswith("c") and int(n[:-6]) >= end)
    data = b""
    for name in ([compacted] if compacted else []) + segments:
        key = f"{sweep_prefix}/ledger/{name}"
        data += s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return [json.loads(line) for line in data.splitlines()]


def _told_search_trials(lines: list[dict]) -> int:
    """Search trials the ledger holds as told, from its operations: study ids count up with
    CREATE_STUDY (0), trial ids with CREATE_TRIAL (4); SET_TRIAL_STATE_VALUES (6) tells."""
    studies = [line["study_name"] for line in lines if line["op_code"] == 0]
    study_of = [line["study_id"] for line in lines if line["op_code"] == 4]
    told = {
        line["trial_id"]
        for line in lines
        if line["op_code"] == 6 and TrialState(line["state"]).is_finished()
    }
    return sum(not studies[study_of[trial]].endswith("/final") for trial in told)


def _told_now(s3, sweep_prefix: str) -> int:
    """`_told_search_trials` of the ledger in S3 while a driver writes it: a segment compacted
    away between the listing and its read means listing again."""
    while True:
        try:
            return _told_search_trials(_ledger_lines(s3, sweep_prefix))
        except s3.client.exceptions.NoSuchKey:
            continue


def _promotable(value: float, competing: list[float]) -> bool:
    """Successive halving's rule (Optuna's, written out): in the top 1/REDUCTION of the rung,
    or the best so far while the rung has fewer than REDUCTION values."""
    index = max(len(competing) // REDUCTION - 1, 0)
    return value >= sorted(competing)[-(index + 1)]


def test_killed_twice_on_s3_then_resumed(zoo_dir, s3, tmp_path):
    spec = small_spec(
        tmp_path,
        zoo_dir,
        modes=["linear"],
        seeds=[0, 1],
        search={"trials_per_cell": TRIALS, "max_concurrent_trials": 2},
        early_stopping={"scheduler": "asha", "grace_period": 1, "reduction_factor": REDUCTION},
        resources={"checkpoint_interval_s": 0},
        storage=s3.uri("runs"),
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    db = tmp_path / "mlflow.db"

    def env(run: int) -> dict:
        cache = tmp_path / f"cache-{run}"  # a new machine each time: only S3 is shared
        return {**os.environ, "PYTHONUNBUFFERED": "1", "SPARSE_TRANSFER_CACHE": str(cache)}

    log = tmp_path / "run-0.log"
    kill_when(
        start_sweep(spec_file, log, env(0), tmp_path), lambda: _finished_search_runs(db) >= 3, log
    )
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix="runs/sweeps/", Delimiter="/")
    (prefix,) = [p["Prefix"].rstrip("/") for p in listed["CommonPrefixes"]]
    location = s3.uri(prefix)
    crashes = [len(_ledger_lines(s3, prefix))]

    log = tmp_path / "run-1.log"
    resumed = subprocess.Popen(
        [*CLI, "resume", location],
        stdout=open(log, "w"),  # noqa: SIM115 (the child holds it)
        stderr=subprocess.STDOUT,
        env=env(1),
        cwd=tmp_path,
        start_new_session=True,
    )
    # Two trials told by this driver, and before the search ends: the second crash is
    # mid-search too. Counted in the ledger: MLflow's finished runs also grow by the records
    # this driver rebuilds for trials told before the crash (their closes were queued on the
    # lost machine), and a kill on that count could land before it wrote anything.
    second = min(_told_now(s3, prefix) + 2, 2 * TRIALS - 1)
    kill_when(resumed, lambda: _told_now(s3, prefix) >= second, log)
    crashes.append(len(_ledger_lines(s3, prefix)))
    assert crashes[1] > crashes[0], "the first resume wrote nothing to the ledger"

    log = tmp_path / "run-2.log"
    with open(log, "w") as out:
        code = subprocess.run(
            [*CLI, "resume", location],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(2),
            cwd=tmp_path,
            timeout=600,
        ).returncode
    assert code == 0, log.read_text()[-5000:]

    # The ledger, read back as Optuna reads it.
    lines = _ledger_lines(s3, prefix)
    path = tmp_path / "ledger.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    names = [n for n in optuna.get_all_study_names(storage) if not n.endswith("/final")]
    assert len(names) == 2
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        assert len(trials) == TRIALS, name  # exactly the budget: none failed and replaced
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), name
        params = [tuple(sorted(t.params.items())) for t in trials]
        assert len(set(params)) == TRIALS, f"{name} repeats a configuration"

    # Every rung decision, replayed in ledger order against the rungs recorded before it.
    study_of, rungs = [], defaultdict(list)
    decided_against_old_rungs = 0
    for number, line in enumerate(lines):
        if line["op_code"] == 4:  # CREATE_TRIAL: trial ids count up in ledger order
            study_of.append(line["study_id"])
        if line["op_code"] != 9:  # SET_TRIAL_SYSTEM_ATTR
            continue
        ((attr, value),) = line["system_attr"].items()
        if not attr.startswith("completed_rung_"):
            continue
        rung = int(attr.removeprefix("completed_rung_"))
        trial = storage.get_trial(line["trial_id"])
        recorded = rungs[(study_of[line["trial_id"]], rung)]
        step = REDUCTION**rung  # grace period 1
        stopped_here = trial.state == TrialState.PRUNED and trial.last_step == step
        assert stopped_here != _promotable(value, [v for v, _ in recorded] + [value]), (
            f"trial {trial.number} at rung {rung}: value {value}, rung before it {recorded}"
        )
        if any(when < crashes[0] for _, when in recorded) and number >= crashes[0]:
            decided_against_old_rungs += 1
        recorded.append((value, number))
    assert decided_against_old_rungs > 0, "no decision after a crash met a rung from before it"

    # Nothing of the told trials is left in S3, and MLflow holds each trial once.
    left = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/trial_state/")
    assert left.get("KeyCount", 0) == 0, [i["Key"] for i in left.get("Contents", [])]
    sweep_id = prefix.rsplit("/", 1)[1]
    runs = child_runs(spec.tracking.uri, "small", sweep_id)
    assert Counter(r.data.tags["trial_id"] for r in runs).most_common(1)[0][1] == 1
    assert Counter(r.data.tags["phase"] for r in runs) == {"search": 2 * TRIALS, "final": 4}
    assert {r.info.status for r in runs} == {"FINISHED"}

    # What the killed drivers had queued for MLflow was in their outboxes, on their machines'
    # disks (the node cache): each resume on a new machine rebuilt the records from the
    # ledger, so MLflow holds each told trial's scores exactly as the ledger does.
    client = MlflowClient(spec.tracking.uri)
    for name in optuna.get_all_study_names(storage):
        cell = name.split("/", 1)[1].removesuffix("/final")
        for trial in optuna.load_study(study_name=name, storage=storage).get_trials():
            if name.endswith("/final"):
                (run,) = [
                    r
                    for r in runs
                    if (r.data.tags["phase"], r.data.tags["cell"], r.data.tags["seed"])
                    == ("final", cell, str(trial.user_attrs["seed"]))
                ]
                assert run.data.metrics["test_top1"] == trial.value, (name, trial.number)
                continue
            (run,) = [
                r
                for r in runs
                if (r.data.tags["phase"], r.data.tags["cell"], r.data.tags.get("optuna_trial"))
                == ("search", cell, str(trial.number))
            ]
            history = client.get_metric_history(run.info.run_id, "val_top1")
            assert {m.step: m.value for m in history} == trial.intermediate_values, (
                name,
                trial.number,
            )
