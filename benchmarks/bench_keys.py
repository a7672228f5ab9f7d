"""Key enforcement benchmark: append to a keyed table vs the same append to an unkeyed one.

    python benchmarks/bench_keys.py [--files 100] [--per-file 10000] [--batch 10000] [--repeat 7]

Both tables hold `files` files of `per-file` rows, file i the even ids of its own
id range. Each timed append adds `batch` new odd ids:

- one-file: inside the range of one file, so the key statistics prune the check
  to that file (the next append targets the next file);
- spread: spread over the whole id range, so every file may hold a key and the
  check reads the key column of all of them.

Runs alternate between the tables; the median of `repeat` counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from _report import Result, markdown

import lakeflow as lf

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("tag", pa.string())])


def rows(ids: np.ndarray) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "value": pa.array(ids * 0.5, pa.float64()),
                     "tag": pa.array([f"t{i % 97}" for i in ids.tolist()], pa.string())}, schema=SCHEMA)


def build(uri: str, key: list[str], files: int, per_file: int) -> lf.Table:
    t = lf.Table.create(uri, SCHEMA, key=key)
    for i in range(files):
        t.append(rows(np.arange(i * 2 * per_file, (i + 1) * 2 * per_file, 2)))
    return t


def batch(layout: str, n: int, files: int, per_file: int, k: int) -> pa.Table:
    if layout == "one-file":  # odd ids of file k's range
        start = k * 2 * per_file
        return rows(np.arange(start + 1, start + 2 * n, 2))
    # odd ids spread over every file; each repeat takes other ones
    stride = files * 2 * per_file // n
    return rows(np.arange(n) * stride + 1 + 2 * k)


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--per-file", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for layout in ("one-file", "spread"):
            keyed = build(str(root / f"keyed-{layout}"), ["id"], args.files, args.per_file)
            plain = build(str(root / f"plain-{layout}"), [], args.files, args.per_file)
            times: dict[str, list[float]] = {"keyed": [], "unkeyed": []}
            for k in range(args.repeat):
                data = batch(layout, args.batch, args.files, args.per_file, k)
                for name, t in (("keyed", keyed), ("unkeyed", plain)):
                    start = time.perf_counter()
                    t.append(data)
                    times[name].append(time.perf_counter() - start)
            ms = {name: statistics.median(v) * 1000 for name, v in times.items()}
            print(f"{layout}: keyed {ms['keyed']:.1f} ms, unkeyed {ms['unkeyed']:.1f} ms, "
                  f"ratio {ms['keyed'] / ms['unkeyed']:.2f}")
            out.append((layout, f"{ms['keyed']:.1f}", f"{ms['unkeyed']:.1f}", ms["keyed"] / ms["unkeyed"]))
    table = markdown(["layout", "append keyed, ms (median)", "append unkeyed, ms (median)", "ratio"], out)
    return Result(table, [(f"keyed / unkeyed append, {r[0]}", r[3]) for r in out])


if __name__ == "__main__":
    main()
