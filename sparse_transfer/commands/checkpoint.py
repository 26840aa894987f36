"""`sparse-transfer checkpoint ...`: look at upstream checkpoints and the paper's catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Upstream checkpoints: inspect a file, list the paper's catalog.",
    short_help="Upstream checkpoints: inspect a file, list the paper's catalog.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command(short_help="Print a checkpoint's format, architecture and sparsity.")
def inspect(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Checkpoint file (.pth, .pt, .safetensors).")
    ],
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


NO_SOURCE_HINT = (
    "An entry with no source is read from <checkpoint_root>/<file>, the file name above: "
    "download it from the page under `published at` (the authors' folder share) into a "
    "directory or s3:// prefix and set the spec's `checkpoint_root` to it "
    "(`--set checkpoint_root=DIR`), or give its upstream a `checkpoint:` in the spec "
    "(a path, s3:// or https://)."
)


@app.command("list", short_help="List the paper's checkpoint catalog.")
def list_entries() -> None:
    """List the catalog: name, method, sparsity, format, file or source, and where published."""
    from sparse_transfer.console import percent, table
    from sparse_transfer.models.catalog import CATALOG

    rows, no_source = [], False
    for name in CATALOG.names():
        e = CATALOG.get(name)
        no_source |= e.needs_source
        where = e.source or f"<checkpoint_root>/{name}.pth"
        published = e.published_at or "not published"
        rows.append([name, e.method, percent(e.sparsity), e.format, where, published])
    headers = ["name", "method", "sparsity", "format", "file (or source)", "published at"]
    typer.echo(table(headers, rows, right={2}))
    if no_source:
        typer.echo(f"\n{NO_SOURCE_HINT}")
