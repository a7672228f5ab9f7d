"""Scale benchmark: a table of many small files, lakeflow vs deltalake in one run.

    python benchmarks/bench_scale.py [--files 20000 100000 300000] [--repeat 5]

Each table (one per `--files` count) is built with lakeflow's transaction API
(one small Parquet file per add, `id` ranges disjoint so statistics prune) and
checkpointed; deltalake reads the same table. Medians of `--repeat` runs:

1. open the latest version;
2. a filtered read that prunes to 1 file, cold (fresh handle) vs deltalake's SQL scan;
3. the same read on a warm handle (lakeflow only; compared with its cold read);
4. with `--s3-commits N`: a fresh open + append of 100 rows on S3 (a moto server
   process) to a table of N commits without a checkpoint, vs deltalake's
   `write_deltalake(..., mode="append")`;
5. with `--as-of-commits N`: time travel by instant (`snapshot(as_of=...)`, no data
   read) on a fresh handle to a table of N commits, one every 10 minutes (commit
   times and file mtimes set so, as a table written over a month would have), vs
   deltalake's `load_as_version(datetime)`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    """A table of `files` files of ROWS rows each, checkpointed at the end (stats as JSON and struct)."""
    t = lf.Table.create(uri, SCHEMA, properties={"delta.checkpoint.writeStatsAsStruct": "true"})
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


def s3_open_append(commits: int, repeat: int) -> tuple[str, float, float]:
    """Fresh open + append on a moto S3 server, lakeflow vs deltalake (ms, medians)."""
    import boto3

    # A server process of its own, as a real store is: one in this process would share
    # the interpreter lock with lakeflow's client (not with deltalake's, in Rust).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://{host}:{port}/moto-api/")
            break
        except OSError:
            time.sleep(0.1)
    opts = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    boto3.client("s3", endpoint_url=opts["AWS_ENDPOINT_URL"], aws_access_key_id="k",
                 aws_secret_access_key="s", region_name="us-east-1").create_bucket(Bucket="bench")
    data = batch_of(0, 100)
    uris = {}
    for who in ("lf", "dl"):
        uris[who] = f"s3://bench/{who}"
        t = lf.Table.create(uris[who], SCHEMA, storage_options=opts,
                            properties={"delta.checkpointInterval": "100000"})
        for _ in range(commits - 1):
            t.append(data)
    a = median_ms(lambda: lf.Table(uris["lf"], opts).append(data), repeat)
    b = median_ms(lambda: deltalake.write_deltalake(uris["dl"], data, mode="append",
                                                    storage_options=opts), repeat)
    server.terminate()
    return f"fresh open + append on S3 (moto), {commits} commits, no checkpoint, ms", a, b


def as_of(commits: int, repeat: int) -> tuple[str, float, float]:
    """Open + time travel to an instant in the middle of a long log, lakeflow vs deltalake."""
    uri = str(Path(tempfile.mkdtemp(prefix="lakeflow-asof-")) / "t")
    t = lf.Table.create(uri, SCHEMA)
    for i in range(commits - 1):
        t.append(batch_of(i, 1))
    base, gap = 1_700_000_000_000, 10 * 60_000
    for v in range(commits):
        file = Path(uri, "_delta_log", f"{v:020d}.json")
        lines = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        for action in lines:
            if "commitInfo" in action:
                action["commitInfo"]["timestamp"] = base + v * gap
        file.write_text("\n".join(json.dumps(a) for a in lines) + "\n")
        os.utime(file, ns=((base + v * gap) * 1_000_000,) * 2)
    middle = commits // 2 + 7
    instant = dt.datetime.fromtimestamp((base + middle * gap + 1000) / 1000, dt.timezone.utc)

    def dl() -> int:
        table = DeltaTable(uri)
        table.load_as_version(instant)
        return table.version()

    assert lf.Table(uri).snapshot(as_of=instant).version == middle == dl()
    return (f"open + as_of an instant, {commits} commits (no data read), ms",
            median_ms(lambda: lf.Table(uri).snapshot(as_of=instant).version, repeat),
            median_ms(dl, repeat))


def batch_of(i: int, n: int) -> pa.Table:
    ids = list(range(i * n, (i + 1) * n))
    return pa.table({"id": ids, "value": [x * 0.5 for x in ids], "tag": ["t"] * n}, schema=SCHEMA)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, nargs="+", default=[20000],
                        help="file counts of the many-files tables (one table each)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--s3-commits", type=int, default=0, help="also measure open + append on S3")
    parser.add_argument("--as-of-commits", type=int, default=0, help="also measure as_of on a long log")
    parser.add_argument("--skip-files", action="store_true", help="skip the many-files table")
    parser.add_argument("--table", help="where to build the table (reused when it exists); with "
                        "several --files counts a prefix, the tables are <table>-<count>")
    args = parser.parse_args()
    rows, notes = [], []
    for files in [] if args.skip_files else args.files:
        if args.table is None:
            uri = str(Path(tempfile.mkdtemp(prefix="lakeflow-scale-")) / "t")
        else:
            uri = args.table if len(args.files) == 1 else f"{args.table}-{files}"
        if not (Path(uri) / "_delta_log").exists():
            build(uri, files)
        many_files(uri, files, args.repeat, rows, notes)
    if args.s3_commits:
        rows.append(s3_open_append(args.s3_commits, args.repeat))
    if args.as_of_commits:
        rows.append(as_of(args.as_of_commits, args.repeat))
    print(f"| measure | lakeflow | deltalake {deltalake.__version__} | ratio (lakeflow/deltalake) |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, b in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    print("\n".join(notes))


def many_files(uri: str, files: int, repeat: int, rows: list[tuple[str, float, float]],
               notes: list[str]) -> None:
    """Open, a pruned filtered read (cold and warm) on the table of many files."""
    target = (files // 2) * ROWS + 3
    flt = pc.field("id") == target
    sql = f"SELECT * FROM t WHERE id = {target}"

    def lf_cold() -> pa.Table:
        return lf.Table(uri).to_arrow(filter=flt)

    def dl_sql() -> pa.Table:
        return QueryBuilder().register("t", DeltaTable(uri)).execute(sql).read_all()

    assert lf_cold().num_rows == 1 == dl_sql().num_rows
    warm = lf.Table(uri)
    warm.to_arrow(filter=flt)
    rows.append((f"open latest ({files} files, checkpointed), ms",
                 median_ms(lambda: lf.Table(uri).version, repeat),
                 median_ms(lambda: DeltaTable(uri).version(), repeat)))
    rows.append((f"filtered read pruning to 1 of {files} files (cold), ms",
                 median_ms(lf_cold, repeat), median_ms(dl_sql, repeat)))
    warm_ms = median_ms(lambda: warm.to_arrow(filter=flt), repeat)
    notes.append(f"\nwarm handle, same read ({files} files): {warm_ms:.1f} ms = "
                 f"{warm_ms / rows[-1][1]:.3f} x the cold read")


if __name__ == "__main__":
    main()
