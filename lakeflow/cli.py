"""The `lakeflow` command: a thin typer + rich layer over the library.

This is the only module that knows typer and rich. Every `LakeflowError` is
mapped to one line on stderr and exit code 1, in `main`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

import lakeflow as lf

_PIPE_WIDTH = 100_000

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Versioned tables as a flow of commits (Delta Lake compatible).")
# Piped output is read by programs: never wrap it at a guessed terminal width.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=str, indent=2))


def _rows_json(table: pa.Table, limit: int) -> dict[str, Any]:
    """The first `limit` rows, saying whether (and from how many) they were cut."""
    return {"num_rows": table.num_rows, "truncated": table.num_rows > limit,
            "rows": table.slice(0, limit).to_pylist()}


def _show_arrow(table: pa.Table, title: str, limit: int = 20) -> None:
    console.print(f"[bold]{title}[/bold]")
    rt = RichTable()
    for name in table.column_names:
        rt.add_column(name)
    for row in table.slice(0, limit).to_pylist():
        rt.add_row(*["" if v is None else str(v) for v in row.values()])
    console.print(rt)
    if table.num_rows > limit:
        console.print(f"... {table.num_rows - limit} more rows")


@app.command()
def info(uri: str, as_json: bool = JsonOpt) -> None:
    """Show a table's version, schema, partitioning and size."""
    t = lf.Table(uri)
    snap = t.snapshot()
    out = {
        "uri": t.uri, "version": snap.version, "num_rows": snap.num_rows,
        "num_files": len(snap.files), "partition_by": list(t.partition_by),
        "key": list(t.key), "event_time": t.event_time,
        "schema": {f.name: str(f.type) for f in snap.schema},
        "properties": dict(t.properties),
    }
    if as_json:
        _print_json(out)
        return
    for k, v in out.items():
        console.print(f"[bold]{k}[/bold]: {v}")


@app.command()
def history(uri: str, limit: int | None = typer.Option(None, min=0, help="Newest N commits only."),
            as_json: bool = JsonOpt) -> None:
    """List commits, newest first."""
    commits = lf.Table(uri).history(limit)
    rows = [{"version": c.version, "timestamp": c.timestamp.isoformat() if c.timestamp else None,
             "operation": c.operation, "app_id": c.app_id, "txn_version": c.txn_version,
             "rows": c.metrics.get("numOutputRows"), "engine": c.engine} for c in commits]
    if as_json:
        _print_json(rows)
        return
    rt = RichTable(title=f"history of {uri}")
    for col in rows[0] if rows else ["version"]:
        rt.add_column(col)
    for r in rows:
        rt.add_row(*["" if v is None else str(v) for v in r.values()])
    console.print(rt)


@app.command()
def show(uri: str, version: int | None = typer.Option(None, help="Version to read."),
         as_of: str | None = typer.Option(None, help="ISO instant to read as of."),
         limit: int = typer.Option(20, min=0, help="Rows to print."), as_json: bool = JsonOpt) -> None:
    """Print the rows of a table at a version or instant."""
    snap = lf.Table(uri).snapshot(version=version, as_of=as_of)
    table = snap.to_arrow()
    if as_json:
        _print_json({"version": snap.version, **_rows_json(table, limit)})
        return
    _show_arrow(table, f"version {snap.version}", limit)


@app.command()
def diff(uri: str, from_version: str = typer.Argument(..., help="Version number or ISO instant."),
         to_version: str | None = typer.Argument(None, help="Version or instant (default: latest)."),
         key: list[str] | None = typer.Option(None, "--key", help="Pair rows by these columns."),
         limit: int = typer.Option(20, min=0, help="Rows to print."), as_json: bool = JsonOpt) -> None:
    """Show what changed between two versions (inserted, deleted, updated rows)."""
    start = _version_ref(from_version, "FROM_VERSION")
    end = _version_ref(to_version, "TO_VERSION") if to_version is not None else None
    d = lf.Table(uri).diff(start, end, key=key or None)
    summary = dataclasses.asdict(d.summary)
    changes = d.to_arrow()
    if as_json:
        out = _rows_json(changes, limit)
        _print_json({"from_version": d.from_version, "to_version": d.to_version, "summary": summary,
                     "num_changes": out["num_rows"], "truncated": out["truncated"], "changes": out["rows"]})
        return
    console.print(f"[bold]{uri}[/bold]: {d.from_version} -> {d.to_version}  " +
                  "  ".join(f"{k}={v}" for k, v in summary.items()), highlight=False)
    _show_arrow(changes, "changes", limit)


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
        instant = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise lf.InvalidArgumentError(
            f"{name} {text!r} is neither a version number nor an ISO-8601 instant with a time zone "
            "such as 2024-05-01T12:00:00Z"
        )
    return instant


