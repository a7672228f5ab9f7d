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

Each measure: best and median wall time of `repeat` runs, the ways alternating, and
the median CPU time of the process (all threads), which machine load disturbs less.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
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


Timing = tuple[float, float, float]  # best and median wall time, median CPU time of the process (s)


def timed(out: dict[str, list[tuple[float, float]]], name: str, run: Callable[[], object]) -> None:
    """Run `run`, adding its wall and CPU time (all threads: deltalake's too) to `out[name]`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    out.setdefault(name, []).append((time.perf_counter() - wall, time.process_time() - cpu))


def best_median(times: dict[str, list[tuple[float, float]]]) -> dict[str, Timing]:
    return {k: (min(w for w, _ in v), statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for k, v in times.items()}


def bench_delete(root: Path, n: int, files: int, repeat: int) -> dict[str, Timing]:
    """`repeat` deletes (different rows each time) on the same tables, each way."""
    per_file = n // files
    paths = build(root, n, files)
    tables = {name: lf.Table(paths[name]) for name in WAYS}
    out: dict[str, list[tuple[float, float]]] = {}
    counts = set()
    for k in range(repeat):  # the ways alternate, so machine load hits each alike
        doomed = [i * per_file + 7 + k for i in range(files)]
        where, sql = pc.field("id").isin(pa.array(doomed, pa.int64())), f"id IN ({', '.join(map(str, doomed))})"
        for name, t in tables.items():
            timed(out, name, lambda t=t, where=where: counts.add(t.delete(where)))
        timed(out, "deltalake", lambda sql=sql: DeltaTable(paths["deltalake"]).delete(sql))
    assert counts == {files}, counts
    return best_median(out)


def bench_update(root: Path, n: int, files: int, repeat: int) -> dict[str, Timing]:
    """`repeat` updates of 1% of the rows, each on a fresh copy of the table, each way."""
    paths = build(root, n, files)
    out: dict[str, list[tuple[float, float]]] = {}
    counts = set()

    def update(name: str, uri: str) -> None:
        if name == "deltalake":
            counts.add(DeltaTable(uri).update(predicate=UPDATE_WHERE, updates=UPDATE_SET)["num_updated_rows"])
        else:
            counts.add(lf.Table(uri).update(UPDATE_WHERE, set=UPDATE_SET))

    for k in range(repeat):
        for name, path in paths.items():
            fresh = str(root / f"run-{k}-{Path(path).name}")
            shutil.copytree(path, fresh)
            timed(out, name, lambda name=name, fresh=fresh: update(name, fresh))
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


def report(what: str, d: dict[str, Timing]) -> None:
    print(f"{what} (ms: best wall, median wall, median CPU):")
    for name, times in d.items():
        print(f"  {name:<24}" + "".join(f"{t * 1000:9.1f}" for t in times))
    for suffix in ("", ", no CDF"):
        cow, dv, peer = d[f"copy-on-write{suffix}"], d[f"dv{suffix}"], d["deltalake"]
        print(f"  copy-on-write / dv{suffix}: {cow[0] / dv[0]:.1f}x best, {cow[1] / dv[1]:.1f}x median, "
              f"{cow[2] / dv[2]:.1f}x CPU; lakeflow / deltalake (median wall, CPU): dv {dv[1] / peer[1]:.2f}, "
              f"{dv[2] / peer[2]:.2f}; copy-on-write {cow[1] / peer[1]:.2f}, {cow[2] / peer[2]:.2f}")


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
