"""`lakeflow demo [DIR]`: the bank, as a project: daily files ingested exactly once, a late correction."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer
from rich.text import Text

import lakeflow as lf
from lakeflow.cli._app import JsonOpt, app, console, print_json, print_rows

_ASSETS = {
    "transactions.yaml": """\
description: card transactions, one CSV file per day
schema: {id: int64, account: string, amount: "decimal128(18, 2)", day: date32, ts: "timestamp[us, UTC]"}
key: [id]
partition_by: [day]
event_time: ts
window: 1d
ingest: {format: csv, watermark_lag: 1h}
""",
    "daily_balance.yaml": """\
from: transactions
view:
  group_by: [account]
  window: 1d
  aggregates: {net: [amount, sum], transactions: count}
""",
}
_DAYS = {
    "2024-05-01.csv": [(1, "alice", "100.00", "09:00"), (2, "bob", "250.00", "12:00")],
    "2024-05-02.csv": [(3, "alice", "-40.00", "10:00"), (4, "carol", "75.00", "16:00")],
    "2024-05-03.csv": [(5, "bob", "-50.00", "08:00"), (6, "carol", "20.00", "18:00")],
}
_HEADER = "id,account,amount,day,ts\n"


def _csv(name: str, rows: list[tuple[int, str, str, str]]) -> str:
    day = name.removesuffix(".csv")
    return _HEADER + "".join(f"{i},{a},{x},{day},{day}T{t}:00Z\n" for i, a, x, t in rows)


def _project(root: Path) -> tuple[lf.Project, Path]:
    (root / "assets").mkdir(parents=True, exist_ok=True)
    for name, text in _ASSETS.items():
        (root / "assets" / name).write_text(text)
    landing = root / "ingest" / "landing" / "transactions"
    landing.mkdir(parents=True, exist_ok=True)
    return lf.Project(root), landing


def _day1(view: lf.View, source_version: int) -> dict[str, str]:
    return {r["account"]: str(r["net"]) for r in view.snapshot(source_version).to_pylist()
            if r["window_start"].date() == dt.date(2024, 5, 1)}


def _story(root: Path) -> dict[str, Any]:
    """Run the bank; return what a reader is shown."""
    project, landing = _project(root)
    loads = []
    for name, rows in _DAYS.items():  # each day's file lands and is ingested by its own job
        (landing / name).write_text(_csv(name, rows))
        loads += [(f.name, f.outcome, f.version) for f in project.run().ingested["transactions"]]
    (landing / "2024-05-02.csv").write_text(_csv("2024-05-02.csv", _DAYS["2024-05-02.csv"]))  # a retry
    loads += [(f.name, f.outcome, f.version) for f in project.ingest()["transactions"]]
    t, view = project.table("transactions"), lf.View(project.table_uri("daily_balance"))
    before = t.version
    late = pa.table({"id": [7], "account": ["alice"], "amount": pa.array([-60], pa.decimal128(18, 2)),
                     "day": [dt.date(2024, 5, 1)],
                     "ts": pa.array([dt.datetime(2024, 5, 1, 23, 55, tzinfo=dt.timezone.utc)],
                                    pa.timestamp("us", "UTC"))})
    merged = t.merge(late, watermark=dt.datetime(2024, 5, 4, tzinfo=dt.timezone.utc))
    project.run()
    return {"project": root, "loads": loads, "before": before, "merged": merged, "t": t, "view": view,
            "as_of": t.history()[-2].timestamp}


@app.command()
def demo(path: str = typer.Argument(None, help="Directory for the demo project (default: a new temp dir, kept)."),
         as_json: bool = JsonOpt) -> None:
    """The bank: daily files ingested exactly once, a daily balance view, a late 23:55 correction."""
    root = Path(path) if path else Path(tempfile.mkdtemp(prefix="lakeflow-demo-"))
    s = _story(root)
    t, view, merged, before = s["t"], s["view"], s["merged"], s["before"]
    diff = t.diff(before, merged.version, key="id")
    result = {
        "project": str(root), "tables": [t.uri, view.table.uri],
        "loads": [{"file": f, "outcome": o, "version": v} for f, o, v in s["loads"]],
        "late_rows": merged.late_rows, "day1_before": _day1(view, before), "day1_after": _day1(view, merged.version),
        "diff_inserted": diff.inserted.to_pylist(), "retraction": view.diff(before, merged.version).to_pylist(),
        "as_of_rows": t.snapshot(as_of=s["as_of"]).num_rows,
    }
    if as_json:
        print_json(result)
        return
    _tell(result, t, view, diff)


def _tell(result: dict[str, Any], t: lf.Table, view: lf.View, diff: lf.Diff) -> None:
    console.print(Text.assemble(("the bank", "bold"), f": a lakeflow project in {result['project']} (kept)"))
    console.print("\nthree days of transaction files land; each is one exactly-once commit, the retried "
                  "day-2 file is only archived:")
    print_rows(result["loads"], "landing files")
    console.print(f"\na 23:55 transaction of May 1 arrives after May 2 closed: merged with a watermark, "
                  f"{result['late_rows']} late row recorded in the commit")
    print_rows([{"version": c.version, "operation": c.operation, "late_rows": c.late_rows,
                 "watermark": c.watermark, "app_id": c.app_id} for c in t.history()], "history")
    console.print(f"\nMay 1 net by account, before: {result['day1_before']}, after: {result['day1_after']}")
    print_rows(diff.to_arrow(), "keyed diff of the correction")
    print_rows(result["retraction"], "the view retracts May 1's old total and adds the new one")
    console.print(f"\ntime travel: as of version 1's commit time the table had {result['as_of_rows']} rows")
    console.print(_elsewhere(t.uri))


def _elsewhere(uri: str) -> str:
    """The table read by deltalake and polars, when deltalake is installed: a plain Delta table."""
    try:
        import polars as pl
        from deltalake import DeltaTable, QueryBuilder
    except ImportError:
        return f"a plain Delta table: pip install deltalake, then deltalake.DeltaTable({uri!r}) reads it"
    n = QueryBuilder().register("t", DeltaTable(uri)).execute("SELECT count(*) AS n FROM t").read_all()
    return (f"a plain Delta table: deltalake counts {n.column('n')[0].as_py()} rows, "
            f"polars.scan_delta {pl.scan_delta(uri).select(pl.len()).collect().item()}")
