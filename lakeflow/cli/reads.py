"""Read commands: info, history, show, diff."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer
from rich.text import Text

import lakeflow as lf
from lakeflow.cli._app import (
    FormatOpt,
    JsonOpt,
    OutputOpt,
    RowsOut,
    StorageOpt,
    app,
    console,
    instant,
    limited,
    more_line,
    names_list,
    open_table,
    print_fields,
    print_json,
    print_rows,
    sql_filter,
)

LimitOpt = typer.Option(None, min=0, help="Rows to output (default: 20 on a terminal, all with --json/--format).")
ColumnsOpt = typer.Option(None, "--columns", help="Only these columns (repeatable or comma-separated).")


@app.command()
def info(uri: str, as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Show a table's version, schema, size, partitioning, key, event time and properties."""
    t = open_table(uri, options)
    snap = t.snapshot()
    out: dict[str, Any] = {
        "uri": t.uri, "version": snap.version, "num_rows": snap.num_rows,
        "num_files": len(snap.files), "size_bytes": sum(f.size for f in snap.files),
        "partition_by": list(snap.partition_columns), "key": list(t.key), "event_time": t.event_time,
        "window": t.window, "watermark": t.watermark.isoformat() if t.watermark else None,
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in snap.schema],
        "properties": dict(snap.properties),
    }
    if as_json:
        print_json(out)
        return
    print_fields({k: v for k, v in out.items() if k not in ("schema", "properties")})
    print_rows(out["schema"], "schema")
    print_rows([{"property": k, "value": v} for k, v in out["properties"].items()], "properties")


@app.command()
def history(uri: str, limit: int | None = typer.Option(None, min=0, help="Newest N commits only."),
            as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """List commits, newest first, with their watermark and late rows."""
    commits = open_table(uri, options).history(limit)
    rows: list[dict[str, Any]] = [{"version": c.version, "timestamp": c.timestamp.isoformat() if c.timestamp else None,
             "operation": c.operation, "app_id": c.app_id, "txn_version": c.txn_version,
             "rows": c.metrics.get("numOutputRows"), "watermark": c.watermark.isoformat() if c.watermark else None,
             "late_rows": c.late_rows, "revised_windows": [w.isoformat() for w in c.revised_windows],
             "engine": c.engine} for c in commits]
    if as_json:
        print_json(rows)
        return
    print_rows([{**r, "revised_windows": ", ".join(r["revised_windows"])} for r in rows], f"history of {uri}")


def _version_ref(text: str, name: str) -> int | dt.datetime:
    """A CLI version argument: an integer version, else an ISO-8601 instant with a zone.

    Raises:
        InvalidArgumentError: `text` is neither, naming the argument `name`.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return instant(text, name)
    except lf.InvalidArgumentError:
        raise lf.InvalidArgumentError(
            f"{name} {text!r} is neither a version number nor an ISO-8601 instant with a time zone "
            "such as 2024-05-01T12:00:00Z") from None


@app.command()
def show(uri: str, version: int | None = typer.Option(None, help="Version to read."),
         as_of: str | None = typer.Option(None, help="ISO instant to read as of."),
         columns: list[str] | None = ColumnsOpt,
         where: str | None = typer.Option(None, help="SQL predicate rows must satisfy, e.g. \"amount > 10\"."),
         limit: int | None = LimitOpt, as_json: bool = JsonOpt, fmt: str | None = FormatOpt,
         output: Path | None = OutputOpt, options: list[str] | None = StorageOpt) -> None:
    """Print rows of a table at a version or instant, reading only what is shown."""
    out = RowsOut(as_json, fmt, output)
    snap = open_table(uri, options).snapshot(version=version, as_of=as_of)
    cols, flt = names_list(columns), sql_filter(where, snap.schema)
    rows, truncated = limited(lambda n: snap.to_arrow(cols, flt) if n is None else snap.head(n, cols, flt),
                              limit, out)
    # Without a filter the total comes from the log; with one it is known only when all rows were read.
    total = rows.num_rows if not truncated else snap.num_rows if flt is None else None
    if out.format:
        out.write(rows)
    elif as_json:
        print_json({"version": snap.version, "num_rows": total, "truncated": truncated,
                    "rows": rows.to_pylist()})
    else:
        print_rows(rows, f"version {snap.version}", more_line(rows.num_rows, total) if truncated else None)


@app.command()
def diff(uri: str, from_version: str = typer.Argument(..., help="Version number or ISO instant."),
         to_version: str | None = typer.Argument(None, help="Version or instant (default: latest)."),
         key: list[str] | None = typer.Option(None, "--key", help="Pair rows by these columns (default: table key)."),
         no_key: bool = typer.Option(False, "--no-key", help="Do not pair rows: inserts and deletes only."),
         summary_only: bool = typer.Option(False, "--summary", help="Only the counts, no rows."),
         columns: list[str] | None = ColumnsOpt, limit: int | None = LimitOpt, as_json: bool = JsonOpt,
         fmt: str | None = FormatOpt, output: Path | None = OutputOpt, options: list[str] | None = StorageOpt) -> None:
    """Show what changed between two versions (inserted, deleted, updated rows)."""
    if key and no_key:
        raise typer.BadParameter("pass --key or --no-key, not both")
    if summary_only and fmt:
        raise typer.BadParameter("--summary has no rows to write as --format")
    out = RowsOut(as_json, fmt, output)
    start = _version_ref(from_version, "FROM_VERSION")
    end = _version_ref(to_version, "TO_VERSION") if to_version is not None else None
    d = open_table(uri, options).diff(start, end, key=() if no_key else names_list(key), columns=names_list(columns))
    head: dict[str, Any] = {"from_version": d.from_version, "to_version": d.to_version, "key": list(d.key),
                            "summary": dataclasses.asdict(d.summary)}
    changes = d.to_arrow()
    rows, truncated = limited(lambda n: changes if n is None else changes.slice(0, n), limit, out)
    if out.format:
        out.write(rows)
    elif as_json:
        print_json(head if summary_only else {**head, "num_changes": changes.num_rows, "truncated": truncated,
                                              "changes": rows.to_pylist()})
    else:
        _print_diff(uri, head, None if summary_only else rows, changes.num_rows)


def _print_diff(uri: str, head: dict[str, Any], rows: pa.Table | None, total: int) -> None:
    console.print(Text.assemble((uri, "bold"), f": {head['from_version']} -> {head['to_version']}  ",
                                "  ".join(f"{k}={v}" for k, v in head["summary"].items())), highlight=False)
    if rows is not None:
        print_rows(rows, "changes", more_line(rows.num_rows, total) if rows.num_rows < total else None)
