"""The `sparse-transfer` command line: parse, call, print."""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from sparse_transfer.commands.checkpoint import app as checkpoint_app

app = typer.Typer(
    help="Sweeps over how well sparse ImageNet models transfer (Ray Tune + Optuna + MLflow).",
    no_args_is_help=True,
    add_completion=False,
)
zoo_app = typer.Typer(
    help="The upstream zoo of pretrained and pruned models.", no_args_is_help=True
)
app.add_typer(zoo_app, name="zoo")
app.add_typer(checkpoint_app, name="checkpoint")

QUICKSTART_SPEC = files("sparse_transfer.config") / "quickstart.yaml"

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a spec key before validation, e.g. --set search.trials_per_cell=8"
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        help="Ray cluster to connect to (e.g. ray://host:10001 or auto); default: a local Ray."
    ),
]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Sweep specs; zoo_*.yaml are zoo specs.")],
) -> None:
    """Check sweep and zoo specs without running anything (exit 0 when all are valid)."""
    from sparse_transfer.config import SpecError, load_spec
    from sparse_transfer.config.zoo_spec import load_zoo_spec

    bad = 0
    for path in specs:
        try:
            if path.name.startswith("zoo_"):
                zoo = load_zoo_spec(path)
                typer.echo(f"{path}: ok (zoo {zoo.name!r}, {len(zoo.entries)} entries)")
            else:
                typer.echo(f"{path}: ok ({_describe(load_spec(path))})")
        except SpecError as err:
            bad += 1
            typer.echo(str(err), err=True)
    if bad:
        raise typer.Exit(1)


def _describe(spec) -> str:
    from sparse_transfer.sweep.budget import describe

    return describe(spec)


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep spec YAML file.")],
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
) -> None:
    """Run a study: search every cell, re-run each cell's best config per seed, report."""
    from sparse_transfer.config import SpecError, load_spec

    try:
        loaded = load_spec(spec, overrides or [])
    except SpecError as err:
        _fail(str(err))
    _run(loaded.as_dry_run() if dry_run else loaded, address)


@app.command()
def quickstart(
    storage: Annotated[Path, typer.Option(help="Where runs, zoo and features go.")] = Path(
        "sparse-transfer-runs"
    ),
    overrides: Overrides = None,
) -> None:
    """Run the embedded offline quickstart study (handwritten digits, a few minutes on a CPU)."""
    from sparse_transfer.config import load_spec

    _run(load_spec(Path(str(QUICKSTART_SPEC)), [f"storage={storage}", *(overrides or [])]), None)


def _run(spec, address: str | None) -> None:
    from sparse_transfer.storage import StorageError
    from sparse_transfer.sweep import run_sweep
    from sparse_transfer.sweep.runner import SweepFailedError, SweepInterrupted
    from sparse_transfer.sweep.upstream import PreflightError
    from sparse_transfer.tracking import TrackingUnavailable

    try:
        state = run_sweep(spec, address=address)
    except (KeyError, FileNotFoundError, StorageError, PreflightError, TrackingUnavailable) as err:
        _fail(f"error: {err.args[0] if err.args else err}")
    except SweepFailedError as err:
        _fail(f"error: {err}", code=1)
    except SweepInterrupted as err:
        _fail(str(err), code=130)
    _print_outcome(state)


@app.command()
def resume(
    sweep_dir: Annotated[
        str,
        typer.Argument(
            help="The sweep to finish: its directory, or s3://bucket/prefix/sweeps/<id>."
        ),
    ],
    address: Address = None,
) -> None:
    """Finish an interrupted study without re-running finished trials or duplicating runs."""
    from sparse_transfer.sweep import resume_sweep
    from sparse_transfer.sweep.runner import SweepFailedError, SweepInterrupted
    from sparse_transfer.tracking import TrackingUnavailable

    try:
        state = resume_sweep(sweep_dir, address=address)
    except (FileNotFoundError, TrackingUnavailable) as err:
        _fail(str(err))
    except SweepFailedError as err:
        _fail(f"error: {err}", code=1)
    except SweepInterrupted as err:
        _fail(str(err), code=130)
    _print_outcome(state)


