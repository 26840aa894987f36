"""`sparse-transfer checkpoint ...`: look at upstream checkpoints and the paper's catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Upstream checkpoints: inspect a file, list the paper's catalog.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Checkpoint file (.pth, .pt, .safetensors).")],
    arch: Annotated[
        str | None, typer.Option(help="Architecture to check against; default: inferred.")
    ] = None,
    format: Annotated[  # noqa: A002  (the CLI option is --format)
        str | None, typer.Option("--format", help="Checkpoint format; default: detected.")
    ] = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            help="Read the file as this catalog entry does (format, key rules, architecture) "
            "and compare its sparsity with the entry's nominal and actual ones."
        ),
    ] = None,
) -> None:
    """Print JSON: format, architecture, total and per-layer sparsity of the prunable layers,
    and where finetuning masks would come from (the file's stored masks, or its zeros)."""
    from sparse_transfer.models.errors import CheckpointError
    from sparse_transfer.models.inspection import inspect_checkpoint

    try:
        report = inspect_checkpoint(path, arch=arch, format_name=format, catalog=catalog)
    except (CheckpointError, FileNotFoundError, KeyError) as err:
        typer.echo(f"error: {err.args[0] if isinstance(err, KeyError) else err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report, indent=2))


FILL_IN_HINT = (
    'An entry marked "fill in" has no public file: give its upstream a `checkpoint:` in the '
    "spec (a path, s3:// or https://), or put the file at <checkpoint_root>/<name>.pth "
    "(`--set checkpoint_root=DIR`)."
)


@app.command("list")
def list_entries() -> None:
    """List the catalog: name, method, declared sparsity, format, source (or "fill in")."""
    from sparse_transfer.console import table
    from sparse_transfer.models.catalog import CATALOG

    rows, fill_in = [], False
    for name in CATALOG.names():
        e = CATALOG.get(name)
        fill_in |= e.needs_source
        source = e.source or f"fill in: <checkpoint_root>/{name}.pth"
        rows.append([name, e.method, f"{e.sparsity:.2f}", e.format, source])
    typer.echo(table(["name", "method", "sparsity", "format", "source"], rows, right={2}))
    if fill_in:
        typer.echo(f"\n{FILL_IN_HINT}")
