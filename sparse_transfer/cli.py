"""The `sparse-transfer` command line: parse, call, print."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from sparse_transfer import console
from sparse_transfer.commands.checkpoint import app as checkpoint_app

_PLACEHOLDERS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "PATH"}


def _placeholder(param, ctx) -> str | None:
    """An option's value placeholder: its metavar, else an upper-case word (`PATH`, `INTEGER`,
    `TEXT`). typer 0.29 writes the Python type instead (`<list[Path]>`) and puts it beside
    every argument's name too; checked against typer 0.29.2 (2026-12-03)."""
    if isinstance(param, typer.core.TyperArgument):
        return None  # the argument's name is its placeholder
    if param.metavar:
        return param.metavar
    label = param.display_type(ctx).strip("<>")
    label = label.removeprefix("list[").removesuffix("]").lower()
    return _PLACEHOLDERS.get(label, label.upper())


typer.core.TyperArgument.display_type_rich = _placeholder
typer.core.TyperOption.display_type_rich = _placeholder

# Plain help: typer's rich panels show every flag as taking a value (`--dry-run <bool>`).
app = typer.Typer(
    help="Sweeps over how well sparse ImageNet models transfer (Ray Tune + Optuna + MLflow).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
zoo_app = typer.Typer(
    help="The upstream zoo of pretrained and pruned models.",
    short_help="The upstream zoo of pretrained and pruned models.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(zoo_app, name="zoo")
app.add_typer(checkpoint_app, name="checkpoint")

QUICKSTART_SPEC = files("sparse_transfer.config") / "quickstart.yaml"
# Ray usage stats and MLflow telemetry stay off unless the user turns them on: all of them
# with SPARSE_TRANSFER_TELEMETRY=1, or one by setting its own variable (which is respected).
TELEMETRY_ENV = "SPARSE_TRANSFER_TELEMETRY"
TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a spec key (dotted path) before validation; repeatable, e.g. "
        "--set search.trials_per_cell=8 --set seeds=[0,1,2]",
    ),
]
ZooOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a zoo spec key (dotted path) before validation; repeatable, e.g. "
        "--set pretrain_epochs=5 --set storage=/tmp/runs",
    ),
]
SpecOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a key of every spec given (dotted path) before validation; "
        "repeatable, e.g. --set data_root=/data",
    ),
]
Verbose = Annotated[
    bool,
    typer.Option("--verbose", help="Also show Ray's, MLflow's and Alembic's own log lines."),
]
Address = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS",
        help="Ray cluster to connect to (e.g. ray://host:10001 or auto); default: a local Ray.",
    ),
]


@app.callback()
def _telemetry_defaults() -> None:
    # Runs before every command, so before Ray or MLflow start (Ray's workers inherit it).
    if os.environ.get(TELEMETRY_ENV) != "1":
        for name, value in TELEMETRY_OFF.items():
            os.environ.setdefault(name, value)


def _fail(message: str, code: int = 2) -> None:
    """Every error the CLI reports starts with `error: `."""
    typer.echo(message if message.startswith("error: ") else f"error: {message}", err=True)
    raise typer.Exit(code)