def _print_outcome(state) -> None:
    import pandas as pd

    from sparse_transfer.analysis import format_summary

    report = state.sweep_dir / "report"
    typer.echo("\nSummary: mean over datasets of (accuracy - dense accuracy), in points\n")
    typer.echo(
        format_summary(
            pd.read_csv(
                report / "summary.csv", keep_default_na=False, na_values=[""], dtype={"mode": str}
            )
        )
    )
    typer.echo(f"\nreport:  {report / 'report.html'}")
    typer.echo(f"mlflow:  {state.tracking_uri} (experiment {state.experiment!r})")
    typer.echo(f"         mlflow ui --backend-store-uri {state.tracking_uri}")


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Directory for the report files.")],
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment to read.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    sweep_id: Annotated[str | None, typer.Option(help="Only this sweep's runs.")] = None,
    from_table: Annotated[
        Path | None,
        typer.Option(
            help="A results table (CSV/Parquet), including the paper's raw-results format."
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="Transfer mode of a table that has no mode column (full or linear)."),
    ] = None,
) -> None:
    """Write results.parquet, summary.csv, a plot and report.html from MLflow or a table."""
    from sparse_transfer.analysis import format_summary, load_table, summarize, write_report

    if (experiment is None) == (from_table is None):
        _fail("give exactly one of --experiment or --from-table")
    try:
        if from_table is not None:
            results, source = load_table(from_table, mode=mode), str(from_table)
        else:
            from sparse_transfer.tracking import default_tracking_uri
            from sparse_transfer.tracking.runs_table import load_final_runs

            uri = default_tracking_uri(tracking_uri)
            results = load_final_runs(uri, experiment, sweep_id=sweep_id)
            source = f"MLflow {uri}, experiment {experiment!r}"
        paths = write_report(results, out, source=source)
    except ValueError as err:
        _fail(str(err))
    typer.echo(format_summary(summarize(results)))
    typer.echo(f"\nwrote {paths.results}, {paths.summary}, {paths.figure}, {paths.html}")


@app.command()
def bench(
    arch: Annotated[str, typer.Option(help="Architecture to train.")] = "resnet50",
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    steps: Annotated[int, typer.Option(help="Timed steps (after 2 warm-up steps).")] = 10,
    image_size: Annotated[int, typer.Option(help="Input resolution.")] = 224,
    workers: Annotated[int, typer.Option(help="Data-loader worker processes.")] = 4,
    device: Annotated[str | None, typer.Option(help="cuda or cpu; default: cuda if any.")] = None,
) -> None:
    """Full-finetuning images/s with masks vs without, and data loader vs model, side by side."""
    from sparse_transfer.transfer.bench import run_bench

    result = run_bench(
        arch, batch_size, steps, image_size=image_size, workers=workers, device=device
    )
    for line in result.lines():
        typer.echo(line)


@zoo_app.command("build")
def zoo_build(
    spec: Annotated[Path, typer.Argument(help="Zoo spec YAML (see sweeps/zoo_demo.yaml).")],
    overrides: Overrides = None,
    address: Address = None,
) -> None:
    """Build upstream models (methods x sparsities) as parallel Ray tasks, logged to MLflow."""
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
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
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


@zoo_app.command("list")
def zoo_list(
    storage: Annotated[
        str, typer.Option(help="Storage holding zoo/: a directory or s3://bucket/prefix.")
    ] = "sparse-transfer-runs",
) -> None:
    """List the upstream zoo entries in a storage (local, or S3: fetched to this node)."""
    from sparse_transfer.storage import Storage, StorageError
    from sparse_transfer.zoo import list_entries

    try:
        store = Storage(storage)
    except StorageError as err:
        _fail(str(err))
    entries = list_entries(store)
    if not entries:
        typer.echo(f"no zoo entries under {store.display('zoo')}")
    for e in entries:
        typer.echo(
            f"{e['name']:28s} {e['method']:10s} target {e['target_sparsity']:.2f} "
            f"measured {e['sparsity']:.4f}  upstream val top1 {e['upstream_val_top1']:.1f}%"
            f"  sha256 {e['sha256'][:12]}"
        )


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # python -m sparse_transfer.cli
    main()
