"""The cluster configs under infra/, checked offline against the installed Ray.

Every Ray autoscaler config is validated the way `ray up` validates it (Ray's own defaults
filled in, then ray-schema.json and Ray's validate_config), and held to the project's rules:
workers scale to zero, the image matches the installed Ray, the head runs no trials, spot
comes first with an on-demand fallback. The KubeRay RayJob is checked for the structure KubeRay
needs, and nothing under infra/ may look like a credential.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
RAY_CONFIGS = sorted(
    p for p in INFRA.glob("*.yaml") if "provider" in (yaml.safe_load(p.read_text()) or {})
)
IMAGE = f"rayproject/ray:{ray.__version__}-py311-gpu"
RAYJOB = INFRA / "k8s" / "rayjob-sweep.yaml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def schema_errors(raw: dict) -> list[str]:
    """What `ray up` would reject: Ray's defaults filled in, then ray-schema.json (Draft 7)
    and Ray's own validate_config. Empty when the config is valid."""
    schema = json.loads((files("ray.autoscaler") / "ray-schema.json").read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validator = jsonschema.Draft7Validator(schema)
    documents = [prepared] if raw["provider"]["type"] == "local" else [raw, prepared]
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
        for document in documents
        for e in validator.iter_errors(document)
    ]
    try:
        validate_config(prepared)
    except (jsonschema.ValidationError, ValueError, RuntimeError) as err:
        errors.append(f"ray validate_config: {str(err).splitlines()[0]}")
    return errors


def worker_types(prepared: dict) -> dict:
    types = prepared["available_node_types"]
    if prepared["provider"]["type"] == "local":
        return types  # one node type, shared by the head and the workers
    return {name: t for name, t in types.items() if name != prepared["head_node_type"]}


def test_there_are_cluster_configs_to_check():
    assert {p.name for p in RAY_CONFIGS} >= {"aws-gpu.yaml", "onprem.yaml"}


@pytest.mark.parametrize("path", RAY_CONFIGS, ids=lambda p: p.name)
class TestRayClusterConfig:
    def test_valid_against_rays_schema_and_validator(self, path):
        assert schema_errors(load(path)) == []

    def test_opens_with_how_to_run_it(self, path):
        header = path.read_text().split("\n\n")[0]
        rel = path.relative_to(REPO)
        for command in (f"ray up -y {rel}", f"ray submit {rel} infra/run_sweep.py", "ray down"):
            assert command in header, f"{path.name} header lacks {command!r}"

    def test_has_workers_and_every_worker_type_can_start_from_none(self, path):
        prepared = prepare_config(load(path))
        types = worker_types(prepared)
        assert types and prepared["max_workers"] >= 1
        if prepared["provider"]["type"] != "local":  # see test_onprem_keeps_every_machine
            assert {n: t.get("min_workers") for n, t in types.items()} == dict.fromkeys(types, 0)
            assert prepared["idle_timeout_minutes"] > 0

    def test_image_is_rays_gpu_image_of_the_installed_version(self, path):
        docker = load(path)["docker"]
        assert docker["image"] == IMAGE
        assert docker["image"].endswith("-py311-gpu")
        assert {docker.get("head_image", IMAGE), docker.get("worker_image", IMAGE)} == {IMAGE}

    def test_head_runs_no_trials(self, path):
        raw = load(path)
        if raw["provider"]["type"] == "local":  # resources are detected, so the flags decide
            start = " ".join(raw["head_start_ray_commands"])
            assert "--num-gpus=0" in start and "--num-cpus=0" in start
        else:
            head = raw["available_node_types"][raw["head_node_type"]]["resources"]
            assert head.get("GPU", 0) == 0 and head.get("CPU") == 0

    def test_repository_with_its_sweeps_is_mounted_and_installed(self, path):
        raw = load(path)
        mounts = {remote: (REPO / local).resolve() for remote, local in raw["file_mounts"].items()}
        repo_mounts = [remote for remote, local in mounts.items() if local == REPO]
        assert repo_mounts, "the repository root is not in file_mounts"
        assert sorted((REPO / "sweeps").glob("*.yaml")), "no sweep specs to ship"
        assert ".gitignore" in raw.get("rsync_filter", [])  # keeps .venv/ and runs out
        assert "sweeps" not in (REPO / ".gitignore").read_text().split()
        assert any("pip install" in cmd and repo_mounts[0] in cmd for cmd in raw["setup_commands"])

    def test_storage_is_a_path_every_node_mounts(self, path):
        options = load(path)["docker"]["run_options"]
        env = dict(o.removeprefix("--env=").split("=", 1) for o in options if "--env=" in o)
        volumes = [o.removeprefix("--volume=").split(":")[1] for o in options if "--volume=" in o]
        storage = env["SPARSE_TRANSFER_STORAGE"]
        assert any(storage.startswith(v + "/") for v in volumes), (storage, volumes)