def _interrupted(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(130)


@app.command(short_help="Check specs and the files they name, running nothing.")
def validate(
    specs: Annotated[
        list[Path],
        typer.Argument(metavar="SPEC...", help="Sweep specs; zoo_*.yaml are zoo specs."),
    ],
    overrides: SpecOverrides = None,
) -> None:
    """Check sweep and zoo specs, and the dataset and checkpoint files they name, without
    running anything (exit 0 when all are valid)."""
    from sparse_transfer.config import SpecError, load_spec
    from sparse_transfer.config.zoo_spec import load_zoo_spec
    from sparse_transfer.sweep.paths_check import check_paths

    bad = 0
    for path in specs:
        try:
            if path.name.startswith("zoo_"):
                zoo = load_zoo_spec(path, overrides or [])
                typer.echo(f"{path}: ok (zoo {zoo.name!r}, {len(zoo.entries)} entries)")
                continue
            spec = load_spec(path, overrides or [])
        except SpecError as err:
            bad += 1
            typer.echo(f"error: {err}", err=True)
            continue
        found = check_paths(spec)
        for problem in found.problems:
            typer.echo(f"error: {path}: {problem}", err=True)
        bad += bool(found.problems)
        if not found.problems:
            typer.echo(f"{path}: ok ({_describe(spec)})")
        if found.unchecked:
            typer.echo(f"{path}: not checked ({found.why_unchecked}): {found.unchecked_text()}")
    if bad:
        raise typer.Exit(1)


def _describe(spec) -> str:
    from sparse_transfer.sweep.budget import describe

    return describe(spec)


@app.command(short_help="Run a study from a sweep spec.")
def sweep(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec YAML file.")],
    overrides: Overrides = None,
    address: Address = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Go through every layer cheaply: every cell, one trial, one epoch of 2 small "
            "batches, one seed, into the experiment <name>-dryrun.",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Run a study: search every cell, re-run each cell's best config per seed, report."""
    console.configure(verbose)
    from sparse_transfer.config import SpecError, load_spec

    try:
        loaded = load_spec(spec, overrides or [])
    except SpecError as err:
        _fail(str(err))
    _run(loaded.as_dry_run() if dry_run else loaded, address)


@app.command(short_help="Run the offline smoke-scale quickstart study.")
def quickstart(
    storage: Annotated[
        Path, typer.Option(metavar="DIR", help="Where runs, zoo and features go.")
    ] = Path("sparse-transfer-runs"),
    overrides: Overrides = None,
    verbose: Verbose = False,
) -> None:
    """Run the embedded offline quickstart: a smoke-scale study of the whole pipeline on
    handwritten digits (about 1.5-2 minutes on an idle 2-core CPU)."""
    console.configure(verbose)
    from sparse_transfer.config import load_spec

    _run(load_spec(Path(str(QUICKSTART_SPEC)), [f"storage={storage}", *(overrides or [])]), None)


def _run(spec, address: str | None) -> None:
    from sparse_transfer.paths import UnsafeInputError
    from sparse_transfer.storage import StorageError
    from sparse_transfer.sweep import run_sweep
    from sparse_transfer.sweep.runner import SweepFailedError, SweepHalted, SweepInterrupted
    from sparse_transfer.sweep.upstream import PreflightError
    from sparse_transfer.tracking import TrackingUnavailable

    try:
        state = run_sweep(spec, address=address)
    except (
        KeyError,
        FileNotFoundError,
        StorageError,
        UnsafeInputError,
        PreflightError,
        TrackingUnavailable,
    ) as err:
        _fail(f"error: {err.args[0] if err.args else err}")
    except (SweepFailedError, SweepHalted) as err:
        _fail(f"error: {err}", code=1)
    except SweepInterrupted as err:
        _interrupted(str(err))
    _print_outcome(state)


TakeOver = Annotated[
    bool,
    typer.Option(
        "--take-over",
        help="The sweep's last driver is dead (its machine gone): take its lease.",
    ),
]


@app.command(short_help="Finish an interrupted study.")
def resume(
    sweep_dir: Annotated[
        str,
        typer.Argument(
            metavar="SWEEP",
            help="The sweep to finish: its directory, or s3://bucket/prefix/sweeps/<id>.",
        ),
    ],
    address: Address = None,
    take_over: TakeOver = False,
    verbose: Verbose = False,
) -> None:
    """Finish whatever an interrupted study lacks (trials, report, MLflow records), without
    re-running finished trials or duplicating runs."""
    console.configure(verbose)
    from sparse_transfer.sweep import resume_sweep

    with _sweep_errors():
        state = resume_sweep(sweep_dir, address=address, take_over=take_over)
    _print_outcome(state)


@app.command(short_help="Send the MLflow records a sweep's outbox still holds.")
def sync(
    sweep_dir: Annotated[
        str,
        typer.Argument(
            metavar="SWEEP",
            help="The sweep whose records to send: its directory, or s3://.../sweeps/<id>.",
        ),
    ],
    take_over: TakeOver = False,
) -> None:
    """Send the MLflow records a sweep's outbox still holds (after the server was down)."""
    from sparse_transfer.sweep.runner import sync_sweep

    with _sweep_errors():
        left = sync_sweep(sweep_dir, log=typer.echo, take_over=take_over)
    if left:
        _fail(f"{left} records still wait: the tracking server did not take them", code=1)
    typer.echo("mlflow: every record of the sweep is sent")


@contextmanager
def _environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _sweep_errors():
    from sparse_transfer.paths import UnsafeInputError
    from sparse_transfer.storage import StorageError
    from sparse_transfer.sweep.lease import SweepBusy
    from sparse_transfer.sweep.ledger import LedgerConflict
    from sparse_transfer.sweep.runner import SweepFailedError, SweepHalted, SweepInterrupted
    from sparse_transfer.tracking import TrackingUnavailable

    try:
        yield
    except (FileNotFoundError, StorageError, UnsafeInputError, TrackingUnavailable) as err:
        _fail(f"error: {err}")
    except (SweepBusy, LedgerConflict) as err:
        _fail(f"error: {err}", code=3)
    except (SweepFailedError, SweepHalted) as err:
        _fail(f"error: {err}", code=1)
    except SweepInterrupted as err:
        _interrupted(str(err))


def _print_outcome(state) -> None:
    import pandas as pd

    from sparse_transfer.config import load_spec

    spec = load_spec(state.sweep_dir / "spec.resolved.yaml")
    report = state.sweep_dir / "report"
    for name in ("summary.csv", "report.html"):  # a resume on another machine: from S3
        state.store.download("sweeps", state.sweep_id, "report", name)
    summary = pd.read_csv(
        report / "summary.csv", keep_default_na=False, na_values=[""], dtype={"mode": str}
    )
    typer.echo(f"\n{spec.name}: {spec.description}" if spec.description else "")
    typer.echo("Summary: mean over datasets of (accuracy - dense accuracy), in points\n")
    typer.echo(console.summary_table(summary))
    typer.echo(f"\nreport:  {report / 'report.html'}")
    view = _final_runs_view(state)
    for line in console.sweep_hints(state.tracking_uri, view, _dashboard_snapshot(state, spec)):
        typer.echo(line)
    failed = getattr(state, "failed_cells", {})
    for cell, why in failed.items():
        typer.echo(f"FAILED cell {cell}: {why}", err=True)
    if failed:
        _fail(f"{len(failed)} cell(s) failed and have no final runs (see above)", code=1)


def _final_runs_view(state) -> tuple[str, str] | None:
    """The saved MLflow view of the sweep's final runs, or None when MLflow did not answer
    (the runs are there; only the link is not printed)."""
    from sparse_transfer.tracking.views import save_final_runs_view

    # A server that is down has already cost the sweep its bounded wait: one quick try here.
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    try:
        with _environment(quick):
            return save_final_runs_view(state.tracking_uri, state.experiment, state.sweep_id)
    except Exception as err:  # the sweep is done: a link is not worth a traceback
        typer.echo(f"mlflow:  no link to the final runs ({err})", err=True)
        return None


def _dashboard_snapshot(state, spec) -> Path | None:
    """A snapshot of the sweep's search studies for optuna-dashboard (never the ledger)."""
    from sparse_transfer.sweep.ledger import LEDGER_FILE
    from sparse_transfer.sweep.snapshot import SNAPSHOT_FILE, write_dashboard_snapshot

    ledger = state.sweep_dir / LEDGER_FILE
    if not ledger.is_file():
        return None
    return write_dashboard_snapshot(ledger, state.sweep_dir / SNAPSHOT_FILE, spec.search.metric)


TABLE_HELP = (
    "A results table (CSV/Parquet); repeat for several. Columns: arch, mode (both optional), "
    "method, sparsity, dataset, seed and top1 in percent (0-100); or the paper's raw format "
    "dset,model,sparsity,seed,val_acc with val_acc a fraction (0-1). A file named "
    "<arch>_<full|linear>.csv gives the arch and mode its rows lack."
)


@app.command(short_help="Write a report from MLflow or from result tables.")
def report(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Directory for the report files.")],
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment to read.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    sweep_id: Annotated[
        str | None, typer.Option(help="This sweep's runs (default: the latest sweep).")
    ] = None,
    all_sweeps: Annotated[
        bool, typer.Option("--all-sweeps", help="Pool every sweep of the experiment.")
    ] = False,
    from_table: Annotated[list[Path] | None, typer.Option(help=TABLE_HELP)] = None,
    paper: Annotated[
        list[str] | None,
        typer.Option(
            help="One of the paper's published tables shipped with the package: "
            "resnet50_full, resnet50_linear, mobilenetv1_full, mobilenetv1_linear; repeatable."
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="Transfer mode of tables that have no mode column (full or linear)."),
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Architecture of tables that have no arch column.")
    ] = None,
    speed: Annotated[
        Path | None,
        typer.Option(
            help="A speed table (the --out DIR of `sparse-transfer speed`) to show beside the "
            "accuracy; it must be measured on the same weights."
        ),
    ] = None,
) -> None:
    """Write results.parquet, summary.csv, a plot and report.html from MLflow or tables."""
    from sparse_transfer.analysis import format_summary, summarize, write_report

    tables = [*(from_table or []), *(paper or [])]
    if (experiment is None) == (not tables):
        _fail("give --experiment, or tables with --from-table/--paper (not both)")
    try:
        if experiment is not None:
            results, extras = _mlflow_report_input(experiment, tracking_uri, sweep_id, all_sweeps)
        else:
            results, extras = _table_report_input(from_table or [], paper or [], mode, arch)
        if speed is not None:
            extras.update(_speed_input(speed, extras.pop("weights", None)))
        extras.pop("weights", None)
        paths = write_report(results, out, **extras)
    except ValueError as err:
        _fail(str(err))
    typer.echo(format_summary(summarize(results)))
    typer.echo(f"\nwrote {paths.results}, {paths.summary}, {paths.figure}, {paths.html}")


def _table_report_input(tables: list[Path], papers: list[str], mode, arch):
    import pandas as pd

    from sparse_transfer.analysis import load_table, paper_table

    frames = [load_table(path, mode=mode, arch=arch) for path in tables]
    frames += [paper_table(name) for name in papers]
    names = [str(path) for path in tables] + [f"the paper's {name}" for name in papers]
    # a table carries no weights: its accuracy is taken as the published checkpoints'
    extras = {"source": ", ".join(names), "weights": "published"}
    return pd.concat(frames, ignore_index=True), extras


def _speed_input(speed: Path, weights) -> dict:
    from sparse_transfer.analysis.speed import read_speed, speedups

    if weights is None:
        raise ValueError(
            "--speed: this sweep's upstream files are not on this node, so the weights its "
            "accuracy was measured on cannot be checked against the speed table's"
        )
    table = read_speed(speed)
    note = f"Speed: {table.attrs['path']}, measured on the same weights as the accuracy."
    return {"speed": speedups(table, weights), "speed_note": note}


def _mlflow_report_input(experiment: str, tracking_uri, sweep_id, all_sweeps: bool):
    from sparse_transfer.analysis import paper_reference
    from sparse_transfer.tracking import default_tracking_uri
    from sparse_transfer.tracking.runs_table import choose_sweep, load_final_runs, load_provenance

    uri = default_tracking_uri(tracking_uri)
    choice = choose_sweep(uri, experiment, sweep_id=sweep_id, all_sweeps=all_sweeps)
    typer.echo(f"report of {choice.describe()}", err=True)
    results = load_final_runs(uri, experiment, sweep_id=choice.sweep_id)
    extras = {
        "source": f"MLflow {uri}, experiment {experiment!r}, {choice.describe()}",
        "reference": paper_reference(results),
    }
    if choice.sweep_id:
        extras["provenance"] = load_provenance(uri, experiment, choice.sweep_id)
        extras["title"] = f"sparse-transfer: {choice.sweep_id}"
        extras["weights"] = _sweep_weights(uri, choice.sweep_id)
    return results, extras


def _sweep_weights(uri: str, sweep_id: str):
    """The upstream files' sha256 of a sweep whose directory is on this node, else None."""
    from sparse_transfer.speed.weights import sweep_weights
    from sparse_transfer.tracking.runs_table import sweep_storage

    storage = sweep_storage(uri, sweep_id)
    if storage is None or "://" in storage:
        return None
    try:
        return sweep_weights(Path(storage) / "sweeps" / sweep_id)
    except ValueError:
        return None


@app.command(short_help="Does tuning change which method wins?")
def compare(
    fixed: Annotated[
        str,
        typer.Argument(
            metavar="FIXED",
            help="The fixed-hyperparameter sweep: its directory (read from its ledger), or its "
            "id (read from MLflow).",
        ),
    ],
    tuned: Annotated[
        str, typer.Argument(metavar="TUNED", help="The tuned sweep: its directory, or its id.")
    ],
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory for compare.csv/.png/.html.")
    ] = Path("compare"),
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI of sweeps given by id.")
    ] = None,
) -> None:
    """Does tuning change which method wins? The rankings of a fixed-hyperparameter sweep and
    a tuned one, per architecture and mode."""
    from sparse_transfer.analysis.compare import tau_title, write_compare

    try:
        (left, left_source), (right, right_source) = (
            _sweep_results(arg, tracking_uri) for arg in (fixed, tuned)
        )
        paths = write_compare(left, right, out, sources=(left_source, right_source))
    except ValueError as err:
        _fail(str(err))
    import pandas as pd

    rankings = pd.read_csv(paths.csv, keep_default_na=False, na_values=[""])
    for _, group in rankings.groupby(["arch", "mode"], sort=False):
        typer.echo(tau_title(group))
        for row in group.itertuples(index=False):
            typer.echo(
                f"  {row.method} {row.sparsity * 100:g}%: fixed {row.fixed_mean_delta_pts:+.2f}"
                f" (rank {row.fixed_rank:g}), tuned {row.tuned_mean_delta_pts:+.2f}"
                f" (rank {row.tuned_rank:g})"
            )
    typer.echo(f"\nwrote {paths.csv}, {paths.cells}, {paths.figure}, {paths.html}")


