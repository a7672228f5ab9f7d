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
from _report import Result, markdown

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


Outcome = dict[str, object]
Engine = Callable[[str], tuple[float, Outcome]]


def race(engines: dict[str, Engine], templates: dict[str, str], scratch: Path,
         repeat: int) -> dict[str, tuple[float, Outcome]]:
    """Best time of each engine; runs alternate so machine load hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    outs: dict[str, Outcome] = {}
    for i in range(repeat):
        for name, run in engines.items():
            copy = scratch / f"run-{name}-{i}"
            shutil.copytree(templates[name], copy)
            seconds, outs[name] = run(str(copy))
            times[name].append(seconds)
            shutil.rmtree(copy)
    return {name: (min(times[name]), outs[name]) for name in engines}


def lakeflow_merge(src: pa.Table) -> Engine:
    def run(uri: str) -> tuple[float, Outcome]:
        start = time.perf_counter()
        t = lf.Table(uri)
        r = t.merge(src, on="id")
        seconds = time.perf_counter() - start
        metrics = t.history(limit=1)[0].metrics
        added = metrics["numTargetFilesAdded"] + metrics["numTargetChangeFilesAdded"]
        return seconds, {"inserted": r.inserted, "updated": r.updated, "read": r.files_read,
                         "rewritten": r.files_rewritten, "written": added}
    return run


def deltalake_merge(src: pa.Table) -> Engine:
    def run(uri: str) -> tuple[float, Outcome]:
        start = time.perf_counter()
        m = (deltalake.DeltaTable(uri)
             .merge(src, predicate="t.id = s.id", source_alias="s", target_alias="t")
             .when_matched_update_all().when_not_matched_insert_all().execute())
        seconds = time.perf_counter() - start
        # Its files-scanned metric reads 0 whatever it scans, so it is not shown.
        return seconds, {"inserted": m["num_target_rows_inserted"],
                         "updated": m["num_target_rows_updated"], "read": "-",
                         "rewritten": m["num_target_files_removed"],
                         "written": m["num_target_files_added"]}
    return run


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--source", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-merge-"))
    rows_out = []
    try:
        lf_uri, dl_uri = build(root, args.rows, args.files)
        rng = np.random.default_rng(7)
        print(f"{args.rows:,} rows in {args.files} files; merge {args.source:,} source rows "
              f"(half updates, half new); best of {args.repeat}\n")
        print(f"{'layout':<8} {'engine':<10} {'seconds':>8} {'ratio':>6}  "
              "files read / rewritten / written (data + change)")
        for layout in ("recent", "uniform"):
            src = source(args.rows, args.source, layout, rng)
            results = race({"lakeflow": lakeflow_merge(src), "deltalake": deltalake_merge(src)},
                           {"lakeflow": lf_uri, "deltalake": dl_uri}, root, args.repeat)
            dl_s = results["deltalake"][0]
            assert results["lakeflow"][1]["updated"] == results["deltalake"][1]["updated"]
            assert results["lakeflow"][1]["inserted"] == results["deltalake"][1]["inserted"]
            for name, (seconds, out) in results.items():
                print(f"{layout:<8} {name:<10} {seconds:>8.3f} {seconds / dl_s:>5.2f}x  "
                      f"{out['read']} / {out['rewritten']} / {out['written']}")
            (lf_s, lf_out), dl_out = results["lakeflow"], results["deltalake"][1]
            rows_out.append((layout, f"{lf_s:.3f}", f"{dl_s:.3f}", lf_s / dl_s,
                             f"{lf_out['read']} / {lf_out['rewritten']} / {lf_out['written']}",
                             f"{dl_out['rewritten']} / {dl_out['written']}"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = markdown(["layout", "lakeflow s", "deltalake s", "ratio", "lakeflow files read / rewritten / written",
                      "deltalake rewritten / written"], rows_out)
    print(f"\n{table}")
    return Result(table, [(f"merge, {r[0]}", r[3]) for r in rows_out])


if __name__ == "__main__":
    main()
