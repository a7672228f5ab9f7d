"""Scale benchmark: a table of many small files, lakeflow vs deltalake in one run.

    python benchmarks/bench_scale.py [--files 20000] [--repeat 5]

The table is built with lakeflow's transaction API (one small Parquet file per
add, `id` ranges disjoint so statistics prune) and checkpointed; deltalake reads
the same table. Medians of `--repeat` runs:

1. open the latest version;
2. a filtered read that prunes to 1 file, cold (fresh handle) vs deltalake's SQL scan;
3. the same read on a warm handle (lakeflow only; compared with its cold read).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, QueryBuilder

import lakeflow as lf
from lakeflow.actions import Add

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("tag", pa.string())])
ROWS = 10  # rows per file


def build(uri: str, files: int) -> None:
    """A table of `files` files of ROWS rows each, checkpointed at the end."""
    t = lf.Table.create(uri, SCHEMA)
    root = Path(uri)
    adds = []
    for i in range(files):
        ids = list(range(i * ROWS, (i + 1) * ROWS))
        name = f"part-{i:06d}.parquet"
        pq.write_table(pa.table({"id": ids, "value": [x * 0.5 for x in ids],
                                 "tag": [f"t{x % 7}" for x in ids]}, schema=SCHEMA), root / name)
        stats = {"numRecords": ROWS, "minValues": {"id": ids[0], "value": ids[0] * 0.5, "tag": "t0"},
                 "maxValues": {"id": ids[-1], "value": ids[-1] * 0.5, "tag": "t6"},
                 "nullCount": {"id": 0, "value": 0, "tag": 0}}
        adds.append(Add(path=name, partition_values={}, size=(root / name).stat().st_size,
                        modification_time=int(time.time() * 1000), stats=json.dumps(stats)))
    chunk = 2000
    for start in range(0, files, chunk):
        t.transaction("WRITE").add(*adds[start:start + chunk]).commit()
    t.checkpoint()


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--table", help="where to build the table (reused when it exists)")
    args = parser.parse_args()
    uri = args.table or str(Path(tempfile.mkdtemp(prefix="lakeflow-scale-")) / "t")
    if not (Path(uri) / "_delta_log").exists():
        build(uri, args.files)
    target = (args.files // 2) * ROWS + 3
    flt = pc.field("id") == target
    sql = f"SELECT * FROM t WHERE id = {target}"

    def lf_cold() -> pa.Table:
        return lf.Table(uri).to_arrow(filter=flt)

    def dl_sql() -> pa.Table:
        return QueryBuilder().register("t", DeltaTable(uri)).execute(sql).read_all()

    assert lf_cold().num_rows == 1 == dl_sql().num_rows
    warm = lf.Table(uri)
    warm.to_arrow(filter=flt)
    rows = [
        (f"open latest ({args.files} files, checkpointed), ms",
         median_ms(lambda: lf.Table(uri).version, args.repeat),
         median_ms(lambda: DeltaTable(uri).version(), args.repeat)),
        (f"filtered read pruning to 1 of {args.files} files (cold), ms",
         median_ms(lf_cold, args.repeat), median_ms(dl_sql, args.repeat)),
    ]
    warm_ms = median_ms(lambda: warm.to_arrow(filter=flt), args.repeat)
    print(f"| measure | lakeflow | deltalake {deltalake.__version__} | ratio (lakeflow/deltalake) |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, b in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    cold = rows[1][1]
    print(f"\nwarm handle, same read: {warm_ms:.1f} ms = {warm_ms / cold:.3f} x the cold read")


if __name__ == "__main__":
    main()