@app.command()
def checkpoint(uri: str, as_json: bool = JsonOpt) -> None:
    """Write a checkpoint at the latest version."""
    version = lf.Table(uri).checkpoint()
    if as_json:
        _print_json({"checkpoint_version": version})
    else:
        console.print(f"checkpoint written at version {version}")


@app.command()
def compact(uri: str, target_file_size: int = typer.Option(128 * 1024 * 1024, help="Bytes per output file."),
            as_json: bool = JsonOpt) -> None:
    """Rewrite small files into larger ones (no change to the rows)."""
    r = lf.Table(uri).compact(target_file_size)
    out = {"version": r.version, "files_removed": r.files_removed, "files_added": r.files_added, "rows": r.rows}
    if as_json:
        _print_json(out)
    elif r.version is None:
        console.print("nothing to compact")
    else:
        console.print(f"version {r.version}: {r.files_removed} files rewritten into {r.files_added}")


@app.command()
def vacuum(uri: str, retention_hours: float = typer.Option(168.0, help="Keep files needed within this many hours."),
           dry_run: bool = typer.Option(False, "--dry-run", help="List, do not delete."),
           force: bool = typer.Option(False, "--force", help="Allow a retention below the table's setting."),
           as_json: bool = JsonOpt) -> None:
    """Delete data files no version within the retention period needs."""
    r = lf.Table(uri).vacuum(dt.timedelta(hours=retention_hours), dry_run=dry_run, enforce_retention=not force)
    if as_json:
        _print_json({"files": list(r.files), "bytes": r.bytes, "dry_run": r.dry_run})
        return
    verb = "would delete" if r.dry_run else "deleted"
    console.print(f"{verb} {len(r.files)} files ({r.bytes} bytes)")
    for f in r.files:
        console.print(f"  {f}", highlight=False)


@app.command()
def demo(path: str = typer.Argument(None, help="Directory for the demo table (default: a temp dir)."),
         as_json: bool = JsonOpt) -> None:
    """Create a table, append twice (once retried), time travel and show history."""
    root = Path(path) if path else Path(tempfile.mkdtemp(prefix="lakeflow-demo-"))
    uri = str(root / "payments")
    schema = pa.schema([("account", pa.string()), ("amount", pa.int64()),
                        ("day", pa.date32()), ("ts", pa.timestamp("us", tz="UTC"))])
    t = lf.Table.create(uri, schema, partition_by=["day"], key=["account", "ts"], event_time="ts")
    day = dt.date(2024, 5, 1)

    def batch(rows: list[tuple[str, int, int]]) -> pa.Table:
        return pa.table({
            "account": [r[0] for r in rows], "amount": [r[1] for r in rows],
            "day": [day] * len(rows),
            "ts": pa.array([dt.datetime(2024, 5, 1, r[2], tzinfo=dt.timezone.utc) for r in rows],
                           pa.timestamp("us", tz="UTC")),
        })

    v1 = t.append(batch([("alice", 100, 9), ("bob", 50, 10)]), app_id="ingest", txn_version=1)
    v2 = t.append(batch([("alice", -30, 12), ("carol", 75, 13)]), app_id="ingest", txn_version=2)
    retried = t.append(batch([("alice", -30, 12), ("carol", 75, 13)]), app_id="ingest", txn_version=2)
    first, latest = t.snapshot(version=v1), t.snapshot()
    result = {
        "uri": uri, "versions": [0, v1, v2], "retry_returned": retried,
        "rows_at_v1": first.num_rows, "rows_latest": latest.num_rows,
        "history": [{"version": c.version, "operation": c.operation, "app_id": c.app_id,
                     "txn_version": c.txn_version} for c in t.history()],
    }
    if as_json:
        _print_json(result)
        return
    console.print(f"[bold]table[/bold] {uri}")
    console.print(f"appended versions {v1} and {v2}; the retried batch 2 wrote nothing "
                  f"and returned version {retried}")
    _show_arrow(first.to_arrow(), f"version {v1}")
    _show_arrow(latest.to_arrow(), f"version {latest.version} (latest)")
    history(uri, limit=None, as_json=False)
    console.print("read it elsewhere: deltalake.DeltaTable(uri) or polars.scan_delta(uri)")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping every lakeflow error to one line and exit code 1."""
    runner: Callable[..., Any] = typer.main.get_command(app)
    try:
        runner(args=argv, standalone_mode=False)
    except lf.LakeflowError as e:
        one_line = " ".join(str(e).split())
        err_console.print(f"[red]error:[/red] {type(e).__name__}: {escape(one_line)}", highlight=False)
        return 1
    except typer.Abort:
        return 1
    except Exception as e:  # click usage errors carry their own exit code
        code = getattr(e, "exit_code", None)
        if code is not None and hasattr(e, "show"):
            e.show()
            return int(code)
        raise
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