def test_a_typo_or_a_wrong_type_fails_validation():
    raw = load(INFRA / "aws-gpu.yaml")
    typo = copy.deepcopy(raw)
    typo["available_node_types"]["gpu1-spot"]["max_worker"] = 4
    wrong_type = copy.deepcopy(raw)
    wrong_type["idle_timeout_minutes"] = "ten"
    fractional = copy.deepcopy(raw)
    fractional["available_node_types"]["gpu1-spot"]["resources"]["GPU"] = 0.5
    for broken, key in ((typo, "max_worker"), (wrong_type, "ten"), (fractional, "0.5")):
        errors = schema_errors(broken)
        assert errors and any(key in e for e in errors), errors


def aws_gpu_types() -> dict:
    raw = load(INFRA / "aws-gpu.yaml")
    return {n: t for n, t in raw["available_node_types"].items() if t["resources"].get("GPU")}


def is_spot(node_type: dict) -> bool:
    return node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"


def test_aws_each_spot_gpu_type_has_an_on_demand_twin_ranked_below_it():
    types = aws_gpu_types()
    spot = {n: t for n, t in types.items() if is_spot(t)}
    on_demand = {n: t for n, t in types.items() if not is_spot(t)}
    assert spot and on_demand
    shapes = {t["node_config"]["InstanceType"] for t in types.values()}
    assert shapes >= {"g5.2xlarge", "g5.12xlarge"}
    for name, t in spot.items():
        twins = [
            o
            for o in on_demand.values()
            if o["node_config"]["InstanceType"] == t["node_config"]["InstanceType"]
            and o["resources"] == t["resources"]
        ]
        assert twins, f"{name} has no on-demand fallback"
        assert all(t["priority"] > o.get("priority", 0) for o in twins)


def test_onprem_keeps_every_machine():
    # The local provider declares no resources for its machines, so with min_workers: 0 the
    # autoscaler would find no node type for a waiting trial and never start a worker.
    raw = load(INFRA / "onprem.yaml")
    (node_type,) = prepare_config(copy.deepcopy(raw))["available_node_types"].values()
    assert node_type["min_workers"] == len(raw["provider"]["worker_ips"])
    scale_to_zero = {**copy.deepcopy(raw), "min_workers": 0}
    assert plan_launches(scale_to_zero, {"CPU": 4, "GPU": 1}, 1) == {}


def test_onprem_addresses_are_documentation_placeholders():
    provider = load(INFRA / "onprem.yaml")["provider"]
    for address in [provider["head_ip"], *provider["worker_ips"]]:
        assert address.startswith("192.0.2.")  # TEST-NET-1 (RFC 5737): never a real machine


