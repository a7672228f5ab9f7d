"""Maintenance commands: checkpoint, compact, vacuum."""

from __future__ import annotations

import datetime as dt

import typer

from lakeflow.cli._app import JsonOpt, StorageOpt, TableArg, app, console, open_table, print_json, progress


@app.command()
def checkpoint(uri: str = TableArg, as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Write a checkpoint at the latest version."""
    version = open_table(uri, options).checkpoint()
    if as_json:
        print_json({"checkpoint_version": version})
    else:
        console.print(f"checkpoint written at version {version}")


@app.command()
def compact(uri: str = TableArg, target_file_size: int = typer.Option(128 * 1024 * 1024, help="Bytes per output file."),
            as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Rewrite small files into larger ones (no change to the rows)."""
    t = open_table(uri, options)
    with progress("compacting"):
        r = t.compact(target_file_size)
    out = {"version": r.version, "files_removed": r.files_removed, "files_added": r.files_added, "rows": r.rows}
    if as_json:
        print_json(out)
    elif r.version is None:
        console.print("nothing to compact")
    else:
        console.print(f"version {r.version}: {r.files_removed} files rewritten into {r.files_added}")


@app.command()
def vacuum(uri: str = TableArg,
           retention_hours: float = typer.Option(168.0, help="Keep files needed within this many hours."),
           yes: bool = typer.Option(False, "--yes", help="Delete the files (default: only list them)."),
           force: bool = typer.Option(False, "--force", help="Allow a retention below the table's setting."),
           as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """List the data files no version within the retention needs; delete them with --yes."""
    t = open_table(uri, options)
    with progress("vacuuming" if yes else "listing files to vacuum"):
        r = t.vacuum(dt.timedelta(hours=retention_hours), dry_run=not yes, enforce_retention=not force)
    if as_json:
        print_json({"files": list(r.files), "bytes": r.bytes, "dry_run": r.dry_run})
        return
    verb = "would delete" if r.dry_run else "deleted"
    console.print(f"{verb} {len(r.files)} files ({r.bytes} bytes)" +
                  (" (a dry run: pass --yes to delete them)" if r.dry_run and r.files else ""), highlight=False)
    for f in r.files:
        console.print(f"  {f}", highlight=False)
