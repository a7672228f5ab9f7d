"""Merge benchmark: lakeflow vs deltalake in one run, on local disk.

    python benchmarks/bench_merge.py [--rows 1000000] [--files 100] [--source 10000] [--repeat 5]

A table of `rows` rows in `files` files (ids ascending, one append per file,
change data feed on in both) takes a merge of `source` rows keyed by id: half
update existing ids, half are new ids. Two layouts of the updates:

- recent: the updated ids are among the newest 5% (late corrections to recent
  data, the common case; pruning by key statistics pays off);
- uniform: the updated ids are spread over the whole table (every file holds one).

Each timing merges into a fresh copy of the table; runs alternate between the
engines and the best of `repeat` counts.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import deltalake
import numpy as np
import pyarrow as pa

import lakeflow as lf

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("tag", pa.string()),
                    ("ts", pa.timestamp("us", tz="UTC"))])
CDF = {"delta.enableChangeDataFeed": "true"}


def rows(ids: np.ndarray, salt: float = 0.0) -> pa.Table:
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "value": pa.array(ids * 0.5 + salt, pa.float64()),
        "tag": pa.array([f"t{i % 97}" for i in ids.tolist()], pa.string()),
        "ts": pa.array(ids * 1_000_000, pa.timestamp("us", tz="UTC")),
    }, schema=SCHEMA)


def build(root: Path, n_rows: int, n_files: int) -> tuple[str, str]:
    lf_uri, dl_uri = str(root / "lf"), str(root / "dl")
    t = lf.Table.create(lf_uri, SCHEMA, key=["id"])
    per = n_rows // n_files
    for i in range(n_files):
        batch = rows(np.arange(i * per, (i + 1) * per))
        t.append(batch)
        deltalake.write_deltalake(dl_uri, batch, mode="append", configuration=CDF)
    return lf_uri, dl_uri


def source(n_rows: int, n_source: int, layout: str, rng: np.random.Generator) -> pa.Table:
    half = n_source // 2
    low = int(n_rows * 0.95) if layout == "recent" else 0
    updates = rng.choice(np.arange(low, n_rows), half, replace=False)
    new = np.arange(n_rows, n_rows + n_source - half)
    return rows(np.sort(np.concatenate([updates, new])), salt=1.0)


def race(engines: dict[str, Callable[[str], object]], templates: dict[str, str], scratch: Path,
         repeat: int) -> dict[str, tuple[float, object]]:
    """Best time of each engine; runs alternate so machine load hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    outs: dict[str, object] = {}
    for i in range(repeat):
        for name, fn in engines.items():
            copy = scratch / f"run-{name}-{i}"
            shutil.copytree(templates[name], copy)
            start = time.perf_counter()
            outs[name] = fn(str(copy))
            times[name].append(time.perf_counter() - start)
            shutil.rmtree(copy)
    return {name: (min(times[name]), outs[name]) for name in engines}


def lakeflow_merge(src: pa.Table) -> Callable[[str], lf.MergeResult]:
    return lambda uri: lf.Table(uri).merge(src, on="id")


def deltalake_merge(src: pa.Table) -> Callable[[str], dict[str, int]]:
    def run(uri: str) -> dict[str, int]:
        return dict(deltalake.DeltaTable(uri).merge(
            src, predicate="t.id = s.id", source_alias="s", target_alias="t")
            .when_matched_update_all().when_not_matched_insert_all().execute())
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--source", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-merge-"))
    try:
        lf_uri, dl_uri = build(root, args.rows, args.files)
        rng = np.random.default_rng(7)
        print(f"{args.rows:,} rows in {args.files} files; merge {args.source:,} source rows "
              f"(half updates, half new); best of {args.repeat}\n")
        print(f"{'layout':<8} {'engine':<10} {'seconds':>8} {'ratio':>6}  files read/rewritten")
        for layout in ("recent", "uniform"):
            src = source(args.rows, args.source, layout, rng)
            results = race({"lakeflow": lakeflow_merge(src), "deltalake": deltalake_merge(src)},
                           {"lakeflow": lf_uri, "deltalake": dl_uri}, root, args.repeat)
            (lf_s, res), (dl_s, metrics) = results["lakeflow"], results["deltalake"]
            assert isinstance(res, lf.MergeResult) and isinstance(metrics, dict)
            assert (res.inserted, res.updated) == (metrics["num_target_rows_inserted"],
                                                   metrics["num_target_rows_updated"])
            print(f"{layout:<8} {'lakeflow':<10} {lf_s:>8.3f} {lf_s / dl_s:>5.2f}x  "
                  f"{res.files_read}/{res.files_rewritten}")
            print(f"{layout:<8} {'deltalake':<10} {dl_s:>8.3f} {1:>5.2f}x  "
                  f"{metrics['num_target_files_scanned']}/{metrics['num_target_files_removed']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
