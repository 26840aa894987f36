"""Typer sub-apps of the `sparse-transfer` command line, one file per command group."""
