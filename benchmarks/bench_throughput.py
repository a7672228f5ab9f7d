"""Throughput benchmark: full scans and bulk appends of N rows, lakeflow vs its peers.

    python benchmarks/bench_throughput.py [--rows 10000000] [--repeat 3] [--baseline DIR]

1. Full scan of a table of N rows in 10 files (written by lakeflow, 10 appends):
   `Table(uri).to_arrow()` vs deltalake's SQL scan (`SELECT * FROM t`) and
   `polars.scan_delta(uri).collect()`; the target compares with the faster peer.
2. Bulk append of an N-row Arrow table: `Table.create(...).append(data)` vs
   `pyarrow.parquet.write_table(data, path)` and `deltalake.write_deltalake`.

Every timed call runs in a fresh subprocess (`--child`), ways taking turns each
repetition, so one way's memory peak or warm caches never count for another. A
child builds its input and makes one warm-up call (the scan itself; an append of
1,000 rows elsewhere), then resets the kernel's peak-RSS mark
(`/proc/self/clear_refs`), runs the call once and reports its seconds and its peak
RSS above the RSS before the call. `--baseline DIR` adds the lakeflow ways run with
`PYTHONPATH=DIR` (e.g. an export of an earlier commit), for before/after ratios
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _report import Result, markdown

FILES = 10  # files of the scanned table


def data(rows: int, start: int = 0) -> pa.Table:
    """`id`, `grp`, `value` and a `name` of 9,973 distinct strings (as bench_diff's rows)."""
    ids = pa.array(np.arange(start, start + rows, dtype=np.int64))
    names = pa.array([f"name-{i}" for i in range(9973)]).take(pc.remainder(ids, 9973))
    return pa.table({"id": ids, "grp": pc.cast(pc.divide(ids, 1000), pa.int32()),
                     "value": pc.multiply(pc.cast(ids, pa.float64()), 0.5), "name": names})


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _scan_way(way: str, uri: str) -> Callable[[], int]:
    if way == "lakeflow":
        import lakeflow as lf

        return lambda: lf.Table(uri).to_arrow().num_rows
    if way == "deltalake SQL":
        from deltalake import DeltaTable, QueryBuilder

        return lambda: QueryBuilder().register("t", DeltaTable(uri)).execute("SELECT * FROM t").read_all().num_rows
    import polars as pl

    return lambda: pl.scan_delta(uri).collect().height


def _append_way(way: str, uri: str, rows: pa.Table) -> Callable[[], int]:
    if way == "lakeflow":
        import lakeflow as lf

        return lambda: lf.Table.create(uri, rows.schema).append(rows)
    if way == "deltalake":
        import deltalake

        return lambda: deltalake.write_deltalake(uri, rows) or 0
    import pyarrow.parquet as pq

    os.makedirs(uri)
    return lambda: pq.write_table(rows, f"{uri}/part-0.parquet") or 0


def child(kind: str, way: str, uri: str, rows: int) -> None:
    """Run one way once in this (fresh) process; print seconds and peak RSS above the start."""
    if kind == "scan":
        fn = _scan_way(way, uri)
        fn()  # imports, page cache: a scan's throughput, not its first call's
    else:
        _append_way(way, f"{uri}-warm", data(1000))()
        fn = _append_way(way, uri, data(rows))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
    before, cpu = _rss_kb("VmRSS:"), _cpu_seconds()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu": _cpu_seconds() - cpu,
                      "peak_mb": (_rss_kb("VmHWM:") - before) / 1024}))


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: less sensitive than wall time to others' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(kind: str, way: str, uri: str, rows: int, pythonpath: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, __file__, "--child", kind, way, uri, "--rows", str(rows)],
                         env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def build_scan_table(uri: str, rows: int) -> None:
    import lakeflow as lf

    per = rows // FILES
    t = lf.Table.create(uri, data(1).schema)
    for i in range(FILES):
        t.append(data(per, i * per))


def measure(kind: str, ways: dict[str, str | None], root: Path, rows: int, repeat: int,
            scan_uri: str | None = None) -> dict[str, tuple[float, float, float]]:
    """Median seconds, CPU seconds and peak MB per way (label: PYTHONPATH), alternating ways."""
    got: dict[str, list[dict[str, float]]] = {label: [] for label in ways}
    for r in range(repeat):
        for label, path in ways.items():
            way = label.removesuffix(" (baseline)")
            uri = scan_uri if scan_uri is not None else str(root / f"append-{r}-{way.replace(' ', '_')}")
            got[label].append(run_child(kind, way, uri, rows, path))
            if scan_uri is None:
                shutil.rmtree(uri, ignore_errors=True)
                shutil.rmtree(f"{uri}-warm", ignore_errors=True)
    return {label: tuple(statistics.median(x[k] for x in runs) for k in ("seconds", "cpu", "peak_mb"))  # type: ignore[misc]
            for label, runs in got.items()}


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="also run the lakeflow ways with PYTHONPATH=BASELINE")
    parser.add_argument("--only", choices=["scan", "append"], nargs="+", default=["scan", "append"])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "WAY", "URI"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.rows)
        return Result("", [])
    here = os.environ.get("PYTHONPATH")
    base = {"lakeflow (baseline)": args.baseline} if args.baseline else {}
    root = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    rows_out, ratios = [], []
    try:
        if "scan" in args.only:
            uri = str(root / "scan")
            build_scan_table(uri, args.rows)
            got = measure("scan", {"lakeflow": here, **base, "deltalake SQL": here, "polars scan_delta": here},
                          root, args.rows, args.repeat, uri)
            peer = min(got["deltalake SQL"][0], got["polars scan_delta"][0])
            for label, (s, cpu, mb) in got.items():
                rows_out.append((f"full scan, {args.rows:,} rows in {FILES} files", label, s, cpu, mb, s / peer))
            ratios.append(("full scan / faster of deltalake SQL, polars", got["lakeflow"][0] / peer))
            if base:
                ratios.append(("full scan, baseline / faster peer", got["lakeflow (baseline)"][0] / peer))
        if "append" in args.only:
            got = measure("append", {"lakeflow": here, **base, "deltalake": here, "pyarrow write_table": here},
                          root, args.rows, args.repeat)
            peer = got["pyarrow write_table"][0]
            for label, (s, cpu, mb) in got.items():
                rows_out.append((f"bulk append, {args.rows:,} rows", label, s, cpu, mb, s / peer))
            ratios += [("bulk append / pyarrow write_table", got["lakeflow"][0] / peer),
                       ("bulk append peak MB / deltalake's", got["lakeflow"][2] / got["deltalake"][2])]
            if base:
                ratios.append(("bulk append, baseline / pyarrow write_table", got["lakeflow (baseline)"][0] / peer))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = markdown(["measure", "way", "s", "CPU s", "peak MB above start", "ratio of s (way / peer)"], rows_out)
    print(f"\nmedian of {args.repeat} runs, each in a fresh process; peer: the faster of deltalake SQL and "
          "polars (scan), pyarrow write_table (append)\n")
    print(table)
    return Result(table, ratios)


if __name__ == "__main__":
    main()
