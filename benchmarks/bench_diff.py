"""Diff benchmark: a 1M-row table in 100 files, 1% of its rows changed in one commit.

Compares, on the same table and commit:
  lakeflow diff        Table(path).diff(v - 1, v): open the table, plan from the log, read
                       only the changed files (or the change data files), consolidate
  lakeflow diff, warm  the same on an already open handle
  lakeflow keyed diff  Table(path).diff(v - 1, v, key="id"): the same, pairing removed and
                       added rows into updates by key
  naive                read both snapshots whole and compare them as multisets (polars)
  deltalake load_cdf   DeltaTable(path).load_cdf(v, v): the Delta change data feed

Scenarios:
  merge-cdf      written by deltalake with delta.enableChangeDataFeed=true; deltalake MERGE
                 updates 1% of the rows, spread over every file (so every file is
                 rewritten and the commit carries change data files)
  rewrite-file   written by lakeflow; one file (1% of the rows) is replaced by a copy with
                 every row changed, through lakeflow's Transaction API (no change data files)

Run:  /work/venv/bin/python benchmarks/bench_diff.py [--rows N] [--files N] [--repeat N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from _report import Result, markdown

import lakeflow as lf
from lakeflow.write import write_data_files


def batch(start: int, n: int) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table({
        "id": ids,
        "grp": pc.cast(pc.divide(ids, 1000), pa.int32()),
        "value": pc.multiply(pc.cast(ids, pa.float64()), 0.5),
        "name": pa.array([f"name-{i % 9973}" for i in range(start, start + n)]),
    })


def naive(path: str, v1: int, v2: int) -> tuple[int, int]:
    """Read both snapshots whole and compare them as multisets."""
    t = lf.Table(path)
    before = pl.DataFrame(t.snapshot(version=v1).to_arrow()).with_columns(pl.lit(-1).alias("w"))
    after = pl.DataFrame(t.snapshot(version=v2).to_arrow()).with_columns(pl.lit(1).alias("w"))
    cols = [c for c in after.columns if c != "w"]
    net = pl.concat([before, after]).group_by(cols).agg(pl.col("w").sum())
    return net.filter(pl.col("w") > 0).height, net.filter(pl.col("w") < 0).height


def build_merge_cdf(path: str, rows: int, files: int) -> int:
    per = rows // files
    for i in range(files):
        deltalake.write_deltalake(path, batch(i * per, per), mode="append",
                                  configuration={"delta.enableChangeDataFeed": "true"})
    dl = deltalake.DeltaTable(path)
    dl.create_checkpoint()
    changed = batch(0, rows).take(pa.array(range(0, rows, 100)))
    changed = changed.set_column(2, "value", pc.add(changed["value"], 1.0))
    (dl.merge(changed, "t.id = s.id", source_alias="s", target_alias="t")
       .when_matched_update_all().execute())
    return deltalake.DeltaTable(path).version()


def build_rewrite_file(path: str, rows: int, files: int) -> int:
    per = rows // files
    t = lf.Table.create(path, batch(0, 1).schema)
    for i in range(files):
        t.append(batch(i * per, per))
    t.checkpoint()
    snap = t.snapshot()
    victim = snap.files[0]
    (old,) = snap.read_files([victim])
    new = old.set_column(2, "value", pc.add(old["value"], 1.0))
    with t.transaction("UPDATE", snapshot=snap) as tx:
        tx.remove(victim).add(*write_data_files(t.storage, new, (), mapping=snap.column_mapping))
    assert tx.result is not None
    return tx.result.version


def timed(methods: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, Any]]:
    """Median ms and last result per method; methods take turns so load noise hits all alike."""
    results = {name: fn() for name, fn in methods.items()}  # warm caches and imports
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]) * 1000, results[name]) for name in methods}


def run(name: str, path: str, v: int, repeat: int) -> list[tuple[str, str, float, str, str]]:
    handle = lf.Table(path)
    table_bytes = sum(f.size for f in handle.snapshot(version=v - 1).files)

    def cdf() -> pa.Table:
        return pa.table(deltalake.DeltaTable(path).load_cdf(starting_version=v,
                                                           ending_version=v).read_all())

    got = timed({
        "lakeflow diff": lambda: lf.Table(path).diff(v - 1, v, key=()),
        "lakeflow diff, warm handle": lambda: handle.diff(v - 1, v, key=()),
        "lakeflow keyed diff (key id)": lambda: lf.Table(path).diff(v - 1, v, key="id"),
        "deltalake load_cdf": cdf,
    }, repeat)
    # Apart: its gigabyte of allocations would slow whatever runs right after it.
    got.update(timed({"naive: both snapshots": lambda: naive(path, v - 1, v)}, repeat))
    d = got["lakeflow diff"][1]
    rows = f"+{d.added.num_rows} -{d.removed.num_rows}"
    read = f"{d.summary.bytes_read / 1e6:.2f} MB ({d.summary.files_read} files)"
    plus, minus = got["naive: both snapshots"][1]
    assert (plus, minus) == (d.added.num_rows, d.removed.num_rows), "naive disagrees with diff"
    return [
        (name, "lakeflow diff", got["lakeflow diff"][0], rows, read),
        (name, "lakeflow diff, warm handle", got["lakeflow diff, warm handle"][0], rows, read),
        (name, "lakeflow keyed diff (key id)", got["lakeflow keyed diff (key id)"][0],
         f"{got['lakeflow keyed diff (key id)'][1].summary.updated} updated", read),
        (name, "naive: both snapshots", got["naive: both snapshots"][0], f"+{plus} -{minus}",
         f"{2 * table_bytes / 1e6:.2f} MB (all files, twice)"),
        (name, "deltalake load_cdf", got["deltalake load_cdf"][0],
         f"{got['deltalake load_cdf'][1].num_rows} change rows", "-"),
    ]


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_diff_"))
    try:
        results = []
        for name, build in (("merge-cdf", build_merge_cdf), ("rewrite-file", build_rewrite_file)):
            path = str(root / name)
            v = build(path, args.rows, args.files)
            results += run(name, path, v, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.rows:,} rows in {args.files} files; median of {args.repeat} runs\n")
    table = markdown(["scenario", "method", "ms", "result", "read"],
                     [(n, m, f"{ms:.1f}", r, read) for n, m, ms, r, read in results])
    ratios, summary = [], []
    for name in ("merge-cdf", "rewrite-file"):
        by = {m: ms for n, m, ms, _, _ in results if n == name}
        cold = by["lakeflow diff"] / by["deltalake load_cdf"]
        warm = by["lakeflow diff, warm handle"] / by["deltalake load_cdf"]
        keyed = by["lakeflow keyed diff (key id)"] / by["deltalake load_cdf"]
        summary.append((name, f"{by['naive: both snapshots'] / by['lakeflow diff']:.0f}x", cold, warm, keyed))
        ratios += [(f"{name}: diff / load_cdf", cold), (f"{name}: warm diff / load_cdf", warm),
                   (f"{name}: keyed diff (1% of {args.rows:,} rows) / load_cdf", keyed)]
    table += "\n\n" + markdown(["scenario", "naive / diff", "diff / load_cdf", "warm diff / load_cdf",
                                 "keyed diff / load_cdf"], summary)
    print(table)
    return Result(table, ratios)

if __name__ == "__main__":
    main()
