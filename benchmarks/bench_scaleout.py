"""Scale-out benchmark: N rows appended from Dask (2 workers) vs dask-deltatable vs one process.

    python benchmarks/bench_scaleout.py [--rows 10000000] [--partitions 16] [--repeat 1]

The rows are generated on the workers and persisted there first, so each timed
write starts from the same in-memory Dask DataFrame:

1. `lakeflow.dask.append` (exactly once, app_id/txn_version): workers write, the driver commits once.
2. `dask_deltatable.to_deltalake(mode="append")`: delta-rs writers on the workers, one commit.
3. `Table.append` of the same rows, already one Arrow table, in this process.

Each result table is read back (row count) to check it holds every row once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from dask_deltatable import to_deltalake
from deltalake import DeltaTable
from distributed import Client, LocalCluster, wait

import lakeflow as lf
import lakeflow.dask as ldask

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("tag", pa.string())])


def part(i: int, rows: int) -> pd.DataFrame:
    ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
    tags = np.array([f"t{k}" for k in range(7)], dtype=object)[ids % 7]
    return pd.DataFrame({"id": ids, "value": ids * 0.5, "tag": pd.array(tags, dtype="string[pyarrow]")})


def _warm_up() -> None:
    """On each worker: import both writers before anything is timed."""
    import dask_deltatable  # noqa: F401

    import lakeflow.ops.staged  # noqa: F401


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    per = args.rows // args.partitions
    total = per * args.partitions
    root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-scaleout-"))
    results: dict[str, list[float]] = {"lakeflow.dask.append": [], "dask_deltatable.to_deltalake": [],
                                       "Table.append (1 process)": []}
    local = pa.Table.from_pandas(pd.concat([part(i, per) for i in range(args.partitions)]),
                                 preserve_index=False).cast(SCHEMA)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(_warm_up)
        ddf = dd.from_map(part, range(args.partitions), rows=per).persist()
        wait(ddf)
        for r in range(args.repeat):
            lf_uri, dl_uri, one_uri = (str(root / f"{name}-{r}") for name in ("lf", "dl", "one"))
            lf.Table.create(lf_uri, SCHEMA)
            Path(dl_uri).mkdir()  # dask-deltatable opens the directory before creating the table
            results["lakeflow.dask.append"].append(
                timed(lambda: ldask.append(ddf, lf_uri, app_id="bench", txn_version=1)))  # noqa: B023
            results["dask_deltatable.to_deltalake"].append(
                timed(lambda: to_deltalake(dl_uri, ddf, mode="append")))  # noqa: B023
            one = lf.Table.create(one_uri, SCHEMA)
            results["Table.append (1 process)"].append(timed(lambda: one.append(local)))  # noqa: B023
            assert lf.Table(lf_uri).snapshot().num_rows == total
            assert lf.Table(one_uri).snapshot().num_rows == total
            assert DeltaTable(dl_uri).to_pyarrow_dataset().count_rows() == total
            assert lf.Table(lf_uri).version == 1  # one commit
    print(f"{total:,} rows, {args.partitions} Dask partitions, 2 worker processes x 1 thread")
    print(f"| writer | seconds (best of {args.repeat}) | rows/s |")
    print("| --- | ---: | ---: |")
    for name, times in results.items():
        best = min(times)
        print(f"| {name} | {best:.2f} | {total / best / 1e6:.2f} M |")


if __name__ == "__main__":
    main()
