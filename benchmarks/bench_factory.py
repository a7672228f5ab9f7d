"""Factory benchmark: ingest many small files; refresh derived assets after a small append.

    python benchmarks/bench_factory.py [--files 1000] [--rows 1000000] [--groups 100000] [--append 1000]

- ingest: `files` small CSV files (10 rows each) loaded by `Project.ingest`
  (one exactly-once commit per file, then archived) vs a loop of
  `deltalake.write_deltalake(mode="append")` over the same files.
- sql refresh: a row-wise SQL asset over a `rows`-row keyed source, refreshed
  after an `append`-row append, vs recomputing the query with polars over the
  whole source.
- view refresh: a view with `groups` groups over the same source, refreshed after
  the append, vs recomputing the aggregate with polars (`group_by().agg()`).

Ratios are lakeflow / peer in the same run (below 1: lakeflow faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pcsv
from _report import Result, markdown
from deltalake import write_deltalake

import lakeflow as lf

PROJECT = """\
assets:
  events:
    schema: {id: int64, account: int64, amount: double}
    ingest: {format: csv}
  payments:
    schema: {id: int64, account: int64, amount: double}
    key: [id]
    ingest: {format: parquet}
  large:
    from: payments
    sql: "SELECT id, account, amount * 100 AS cents FROM payments WHERE amount > 0.5"
  balances:
    from: payments
    view: {group_by: [account], aggregates: {total: [amount, sum], n: count}}
"""


def rows(start: int, n: int, groups: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": np.arange(start, start + n), "account": rng.integers(0, groups, n),
                     "amount": rng.random(n)})


def bench_ingest(root: Path, files: int) -> tuple[float, float]:
    landing = root / "ingest" / "landing" / "events"
    landing.mkdir(parents=True)
    sources = []
    for i in range(files):
        path = landing / f"{i:06d}.csv"
        pcsv.write_csv(rows(i * 10, 10, 100, i), path)
        sources.append(path.read_bytes())
    project = lf.Project(root)
    start = time.perf_counter()
    project.ingest("events")
    ours = time.perf_counter() - start
    assert project.table("events").version == files
    peer_uri = str(root / "peer")
    start = time.perf_counter()
    for data in sources:
        write_deltalake(peer_uri, pcsv.read_csv(pa.BufferReader(pa.py_buffer(data))), mode="append")
    return ours, time.perf_counter() - start


def bench_refresh(project: lf.Project, n: int, groups: int, append: int) -> dict[str, tuple[float, float]]:
    source = lf.Table.create(project.table_uri("payments"), rows(0, 1, groups, 0).schema, key=["id"])
    source.append(rows(0, n, groups, 1))
    project.run(["large", "balances"])  # the first refresh computes each from scratch
    source.append(rows(n, append, groups, 2))
    out = {}
    for name, peer in (("large", _sql_peer), ("balances", _view_peer)):
        start = time.perf_counter()
        project.refresh(name)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        peer(source)
        out[name] = (ours, time.perf_counter() - start)
        assert project.rebuild(name, verify=True).differences == 0
    return out


def _sql_peer(source: lf.Table) -> pl.DataFrame:
    frame = pl.scan_pyarrow_dataset(source.snapshot().to_pyarrow_dataset())
    return frame.filter(pl.col("amount") > 0.5).select("id", "account", (pl.col("amount") * 100).alias("cents")
                                                       ).collect()


def _view_peer(source: lf.Table) -> pl.DataFrame:
    frame = pl.scan_pyarrow_dataset(source.snapshot().to_pyarrow_dataset())
    return frame.group_by("account").agg(pl.col("amount").sum().alias("total"), pl.len().alias("n")).collect()


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--append", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "lakeflow.yaml").write_text(PROJECT)
        ours, peer = bench_ingest(root, args.files)
        print(f"ingest {args.files} csv files: lakeflow {ours:.2f} s, write_deltalake loop {peer:.2f} s, "
              f"ratio {ours / peer:.2f}")
        rows = [(f"ingest {args.files} csv files", "write_deltalake loop", f"{ours * 1000:.1f}", f"{peer * 1000:.1f}",
                 ours / peer)]
        for name, (o, p) in bench_refresh(lf.Project(root), args.rows, args.groups, args.append).items():
            print(f"refresh {name} after {args.append} rows on {args.rows}: lakeflow {o * 1000:.1f} ms, "
                  f"polars recompute {p * 1000:.1f} ms, speed-up {p / o:.1f}x")
            rows.append((f"refresh {name} after {args.append} rows on {args.rows:,}", "polars recompute",
                         f"{o * 1000:.1f}", f"{p * 1000:.1f}", o / p))
    table = markdown(["measure", "peer", "lakeflow ms", "peer ms", "ratio (lakeflow/peer)"], rows)
    return Result(table, [(r[0], r[4]) for r in rows])


if __name__ == "__main__":
    main()