def _sweep_results(sweep: str, tracking_uri: str | None):
    """A sweep's final runs: from its ledger when given its directory (local or s3://), else
    from MLflow by its id."""
    from sparse_transfer.tracking import default_tracking_uri
    from sparse_transfer.tracking.runs_table import experiment_of_sweep, load_final_runs

    if Path(sweep).is_dir() or "://" in sweep:
        from sparse_transfer.config import SpecError, load_spec
        from sparse_transfer.sweep.runner import SPEC_FILE, SweepState, sweep_results

        try:
            state = SweepState.load(sweep)
            spec = load_spec(state.sweep_dir / SPEC_FILE)
        except (FileNotFoundError, SpecError) as err:
            raise ValueError(f"{sweep}: {err.args[0] if err.args else err}") from None
        found = sweep_results(state, spec)
        return found.table, f"sweep {state.sweep_id} (its ledger, {state.location})"
    uri, sweep_id = default_tracking_uri(tracking_uri), sweep
    experiment = experiment_of_sweep(uri, sweep_id)
    source = f"sweep {sweep_id} (MLflow {uri}, experiment {experiment!r})"
    return load_final_runs(uri, experiment, sweep_id=sweep_id), source


@app.command(short_help="Time every upstream model on each inference engine.")
def speed(
    spec: Annotated[
        Path,
        typer.Argument(metavar="SPEC", help="Sweep spec or zoo spec whose upstreams to time."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for speed.csv, speed.json and the ONNX files (default: "
            "<storage>/speed/<spec name>, where the spec's sweep reports look for it)."
        ),
    ] = None,
    engines: Annotated[
        list[str] | None,
        typer.Option(
            "--engines",
            help="torch, onnxruntime, deepsparse; repeatable or comma-separated "
            "(default: every one available).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Throughput batch size.")] = 64,
    latency: Annotated[
        bool, typer.Option("--latency/--no-latency", help="Also time batch 1 (latency).")
    ] = True,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads per engine (default: this CPU's cores).")
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls before timing.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed calls per batch size.")] = 5,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: speed-<spec name>).")
    ] = None,
    overrides: SpecOverrides = None,
    verbose: Verbose = False,
) -> None:
    """Inference speed of every upstream model on each engine (outputs checked against torch
    first), with speedups vs the dense upstream of the same architecture."""
    console.configure(verbose)
    from sparse_transfer.config import SpecError
    from sparse_transfer.speed import default_threads, make_plan, run_speed
    from sparse_transfer.speed.run import format_speed

    names = [n.strip() for value in engines or [] for n in value.split(",") if n.strip()]
    plan = make_plan(
        batch_size, threads or default_threads(), warmup=warmup, repeats=repeats, latency=latency
    )
    try:
        result = run_speed(
            spec, out, engines=names, plan=plan, overrides=overrides, experiment=experiment
        )
    except (SpecError, KeyError, FileNotFoundError) as err:
        _fail(f"error: {err.args[0] if err.args else err}")
    typer.echo(format_speed(result.table))
    for line in result.problems:
        typer.echo(line, err=True)
    typer.echo(f"\nwrote {result.csv}")
    if result.table["status"].isin(["failed", "wrong"]).any():
        raise typer.Exit(1)  # the other upstreams' rows are in the CSV all the same


