"""`sparse-transfer checkpoint ...`: look at upstream checkpoints and the paper's catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Upstream checkpoints: inspect a file, list the paper's catalog.",
    no_args_is_help=True,
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
) -> None:
    """Print JSON: format, architecture, total and per-layer sparsity of the prunable layers."""
    from sparse_transfer.models.errors import CheckpointError
    from sparse_transfer.models.inspection import inspect_checkpoint

    try:
        report = inspect_checkpoint(path, arch=arch, format_name=format)
    except (CheckpointError, FileNotFoundError, KeyError) as err:
        typer.echo(f"error: {err.args[0] if isinstance(err, KeyError) else err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report, indent=2))


@app.command("list")
def list_entries() -> None:
    """List the catalog: name, method, declared sparsity, format, source (or "fill in")."""
    from sparse_transfer.models.catalog import CATALOG

    for name in CATALOG.names():
        e = CATALOG.get(name)
        typer.echo(
            f"{name:28s} {e.method:12s} {e.sparsity:5.2f}  {e.format:14s} {e.source or 'fill in'}"
        )
