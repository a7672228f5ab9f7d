"""Write commands: create, append, merge, delete, update, overwrite, restore, rename-column, drop-columns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import typer

import lakeflow as lf
from lakeflow.cli._app import (
    JsonOpt,
    PropertyOpt,
    StorageOpt,
    TableArg,
    app,
    console,
    instant,
    names_list,
    open_table,
    print_json,
    progress,
    sql_filter,
    storage_options,
)
from lakeflow.cli._files import FORMATS, infer_schema, read_file, read_files
from lakeflow.cli._types import parse_schema
from lakeflow.config import check_policy

InputFormatOpt = typer.Option(None, "--format", help=f"Input format ({'|'.join(FORMATS)}; default: by suffix).")
WatermarkOpt = typer.Option(None, "--watermark", help="ISO instant: all events before it have arrived.")
LateOpt = typer.Option(None, "--late", help="Rows behind the watermark: accept, reject or quarantine.")
InputFile = typer.Argument(..., exists=True, dir_okay=False, help="Input file (csv, parquet or ndjson).")


@app.command()
def create(uri: str = TableArg,
           schema: pa.Schema | None = typer.Option(None, parser=parse_schema, metavar="NAME:TYPE,...",
                                                   help='Columns, e.g. "id:int64,amount:double,ts:timestamp[us,UTC]".'),
           from_file: Path | None = typer.Option(None, "--from", exists=True, dir_okay=False,
                                                 help="Take the schema from a csv, parquet or ndjson file."),
           partition_by: list[str] | None = typer.Option(None, help="Partition columns (repeatable or a,b)."),
           key: list[str] | None = typer.Option(None, help="Key columns (repeatable or comma-separated)."),
           event_time: str | None = typer.Option(None, help="Event-time column (timestamp or date)."),
           window: str | None = typer.Option(None, help='Event-time window for late data, e.g. "1d".'),
           properties: list[str] | None = PropertyOpt, as_json: bool = JsonOpt,
           options: list[str] | None = StorageOpt) -> None:
    """Create an empty table (version 0)."""
    if (schema is None) == (from_file is None):
        raise typer.BadParameter("pass exactly one of --schema and --from")
    columns = schema if schema is not None else infer_schema(from_file, None)  # type: ignore[arg-type]
    t = lf.Table.create(uri, columns, partition_by=names_list(partition_by) or (), key=names_list(key) or (),
                        event_time=event_time, window=window, storage_options=storage_options(options),
                        properties=dict(p.split("=", 1) for p in properties or []))
    if as_json:
        print_json({"uri": t.uri, "version": t.version, "schema": {f.name: str(f.type) for f in columns}})
    else:
        console.print(f"created {t.uri} (version {t.version}) with columns {', '.join(columns.names)}", highlight=False)


@app.command()
def append(uri: str = TableArg, files: list[Path] = InputFile, fmt: str | None = InputFormatOpt,
           app_id: str | None = typer.Option(None, help="Application id, for exactly-once batches."),
           txn_version: int | None = typer.Option(None, min=0, help="The application's batch number."),
           watermark: str | None = WatermarkOpt, late: str | None = LateOpt,
           as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Append the rows of one or more files in one commit."""
    t = open_table(uri, options)
    mark = instant(watermark, "--watermark") if watermark is not None else None
    before = t.version
    with progress(f"appending {len(files)} files", total=len(files)) as done:
        rows = read_files(files, fmt, t.schema, done)
        version = t.append(rows, app_id=app_id, txn_version=txn_version, watermark=mark,
                           late=check_policy(late, "--late"))
    if as_json:
        print_json({"version": version})
    elif version <= before:  # a new commit is always newer: this batch was committed before
        console.print(f"batch {txn_version} of {app_id} is already in version {version}: nothing written",
                      highlight=False)
    else:
        console.print(f"appended {len(files)} file(s): version {version}", highlight=False)


