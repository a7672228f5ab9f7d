"""Deletion vectors (merge-on-read) vs copy-on-write.

    python benchmarks/bench_dv.py [--rows 1000000] [--files 10] [--groups 100000] [--append 1000] [--repeat 3]

Every lakeflow way runs twice: with the change data feed on (lakeflow's default,
`delta.enableChangeDataFeed=true`) and off ("no CDF", as deltalake's tables).

- delete: 10 rows (one per file) from a `rows`-row table in `files` files, with
  deletion vectors, copy-on-write, and deltalake's `delete` (which rewrites).
- update: 1% of the rows, `amount = amount * 1.1` where `account < 10` (accounts
  uniform in 0-999, so every file holds about 1% of its rows matching; stats
  prune nothing), each run on a fresh copy of the table; vs deltalake's `update`.
- view refresh: a view with `groups` groups over a `rows`-row source, refreshed
  after an `append`-row append that touches about `append` groups; the view table
  with and without deletion vectors (the source is the same).

Each measure: best and median of `repeat` runs, the ways alternating.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

import lakeflow as lf

DV_ON = {"delta.enableDeletionVectors": "true"}
NO_CDF = {"delta.enableChangeDataFeed": "false"}
WAYS = {"dv": DV_ON, "copy-on-write": {}, "dv, no CDF": DV_ON | NO_CDF, "copy-on-write, no CDF": NO_CDF}
UPDATE_WHERE, UPDATE_SET = "account < 10", {"amount": "amount * 1.1"}


def rows(start: int, n: int, groups: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": np.arange(start, start + n), "account": rng.integers(0, groups, n),
                     "amount": rng.random(n)})


def build(root: Path, n: int, files: int) -> dict[str, str]:
    """The same `files` appends of `n` rows in all, for each lakeflow way and deltalake; their paths."""
    per_file = n // files
    paths = {name: str(root / name.replace(", ", "-").replace(" ", "-")) for name in (*WAYS, "deltalake")}
    for name, props in WAYS.items():
        t = lf.Table.create(paths[name], rows(0, 1, 10, 0).schema, properties=props)
        for i in range(files):
            t.append(rows(i * per_file, per_file, 1000, i))
    for i in range(files):
        write_deltalake(paths["deltalake"], rows(i * per_file, per_file, 1000, i), mode="append")
    return paths


def best_median(times: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def bench_delete(root: Path, n: int, files: int, repeat: int) -> dict[str, tuple[float, float]]:
    """`repeat` deletes (different rows each time) on the same tables, each way."""
    per_file = n // files
    paths = build(root, n, files)
    tables = {name: lf.Table(paths[name]) for name in WAYS}
    out: dict[str, list[float]] = {}
    for k in range(repeat):  # the ways alternate, so machine load hits each alike
        doomed = [i * per_file + 7 + k for i in range(files)]
        for name, t in tables.items():
            start = time.perf_counter()
            assert t.delete(pc.field("id").isin(pa.array(doomed, pa.int64()))) == files
            out.setdefault(name, []).append(time.perf_counter() - start)
        start = time.perf_counter()
        DeltaTable(paths["deltalake"]).delete(f"id IN ({', '.join(map(str, doomed))})")
        out.setdefault("deltalake", []).append(time.perf_counter() - start)
    return best_median(out)


def bench_update(root: Path, n: int, files: int, repeat: int) -> dict[str, tuple[float, float]]:
    """`repeat` updates of 1% of the rows, each on a fresh copy of the table, each way."""
    paths = build(root, n, files)
    out: dict[str, list[float]] = {}
    counts = set()
    for k in range(repeat):
        for name, path in paths.items():
            fresh = str(root / f"run-{k}-{Path(path).name}")
            shutil.copytree(path, fresh)
            start = time.perf_counter()
            if name == "deltalake":
                metrics = DeltaTable(fresh).update(predicate=UPDATE_WHERE, updates=UPDATE_SET)
                counts.add(metrics["num_updated_rows"])
            else:
                counts.add(lf.Table(fresh).update(UPDATE_WHERE, set=UPDATE_SET))
            out.setdefault(name, []).append(time.perf_counter() - start)
            shutil.rmtree(fresh)
    assert len(counts) == 1, counts  # every way updated the same rows
    return best_median(out)


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


def report(what: str, d: dict[str, tuple[float, float]]) -> None:
    print(f"{what} (best / median ms):")
    for name, (best, median) in d.items():
        print(f"  {name:<24} {best * 1000:8.1f} {median * 1000:8.1f}")
    for suffix in ("", ", no CDF"):
        cow, dv = d[f"copy-on-write{suffix}"], d[f"dv{suffix}"]
        print(f"  copy-on-write / dv{suffix}: {cow[0] / dv[0]:.1f}x best, {cow[1] / dv[1]:.1f}x median; "
              f"vs deltalake: dv {dv[1] / d['deltalake'][1]:.2f}, copy-on-write {cow[1] / d['deltalake'][1]:.2f}"
              " (median, lakeflow / deltalake)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--append", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report(f"delete {args.files} rows from {args.rows} in {args.files} files",
               bench_delete(Path(tmp) / "delete", args.rows, args.files, args.repeat))
        report(f"update 1% of {args.rows} rows in {args.files} files ({UPDATE_WHERE})",
               bench_update(Path(tmp) / "update", args.rows, args.files, args.repeat))
        v = bench_view(Path(tmp) / "view", args.rows, args.groups, args.append)
        print(f"view refresh ({args.groups} groups) after {args.append} rows on {args.rows}: "
              + ", ".join(f"{k} {t * 1000:.1f} ms" for k, t in v.items())
              + f"; copy-on-write / dv {v['copy-on-write'] / v['dv']:.1f}x")


if __name__ == "__main__":
    main()
