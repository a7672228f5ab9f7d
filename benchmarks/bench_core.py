"""Core benchmark: lakeflow vs deltalake in one run, on local disk.

    python benchmarks/bench_core.py [--appends 500] [--open-commits 1000]

1. N appends of 100 rows: ms/commit over the first and the last 100 (and lance's
   appends for the plot of latency against log length, when pylance is installed).
2. Open the latest version of a table with 1000+ commits (checkpoint every 100).
3. Read as of a middle version of that table.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import deltalake
import pyarrow as pa
from _report import Result, markdown

import lakeflow as lf

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("tag", pa.string())])


def batch(i: int, n: int = 100) -> pa.Table:
    ids = list(range(i * n, (i + 1) * n))
    return pa.table({"id": ids, "value": [x * 0.5 for x in ids], "tag": [f"t{x % 7}" for x in ids]},
                    schema=SCHEMA)


def timed_appends(append, n: int) -> list[float]:
    batches = [batch(i) for i in range(n)]
    out = []
    for b in batches:
        start = time.perf_counter()
        append(b)
        out.append((time.perf_counter() - start) * 1000)
    return out


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def lance_appends(root: Path, n: int) -> list[float] | None:
    if importlib.util.find_spec("lance") is None:
        return None
    import lance

    uri = str(root / "lance")
    lance.write_dataset(SCHEMA.empty_table(), uri)
    return timed_appends(lambda b: lance.write_dataset(b, uri, mode="append"), n)


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--open-commits", type=int, default=1000)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-"))
    rows = []

    lf_uri, dl_uri = str(root / "lf"), str(root / "dl")
    t = lf.Table.create(lf_uri, SCHEMA)
    lf_ms = timed_appends(t.append, args.appends)
    deltalake.write_deltalake(dl_uri, SCHEMA.empty_table())
    dl_ms = timed_appends(lambda b: deltalake.write_deltalake(dl_uri, b, mode="append"), args.appends)
    for label, sl in (("first 100", slice(0, 100)), ("last 100", slice(-100, None))):
        a, b = statistics.mean(lf_ms[sl]), statistics.mean(dl_ms[sl])
        rows.append((f"append 100 rows, ms/commit ({label})", a, b))

    # A long log: keep appending to reach open-commits versions on both tables.
    extra = max(0, args.open_commits - args.appends)
    for i in range(extra):
        t.append(batch(args.appends + i, 10))
        deltalake.write_deltalake(dl_uri, batch(args.appends + i, 10), mode="append")
    # deltalake does not checkpoint by itself; give it the same checkpoint lakeflow has.
    deltalake.DeltaTable(dl_uri, version=(t.version // 100) * 100).create_checkpoint()
    rows.append((f"open latest ({t.version} commits), ms", best_of(lambda: lf.Table(lf_uri).version),
                 best_of(lambda: deltalake.DeltaTable(dl_uri).version())))
    middle = t.version // 2 + 7
    rows.append((f"open + read as of version {middle}, ms",
                 best_of(lambda: lf.Table(lf_uri).snapshot(version=middle).to_arrow()),
                 best_of(lambda: deltalake.DeltaTable(dl_uri, version=middle).to_pyarrow_table())))
    assert lf.Table(lf_uri).snapshot(version=middle).num_rows == \
        deltalake.DeltaTable(dl_uri, version=middle).to_pyarrow_table().num_rows

    table = markdown(["measure", "lakeflow", f"deltalake {deltalake.__version__}", "ratio (lakeflow/deltalake)"],
                     [(name, a, b, a / b) for name, a, b in rows])
    print(table)
    series = {"lakeflow": lf_ms, f"deltalake {deltalake.__version__}": dl_ms}
    lance_ms = lance_appends(root, args.appends)
    if lance_ms is not None:
        series["lance"] = lance_ms
    return Result(table, [(name, a / b) for name, a, b in rows], {"append_ms": series})


if __name__ == "__main__":
    main()