def test_aws_nodes_get_credentials_only_from_instance_profiles():
    raw = load(INFRA / "aws-gpu.yaml")
    profiles = {
        n: t["node_config"]["IamInstanceProfile"]["Name"]
        for n, t in raw["available_node_types"].items()
    }
    assert profiles.pop(raw["head_node_type"]) == "sparse-transfer-head"
    assert set(profiles.values()) == {"sparse-transfer-worker"}
    head_policy = json.loads((INFRA / "aws-iam-head-policy.json").read_text())
    passed = [s["Resource"] for s in head_policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert passed == ["arn:aws:iam::*:role/sparse-transfer-worker"]


def test_aws_workers_mount_the_heads_shared_disk():
    # A worker type without its own initialization_commands would run the head's (the NFS
    # server) instead, and its trials would not see the sweep storage.
    for name, t in load(INFRA / "aws-gpu.yaml")["available_node_types"].items():
        if name != "head":
            assert "$RAY_HEAD_IP:/mnt/shared /mnt/shared" in " ".join(
                t["initialization_commands"]
            ), name


def plan_launches(raw: dict, demand: dict, count: int, **availability) -> dict[str, int]:
    """The node types Ray's autoscaler (v2, the default for `ray up`) would launch for
    `count` waiting trials of `demand` on an empty cluster of config `raw`."""
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
    from ray.autoscaler.v2.utils import ResourceRequestUtil

    config = AutoscalingConfig(copy.deepcopy(raw), skip_content_hash=True)
    request = SchedulingRequest(
        disable_launch_config_check=True,
        node_type_configs=config.get_node_type_configs(),
        max_num_nodes=config.get_max_num_nodes(),
        resource_requests=ResourceRequestUtil.group_by_count(
            [ResourceRequestUtil.make(demand)] * count
        ),
        **availability,
    )
    reply = ResourceDemandScheduler().schedule(request)
    return {launch.instance_type: launch.count for launch in reply.to_launch}


def test_aws_autoscaler_launches_spot_first():
    raw = load(INFRA / "aws-gpu.yaml")
    assert plan_launches(raw, {"CPU": 8, "GPU": 1}, 1) == {"gpu1-spot": 1}
    assert plan_launches(raw, {"CPU": 8, "GPU": 1}, 4) == {"gpu4-spot": 1}


def test_aws_autoscaler_falls_back_to_on_demand_when_spot_is_unavailable():
    raw = load(INFRA / "aws-gpu.yaml")
    demoted = {"recoverable_resource_availabilities": {"gpu1-spot": 0.0, "gpu4-spot": 0.0}}
    assert plan_launches(raw, {"CPU": 8, "GPU": 1}, 1, **demoted) == {"gpu1-ondemand": 1}
    assert plan_launches(raw, {"CPU": 8, "GPU": 1}, 4, **demoted) == {"gpu4-ondemand": 1}


def test_aws_fractional_gpus_share_a_node_only_when_the_cpus_fit_too():
    raw = load(INFRA / "aws-gpu.yaml")  # the rule infra/README.md states
    assert plan_launches(raw, {"CPU": 4, "GPU": 0.5}, 2) == {"gpu1-spot": 1}
    assert plan_launches(raw, {"CPU": 8, "GPU": 0.5}, 2) == {"gpu1-spot": 2}


def test_aws_gpu_nodes_fit_every_paper_specs_trials_and_fill_their_gpus():
    """Each paper spec's trial (and each dataset's own resources) fits a GPU node type, and
    on each type the CPUs are enough for a trial on every GPU (none idles for want of CPUs)."""
    from sparse_transfer.config import load_spec

    types = aws_gpu_types()
    for path in sorted((INFRA.parent / "sweeps").glob("paper_*.yaml")):
        spec = load_spec(path)
        for dataset in spec.datasets:
            r = spec.resources_for(dataset)
            for name, t in types.items():
                cpus, gpus = t["resources"]["CPU"], t["resources"]["GPU"]
                trials = int(gpus / r.gpu) if r.gpu else 1
                assert trials * r.cpu <= cpus, (path.name, dataset, name)
            launched = plan_launches(load(INFRA / "aws-gpu.yaml"), {"CPU": r.cpu, "GPU": r.gpu}, 1)
            assert launched, (path.name, dataset, "no node type fits")


def test_aws_gpu_workers_run_cuda_mps_shared_with_their_containers():
    raw = load(INFRA / "aws-gpu.yaml")
    for name, t in aws_gpu_types().items():
        assert "nvidia-cuda-mps-control -d" in " ".join(t["initialization_commands"]), name
    options = raw["docker"]["worker_run_options"]
    assert "--ipc=host" in options
    assert "--volume=/tmp/nvidia-mps:/tmp/nvidia-mps" in options
    assert "--env=CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in options


# -- KubeRay ----------------------------------------------------------------------------------
def rayjob_documents() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(RAYJOB.read_text()) if d}


def test_rayjob_structure():
    job = rayjob_documents()["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int)
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no trials on the head
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["image"] == IMAGE
    assert "MLFLOW_TRACKING_URI" in {e["name"] for e in head_container["env"]}
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] >= 1
    (worker_container,) = workers["template"]["spec"]["containers"]
    assert worker_container["image"] == IMAGE
    assert worker_container["resources"]["limits"]["nvidia.com/gpu"] >= 1