@app.command()
def merge(uri: str = TableArg, file: Path = InputFile, on: list[str] | None = typer.Option(
              None, help="Key columns to match on (default: the table's key)."),
          fmt: str | None = InputFormatOpt, watermark: str | None = WatermarkOpt, late: str | None = LateOpt,
          as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Upsert a file's rows by key: update matching rows, insert new ones, in one commit."""
    t = open_table(uri, options)
    mark = instant(watermark, "--watermark") if watermark is not None else None
    r = t.merge(read_file(file, fmt, t.schema), on=names_list(on), watermark=mark, late=check_policy(late, "--late"))
    if as_json:
        print_json({**dataclasses.asdict(r), "revised_windows": [w.isoformat() for w in r.revised_windows]})
    else:
        console.print(f"version {r.version}: {r.inserted} inserted, {r.updated} updated, {r.deleted} deleted, "
                      f"{r.unchanged} unchanged, {r.late_rows} late", highlight=False)


@app.command()
def delete(uri: str = TableArg, where: str = typer.Option(..., help="SQL predicate of the rows to delete."),
           as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Delete the rows where a SQL predicate holds, in one commit."""
    t = open_table(uri, options)
    deleted = t.delete(sql_filter(where, t.schema))
    if as_json:
        print_json({"deleted": deleted, "version": t.version})
    else:
        console.print(f"deleted {deleted} rows: version {t.version}", highlight=False)


def _assignments(values: list[str] | None) -> list[str]:
    for v in values or []:
        if "=" not in v or not v.partition("=")[0].strip():
            raise typer.BadParameter(f"{v!r} is not COLUMN=SQL, e.g. amount='amount * 1.1'")
    return values or []


@app.command()
def update(uri: str = TableArg, where: str = typer.Option(..., help="SQL predicate of the rows to update."),
           set_: list[str] = typer.Option(..., "--set", callback=_assignments, metavar="COLUMN=SQL",
                                          help="New value as a SQL expression (repeatable)."),
           as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Set new values on the rows where a SQL predicate holds, in one commit."""
    t = open_table(uri, options)
    assignments = {c.strip(): e.strip() for c, e in (v.split("=", 1) for v in set_)}
    updated = t.update(where, assignments)
    if as_json:
        print_json({"updated": updated, "version": t.version})
    else:
        console.print(f"updated {updated} rows: version {t.version}", highlight=False)


@app.command()
def overwrite(uri: str = TableArg, files: list[Path] = InputFile, fmt: str | None = InputFormatOpt,
              new_schema: bool = typer.Option(False, "--new-schema", help="Replace the schema with the files'."),
              where: str | None = typer.Option(None, help="Replace only the rows this SQL predicate matches."),
              as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Replace every row of the table (or those --where matches) with the rows of the files, in one commit."""
    t = open_table(uri, options)
    schema = infer_schema(files[0], fmt) if new_schema else t.schema
    with progress(f"reading {len(files)} files", total=len(files)) as done:
        rows = read_files(files, fmt, schema, done)
        version = t.overwrite(rows, where=where, schema_mode="overwrite" if new_schema else None)
    if as_json:
        print_json({"version": version})
    else:
        console.print(f"overwrote with {len(files)} file(s): version {version}", highlight=False)


@app.command()
def restore(uri: str = TableArg,
            version: int | None = typer.Option(None, "--version", min=0, help="The version to restore."),
            as_of: str | None = typer.Option(None, "--as-of", help="ISO instant: restore the version of then."),
            as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Commit a new version equal to an earlier one (by number or instant)."""
    if (version is None) == (as_of is None):
        raise typer.BadParameter("pass exactly one of --version or --as-of")
    t = open_table(uri, options)
    new = t.restore(version=version, as_of=instant(as_of, "--as-of") if as_of is not None else None)
    if as_json:
        print_json({"version": new})
    else:
        console.print(f"restored: version {new}", highlight=False)


@app.command("rename-column")
def rename_column(uri: str = TableArg, old: str = typer.Argument(..., help="The column to rename."),
                  new: str = typer.Argument(..., help="Its new name."),
                  as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Rename a column in one metadata-only commit (turns column mapping on; no file is rewritten)."""
    version = open_table(uri, options).rename_column(old, new)
    if as_json:
        print_json({"version": version})
    else:
        console.print(f"renamed {old} to {new}: version {version}", highlight=False)


@app.command("drop-columns")
def drop_columns(uri: str = TableArg,
                 columns: list[str] = typer.Argument(..., help="The columns to drop (repeatable or a,b)."),
                 as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Drop columns in one metadata-only commit (turns column mapping on; files keep their data)."""
    names = names_list(columns) or []
    version = open_table(uri, options).drop_columns(*names)
    if as_json:
        print_json({"version": version, "dropped": names})
    else:
        console.print(f"dropped {', '.join(names)}: version {version}", highlight=False)
