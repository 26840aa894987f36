"""Run one sparse-transfer sweep, or resume one, from a Ray cluster's head node.

This is what `ray submit` and `ray job submit` run; the driver joins the cluster it runs on
(address="auto") and the autoscaler adds GPU workers for the trials:

    ray submit infra/aws-gpu.yaml infra/run_sweep.py -- sweeps/quickstart.yaml
    ray submit infra/aws-gpu.yaml infra/run_sweep.py -- sweeps/quickstart.yaml --set seeds=[0]
    ray submit infra/aws-gpu.yaml infra/run_sweep.py -- sweeps/paper_resnet50_full.yaml --dry-run
    ray submit infra/aws-gpu.yaml infra/run_sweep.py -- \
        --resume /mnt/shared/sparse-transfer-runs/sweeps/<sweep id>
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python infra/run_sweep.py sweeps/quickstart.yaml

(`ray dashboard infra/aws-gpu.yaml` forwards the head's port 8265 to http://127.0.0.1:8265.)
`ray submit` joins the arguments with spaces without quoting them, so keep --set values free
of spaces (`--set seeds=[0,1]`, not `--set "seeds=[0, 1]"`).

Thin on purpose: it parses the command line and calls sparse_transfer. Two cluster facts
shape it:
- `ray submit` copies only this file (to ~ on the head), so a relative SPEC that does not exist
  from the working directory is looked up in the repository copy the cluster config mounts,
  $SPARSE_TRANSFER_REPO (default ~/sparse-transfer).
- every node must reach the sweep's storage (a filesystem shared at the same path, or S3), so
  when $SPARSE_TRANSFER_STORAGE is set (the cluster configs point it at one) it becomes
  `--set storage=...`, placed first so that an explicit `--set storage=...` still wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ENV = "SPARSE_TRANSFER_REPO"
STORAGE_ENV = "SPARSE_TRANSFER_STORAGE"
DEFAULT_REPO = "~/sparse-transfer"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_sweep.py",
        description="Run a sparse-transfer sweep (or resume one) on the Ray cluster this runs on.",
        epilog="e.g. ray submit infra/aws-gpu.yaml infra/run_sweep.py -- sweeps/quickstart.yaml",
    )
    parser.add_argument("spec", nargs="?", help="Sweep spec YAML, e.g. sweeps/quickstart.yaml.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a spec key before validation (repeatable), e.g. search.trials_per_cell=8.",
    )
    parser.add_argument(
        "--resume",
        metavar="SWEEP_DIR",
        help="Finish an interrupted sweep: its directory, or its s3:// URI.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Every cell through every layer at a tiny cost (see `sparse-transfer sweep --help`).",
    )
    args = parser.parse_args(argv)
    if (args.spec is None) == (args.resume is None):
        parser.error("give exactly one of SPEC or --resume SWEEP_DIR")
    if args.resume is not None and (args.overrides or args.dry_run):
        parser.error(
            "--set and --dry-run apply to a new sweep; a resumed sweep keeps its saved spec"
        )
    return args


def spec_overrides(overrides: Sequence[str], env: Mapping[str, str]) -> list[str]:
    storage = env.get(STORAGE_ENV)
    return [f"storage={storage}", *overrides] if storage else list(overrides)


def resolve_spec(spec: str, env: Mapping[str, str]) -> Path:
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return path
    in_repo = Path(env.get(REPO_ENV, DEFAULT_REPO)).expanduser() / path
    return in_repo if in_repo.exists() else path  # a missing spec fails in load_spec, named


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from sparse_transfer.config import SpecError, load_spec
    from sparse_transfer.sweep import resume_sweep, run_sweep
    from sparse_transfer.sweep.runner import SweepFailedError, SweepHalted, SweepInterrupted
    from sparse_transfer.sweep.upstream import PreflightError

    try:
        if args.resume is not None:
            state = resume_sweep(args.resume, address="auto")  # a path or an s3:// URI
        else:
            spec = load_spec(
                resolve_spec(args.spec, os.environ), spec_overrides(args.overrides, os.environ)
            )
            state = run_sweep(spec.as_dry_run() if args.dry_run else spec, address="auto")
    except (SpecError, FileNotFoundError, PreflightError) as err:  # before any trial ran
        print(err, file=sys.stderr)
        return 2
    except (SweepFailedError, SweepHalted) as err:
        print(err, file=sys.stderr)
        return 1
    except SweepInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    print(f"sweep:   {state.sweep_dir}")
    print(f"report:  {Path(state.sweep_dir) / 'report' / 'report.html'}")
    print(f"mlflow:  {state.tracking_uri} (experiment {state.experiment!r})")
    for cell, why in state.failed_cells.items():
        print(f"FAILED cell {cell}: {why}", file=sys.stderr)
    return 1 if state.failed_cells else 0


if __name__ == "__main__":
    sys.exit(main())