@zoo_app.command("build", short_help="Build upstream models as parallel Ray tasks.")
def zoo_build(
    spec: Annotated[
        Path, typer.Argument(metavar="SPEC", help="Zoo spec YAML (see sweeps/zoo_demo.yaml).")
    ],
    overrides: ZooOverrides = None,
    address: Address = None,
    verbose: Verbose = False,
) -> None:
    """Build upstream models (methods x sparsities) as parallel Ray tasks, logged to MLflow."""
    console.configure(verbose)
    import ray

    from sparse_transfer.config import SpecError
    from sparse_transfer.config.zoo_spec import load_zoo_spec
    from sparse_transfer.storage import Storage
    from sparse_transfer.tracking import default_tracking_uri
    from sparse_transfer.tracking.zoo_runs import log_zoo_build
    from sparse_transfer.zoo import build_zoo

    try:
        zoo = load_zoo_spec(spec, overrides or [])
    except SpecError as err:
        _fail(str(err))
    store = Storage(zoo.storage)
    names = [f"{name}{suffix}" for name in zoo.entry_names() for suffix in (".pt", ".json")]
    for name in names:
        store.download("zoo", *name.split("/"))
    if not ray.is_initialized():
        from sparse_transfer.sweep.cluster import ray_address

        ray.init(address=ray_address(address), logging_level="WARNING", log_to_driver=False)
    built = build_zoo(zoo, store.local("zoo"), log=typer.echo, use_ray=True)
    for name in names:
        store.upload("zoo", *name.split("/"))
    if built:
        uri = default_tracking_uri(zoo.tracking.uri)
        experiment = zoo.tracking.experiment or f"zoo-{zoo.name}"
        log_zoo_build(uri, experiment, zoo.name, built)
        typer.echo(f"mlflow: {uri} (experiment {experiment!r})")
    else:
        typer.echo(f"zoo {zoo.name}: every entry is current, nothing built")
    typer.echo(f"zoo: {store.display('zoo', zoo.name)}")


