"""`lakeflow demo`: a small table's life in a few commands' worth of output."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pyarrow as pa
import typer
from rich.text import Text

import lakeflow as lf
from lakeflow.cli._app import JsonOpt, app, console, print_json, print_rows
from lakeflow.cli.reads import history


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
        print_json(result)
        return
    console.print(Text.assemble(("table", "bold"), f" {uri}"))
    console.print(f"appended versions {v1} and {v2}; the retried batch 2 wrote nothing "
                  f"and returned version {retried}")
    print_rows(first.to_arrow(), f"version {v1}")
    print_rows(latest.to_arrow(), f"version {latest.version} (latest)")
    history(uri, limit=None, as_json=False, options=[])
    console.print("read it elsewhere: deltalake.DeltaTable(uri) or polars.scan_delta(uri)")
