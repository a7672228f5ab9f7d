"""Deletion vectors (merge-on-read) vs copy-on-write.

    python benchmarks/bench_dv.py [--rows 1000000] [--files 10] [--groups 100000] [--append 1000]

- delete: 10 rows (one per file) from a `rows`-row table in `files` files, with
  deletion vectors, copy-on-write, and deltalake's `delete` (which rewrites).
- view refresh: a view with `groups` groups over a `rows`-row source, refreshed
  after an `append`-row append that touches about `append` groups; the view table
  with and without deletion vectors (the source is the same).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

import lakeflow as lf

DV_ON = {"delta.enableDeletionVectors": "true"}


def rows(start: int, n: int, groups: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": np.arange(start, start + n), "account": rng.integers(0, groups, n),
                     "amount": rng.random(n)})


def bench_delete(root: Path, n: int, files: int, repeat: int = 3) -> dict[str, float]:
    """The fastest of `repeat` deletes (different rows each time), each way."""
    per_file = n // files

    def doomed(k: int) -> list[int]:
        return [i * per_file + 7 + k for i in range(files)]

    tables = {}
    for name, props in (("dv", DV_ON), ("copy-on-write", {})):
        tables[name] = lf.Table.create(str(root / name), rows(0, 1, 10, 0).schema, properties=props)
        for i in range(files):
            tables[name].append(rows(i * per_file, per_file, 1000, i))
    peer = str(root / "deltalake")
    for i in range(files):
        write_deltalake(peer, rows(i * per_file, per_file, 1000, i), mode="append")
    out: dict[str, float] = {}
    for k in range(repeat):  # the ways alternate, so machine load hits each alike
        for name, t in tables.items():
            start = time.perf_counter()
            assert t.delete(pc.field("id").isin(pa.array(doomed(k), pa.int64()))) == files
            out[name] = min(out.get(name, float("inf")), time.perf_counter() - start)
        start = time.perf_counter()
        DeltaTable(peer).delete(f"id IN ({', '.join(map(str, doomed(k)))})")
        out["deltalake"] = min(out.get("deltalake", float("inf")), time.perf_counter() - start)
    return out


def bench_view(root: Path, n: int, groups: int, append: int, repeat: int = 3) -> dict[str, float]:
    """The fastest of `repeat` refreshes after an `append`-row append, each way."""
    source = lf.Table.create(str(root / "source"), rows(0, 1, groups, 0).schema, key=["id"])
    source.append(rows(0, n, groups, 1))
    views = {}
    for name, props in (("dv", DV_ON), ("copy-on-write", {})):
        view = lf.View.create(str(root / f"view-{name}"), source, group_by=["account"],
                              aggregates={"total": ("amount", "sum"), "n": "count"})
        if props:
            view.table.set_properties(props)
        view.refresh()
        views[name] = view
    out: dict[str, float] = {}
    for k in range(repeat):
        source.append(rows(n + k * append, append, groups, 2 + k))
        for name, view in views.items():
            start = time.perf_counter()
            view.refresh()
            out[name] = min(out.get(name, float("inf")), time.perf_counter() - start)
    a, b = (views[k].snapshot().sort_by("account") for k in ("dv", "copy-on-write"))
    assert a.equals(b)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--append", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = bench_delete(Path(tmp) / "delete", args.rows, args.files)
        print(f"delete {args.files} rows from {args.rows} in {args.files} files: "
              + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in d.items())
              + f"; copy-on-write / dv {d['copy-on-write'] / d['dv']:.1f}x")
        v = bench_view(Path(tmp) / "view", args.rows, args.groups, args.append)
        print(f"view refresh ({args.groups} groups) after {args.append} rows on {args.rows}: "
              + ", ".join(f"{k} {t * 1000:.1f} ms" for k, t in v.items())
              + f"; copy-on-write / dv {v['copy-on-write'] / v['dv']:.1f}x")


if __name__ == "__main__":
    main()
