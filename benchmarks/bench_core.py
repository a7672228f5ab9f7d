"""Core benchmark: lakeflow vs deltalake in one run, on local disk.

    python benchmarks/bench_core.py [--appends 500] [--open-commits 1000]

1. N appends of 100 rows: ms/commit over the first and the last 100. With pylance
   installed, also N appends to a lakeflow table on an open handle and to a lance
   dataset (`lance.write_dataset(..., mode="append")`), taking turns: the median
   ms/commit of each 100 commits of log length, and the plot of latency against it.
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


def timed_appends(append, n: int, first: int = 0) -> list[float]:
    batches = [batch(i) for i in range(first, first + n)]
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


def lance_appends(root: Path, n: int) -> tuple[list[float], list[float], str] | None:
    """Appends to a lakeflow table (open handle) and a lance dataset, taking turns: (lakeflow ms, lance ms, version)."""
    if importlib.util.find_spec("lance") is None:
        return None
    import lance

    uri = str(root / "lance")
    lance.write_dataset(SCHEMA.empty_table(), uri)
    t = lf.Table.create(str(root / "lf-vs-lance"), SCHEMA)
    lf_ms, lance_ms = [], []
    for i in range(n):
        lf_ms += timed_appends(t.append, 1, i)
        lance_ms += timed_appends(lambda b: lance.write_dataset(b, uri, mode="append"), 1, i)
    return lf_ms, lance_ms, lance.__version__


def lance_table(lf_ms: list[float], lance_ms: list[float], version: str) -> tuple[str, list[tuple[str, float]]]:
    """Median ms/commit per 100 commits of log length, lakeflow vs lance."""
    rows = []
    for a in range(0, len(lf_ms), 100):
        x, y = statistics.median(lf_ms[a:a + 100]), statistics.median(lance_ms[a:a + 100])
        rows.append((f"append 100 rows, median ms/commit (commits {a + 1}-{min(a + 100, len(lf_ms))})", x, y, x / y))
    table = markdown(["measure (taking turns)", "lakeflow, open handle", f"lance {version}",
                      "ratio (lakeflow/lance)"], rows)
    return table, [(f"{name} vs lance", ratio) for name, _, _, ratio in rows]


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
    ratios = [(name, a / b) for name, a, b in rows]
    versus = lance_appends(root, args.appends)
    if versus is not None:
        series["lance"] = versus[1]
        more, more_ratios = lance_table(*versus)
        print(more)
        table += "\n\n" + more
        ratios += more_ratios
    return Result(table, ratios, {"append_ms": series})


if __name__ == "__main__":
    main()
