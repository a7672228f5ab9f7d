"""Factory benchmark: ingest many small files; refresh derived assets after a small append.

    python benchmarks/bench_factory.py [--files 1000] [--rows 1000000] [--groups 100000] [--append 1000]

- ingest: `files` small CSV files (10 rows each) loaded by `Project.ingest`
  (one exactly-once commit per file, then archived) vs a loop of
  `deltalake.write_deltalake(mode="append")` over the same files.
- sql refresh: a row-wise SQL asset over a `rows`-row keyed source, refreshed
  after an `append`-row append, vs recomputing the query with polars over the
  whole source.
- view refresh: a view with `groups` groups over the same source, refreshed after
  the append, vs recomputing the aggregate with polars (`group_by().agg()`); the
  same view again with deletion vectors on its table (`balances_dv`: replaced
  groups are marked deleted instead of their file being rewritten).

Each refresh is measured `repeats` times (a new append before each; medians),
against two polars peers measured in the same repetition:

- compute: the result in memory, `pl.scan_delta(source)` (polars' Delta reader)
  or `pl.scan_pyarrow_dataset` over lakeflow's dataset, whichever was faster in
  that repetition, then `.collect()`;
- compute + write: that, plus `write_delta(mode="overwrite")` of the derived
  table (what a dbt full refresh or `CREATE TABLE AS` does).

Ratios are lakeflow / peer in the same run (below 1: lakeflow faster).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
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
  balances_dv:
    from: payments
    properties: {delta.enableDeletionVectors: "true"}
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


def bench_refresh(project: lf.Project, n: int, groups: int, append: int, repeats: int, peer_root: Path,
                  sections: Sections | None = None, cold: bool = False) -> dict[str, tuple[float, float, float]]:
    """Per derived asset: median ms of (lakeflow refresh, polars compute, polars compute + write).

    With `cold`, each refresh opens the project anew (a cron `lakeflow run`: no warm handles).
    """
    source = lf.Table.create(project.table_uri("payments"), rows(0, 1, groups, 0).schema, key=["id"])
    source.append(rows(0, n, groups, 1))
    derived = {"large": _sql_query, "balances": _view_query, "balances_dv": _view_query}
    project.run(list(derived))  # the first refresh computes each from scratch
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in derived}
    for r in range(repeats):
        source.append(rows(n + r * append, append, groups, 2 + r))
        for name, query in derived.items():
            os.sync()  # no measure pays for the writeback of the one before (write_delta does not fsync)
            if sections is not None:
                sections.asset = name
            start = time.perf_counter()
            (lf.Project(project.root) if cold else project).refresh(name)
            ours = time.perf_counter() - start
            if sections is not None:
                sections.done()
            os.sync()
            times[name].append((ours, *_peers(source, query, f"{peer_root}/{name}")))
    for name in times:
        assert project.rebuild(name, verify=True).differences == 0

    def ms(ts: list[tuple[float, float, float]], i: int) -> float:
        return statistics.median(t[i] for t in ts) * 1000

    return {name: (ms(ts, 0), ms(ts, 1), ms(ts, 2)) for name, ts in times.items()}


def commit_floor(root: Path, repeats: int = 21) -> float:
    """Median ms to make a small new file durable as a commit is: write, fsync, link."""
    took = []
    for i in range(repeats):
        start = time.perf_counter()
        tmp = root / f".probe-{i}.tmp"
        with open(tmp, "wb") as f:
            f.write(b"x" * 600)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, root / f"probe-{i}.json")
        took.append(time.perf_counter() - start)
        os.unlink(tmp)
    return statistics.median(took) * 1000


class Sections:
    """Inclusive wall time of named lakeflow functions during the measured refreshes (--sections).

    Each name is wrapped where its callers look it up (the importing module).
    """

    WRAPPED = (
        ("lakeflow.factory.project", "Project", "_warm"), ("lakeflow.factory.project", "Project", "_view"),
        ("lakeflow.table", "Table", "diff"), ("lakeflow.factory.derived", None, "apply_sql"),
        ("lakeflow.views", "View", "_groups"), ("lakeflow.views", "View", "_apply"),
        ("lakeflow.views", None, "replace_keys"), ("lakeflow.factory.derived", None, "replace_keys"),
        ("lakeflow.ops.replace", None, "_rewrite"), ("lakeflow.ops.replace", None, "mark_rows"),
        ("lakeflow.ops.replace", None, "_written"),
        ("lakeflow.factory.derived", None, "_files"), ("lakeflow.transaction", "Transaction", "commit"),
        ("lakeflow.transaction", None, "_maybe_checkpoint"), ("os", None, "fsync"),
    )

    def __init__(self) -> None:
        self.asset: str | None = None
        self.now: dict[str, float] = {}  # label -> seconds in the refresh being measured
        self.spent: dict[tuple[str, str], list[float]] = {}  # per refresh
        for module, owner, name in self.WRAPPED:
            target = importlib.import_module(module)
            holder = getattr(target, owner) if owner else target
            setattr(holder, name, self._timed(getattr(holder, name), f"{owner + '.' if owner else ''}{name}"))

    def _timed(self, fn: Callable[..., object], label: str) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.asset is not None:
                    self.now[label] = self.now.get(label, 0.0) + time.perf_counter() - start
        return timed

    def done(self) -> None:
        """End the measured refresh of `asset`."""
        assert self.asset is not None
        for label, took in self.now.items():
            self.spent.setdefault((self.asset, label), []).append(took)
        self.asset, self.now = None, {}

    def report(self) -> None:
        for (asset, label), spent in sorted(self.spent.items()):
            print(f"  {asset:12s} {label:28s} median {statistics.median(spent) * 1000:7.2f} ms per refresh")


def _peers(source: lf.Table, query: Callable[[pl.LazyFrame], pl.LazyFrame], out: str) -> tuple[float, float]:
    """Seconds of polars recomputing `query` over the source: (compute, compute + overwrite the table)."""
    scans = (lambda: pl.scan_delta(source.uri), lambda: pl.scan_pyarrow_dataset(source.snapshot().to_pyarrow_dataset()))
    best, result = float("inf"), None
    for scan in scans:
        start = time.perf_counter()
        frame = query(scan()).collect()
        took = time.perf_counter() - start
        if took < best:
            best, result = took, frame
    assert result is not None
    start = time.perf_counter()
    result.write_delta(out, mode="overwrite")
    return best, best + time.perf_counter() - start


def _sql_query(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(pl.col("amount") > 0.5).select("id", "account", (pl.col("amount") * 100).alias("cents"))


def _view_query(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.group_by("account").agg(pl.col("amount").sum().alias("total"), pl.len().alias("n"))


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--append", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7, help="refreshes measured (medians)")
    parser.add_argument("--cold", action="store_true", help="open the project anew for each refresh")
    parser.add_argument("--sections", action="store_true",
                        help="print where each refresh spends its time (mean ms per refresh)")
    args = parser.parse_args(argv)
    sections = Sections() if args.sections else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "lakeflow.yaml").write_text(PROJECT)
        ours, peer = bench_ingest(root, args.files)
        print(f"ingest {args.files} csv files: lakeflow {ours:.2f} s, write_deltalake loop {peer:.2f} s, "
              f"ratio {ours / peer:.2f}")
        rows = [(f"ingest {args.files} csv files", "write_deltalake loop", f"{ours * 1000:.1f}", f"{peer * 1000:.1f}",
                 ours / peer)]
        refreshed = bench_refresh(lf.Project(root), args.rows, args.groups, args.append, args.repeats,
                                  root / "peers", sections, args.cold)
        floor = commit_floor(root)
        print(f"a small file written and fsynced as a commit is: {floor:.2f} ms (median)")
        if sections is not None:
            sections.report()
        for name, (o, compute, write) in refreshed.items():
            print(f"refresh {name} after {args.append} rows on {args.rows}: lakeflow {o:.1f} ms, polars "
                  f"compute {compute:.1f} ms ({compute / o:.1f}x), compute + write_delta {write:.1f} ms "
                  f"({write / o:.1f}x); medians of {args.repeats}")
            for peer, p in (("polars compute", compute), ("polars compute + write_delta", write)):
                rows.append((f"refresh {name} after {args.append} rows on {args.rows:,}", peer, f"{o:.1f}",
                             f"{p:.1f}", o / p))
    table = markdown(["measure", "peer", "lakeflow ms", "peer ms", "ratio (lakeflow/peer)"], rows)
    return Result(table, [(r[0], r[4]) for r in rows])


if __name__ == "__main__":
    main()