@zoo_app.command("list", short_help="List the zoo entries in a storage.")
def zoo_list(
    storage: Annotated[
        str, typer.Option(help="Storage holding zoo/: a directory or s3://bucket/prefix.")
    ] = "sparse-transfer-runs",
) -> None:
    """List the upstream zoo entries in a storage (local, or S3: fetched to this node)."""
    from sparse_transfer.paths import UnsafeInputError
    from sparse_transfer.storage import Storage, StorageError
    from sparse_transfer.zoo import list_entries

    try:
        store = Storage(storage)
        entries = list_entries(store)
    except (StorageError, UnsafeInputError) as err:
        _fail(f"error: {err}")
    if not entries:
        typer.echo(f"no zoo entries under {store.display('zoo')}")
        return
    rows = [
        [
            e["name"],
            e["method"],
            console.percent(e["target_sparsity"]),
            console.percent(e["sparsity"], digits=2),
            "-" if e["upstream_val_top1"] is None else f"{e['upstream_val_top1']:.1f}%",
            e["sha256"][:12],
        ]
        for e in entries
    ]
    headers = ["name", "method", "target", "measured", "upstream val top1", "sha256"]
    typer.echo(console.table(headers, rows, right={2, 3, 4}))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # python -m sparse_transfer.cli
    main()