def test_rayjob_runs_the_entry_script_on_a_spec_in_the_repo():
    entrypoint = rayjob_documents()["RayJob"]["spec"]["entrypoint"].split()
    assert entrypoint[:2] == ["python", "infra/run_sweep.py"]
    spec = entrypoint[2]
    assert spec.startswith("sweeps/") and (REPO / spec).is_file()


def test_rayjob_installs_what_pyproject_pins():
    runtime_env = yaml.safe_load(rayjob_documents()["RayJob"]["spec"]["runtimeEnvYAML"])
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [d for d in pyproject["project"]["dependencies"] if not d.startswith("ray")]
    assert sorted(runtime_env["pip"]) == sorted(wanted)
    assert runtime_env["working_dir"].startswith("s3://sparse-transfer-")


def test_rayjob_pods_get_aws_access_from_their_service_account():
    docs = rayjob_documents()
    account = docs["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    cluster = docs["RayJob"]["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    assert {p["spec"]["serviceAccountName"] for p in pods} == {account["metadata"]["name"]}


# -- Credentials ------------------------------------------------------------------------------
CREDENTIAL_PATTERNS = [
    re.compile(r"(?i)aws_access_key_id"),
    re.compile(r"(?i)aws_secret_access_key"),
    re.compile(r"(?i)aws_session_token"),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(secret|password|token)[\w-]*\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{16,}"),
]
SECRET_NAME = re.compile(r"(?i)secret|password|token|access_key")


def credential_findings(root: Path) -> list[str]:
    findings = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        findings += [
            f"{path}: {m.group(0)}" for pat in CREDENTIAL_PATTERNS for m in pat.finditer(text)
        ]
        if path.suffix in (".yaml", ".yml"):
            findings += [f"{path}: {key}" for key in literal_secret_keys(yaml.safe_load_all(text))]
    return findings


def literal_secret_keys(node) -> list[str]:
    """Keys named like secrets that hold a literal value (Kubernetes env entries included)."""
    found = []
    if isinstance(node, dict):
        if SECRET_NAME.search(str(node.get("name", ""))) and "value" in node:
            found.append(str(node["name"]))
        for key, value in node.items():
            if SECRET_NAME.search(str(key)) and isinstance(value, str | int) and value != "":
                found.append(str(key))
            found += literal_secret_keys(value)
    elif isinstance(node, list | tuple) or hasattr(node, "__next__"):
        for item in node:
            found += literal_secret_keys(item)
    return found


def test_nothing_under_infra_looks_like_a_credential():
    assert credential_findings(INFRA) == []


def test_the_credential_scan_finds_planted_secrets(tmp_path):
    fake_id = "AKIA" + "ABCDEFGHIJKLMNOP"
    (tmp_path / "a.yaml").write_text(f"provider:\n  key: {fake_id}\n")
    (tmp_path / "b.sh").write_text("export AWS_SECRET_ACCESS_KEY=abc\n")
    (tmp_path / "c.yaml").write_text("env:\n  - name: MLFLOW_TRACKING_PASSWORD\n    value: x\n")
    findings = credential_findings(tmp_path)
    assert {Path(f.split(":")[0]).name for f in findings} == {"a.yaml", "b.sh", "c.yaml"}


# -- The rest of infra/ -------------------------------------------------------------------------
def test_dockerfile_builds_on_the_installed_rays_image():
    assert f"FROM {IMAGE}" in (INFRA / "Dockerfile").read_text().splitlines()


def test_s3_policy_is_scoped_to_the_projects_buckets():
    policy = json.loads((INFRA / "aws-iam-s3-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        actions = (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
        assert all(a.startswith("s3:") and "*" not in a for a in actions)
        assert statement["Resource"].startswith("arn:aws:s3:::sparse-transfer-")


def test_docs_and_headers_name_only_files_that_exist():
    texts = [INFRA / "README.md", INFRA / "mlflow" / "README.md", *RAY_CONFIGS, RAYJOB]
    named = {m for p in texts for m in re.findall(r"\binfra/[\w./-]*\w", p.read_text())}
    assert named
    assert [n for n in sorted(named) if not (REPO / n).exists()] == []
