"""Other engines read lakeflow-written tables: the same rows as lakeflow and deltalake's SQL scan.

Engines (installed by the `test` extra): dask-deltatable, Ray Data's `read_delta`,
DataFusion with deltalake's table provider, and DuckDB's `delta` extension loaded
from the `duckdb-extension-delta` wheel (`INSTALL delta` downloads from DuckDB's own
server, which CI cannot reach). Daft is not among them: every Daft release on the
package index pins pyarrow below 26 (docs/compatibility.md has its results from a
separate environment).

Each case is a table lakeflow wrote, read at a version by each engine; the engine's
rows, lakeflow's `snapshot(version).to_arrow()` and deltalake's SQL scan must be the
same multiset. Types are compared after casting the engine's columns to lakeflow's
schema (engines return string views, pandas dtypes or `Etc/UTC`), a safe cast.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dask_deltatable
import datafusion
import deltalake
import duckdb
import duckdb_extension_delta
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

import lakeflow as lf
from lakeflow.testing import assert_table_equal

UTC = dt.timezone.utc
SCHEMA = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("score", pa.float64()),
    ("amount", pa.decimal128(12, 2)), ("ts", pa.timestamp("us", tz="UTC")),
    ("day", pa.date32()), ("flag", pa.bool_()), ("tags", pa.list_(pa.string())),
    ("point", pa.struct([("x", pa.int32()), ("y", pa.float64())])), ("region", pa.string()),
])
# Partition values that need escaping in paths, a non-ASCII one and a null one.
REGIONS = ["eu", "us", "a/b=c %", "ü", None]


def rows(start: int, n: int, region: str | None = "eu") -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({
        "id": ids,
        "name": [f"name-{i}" if i % 3 else None for i in ids],
        "score": [i / 7 for i in ids],
        "amount": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(12, 2)),
        "ts": [dt.datetime(2024, 5, 1, tzinfo=UTC) + dt.timedelta(minutes=17 * i) for i in ids],
        "day": [dt.date(2024, 5, 1) + dt.timedelta(days=i % 4) for i in ids],
        "flag": [None if i % 5 == 0 else i % 2 == 0 for i in ids],
        "tags": [[f"t{i % 3}"] * (i % 3) if i % 4 else None for i in ids],
        "point": [{"x": i, "y": i / 2} if i % 6 else None for i in ids],
        "region": [region] * n,
    }, schema=SCHEMA)


@dataclass(frozen=True)
class Case:
    """A lakeflow-written table read at `version` (None: the latest)."""

    uri: str
    version: int | None


def _partitioned(uri: str) -> Case:
    t = lf.Table.create(uri, SCHEMA, partition_by=("region", "day"))
    for i, region in enumerate(REGIONS):
        t.append(rows(100 * i, 60 + i, region))
    return Case(uri, None)


def _merged(uri: str) -> lf.Table:
    """A keyed table with change data on: appends, a merge (updates and inserts), a delete."""
    t = lf.Table.create(uri, SCHEMA, partition_by=("region",), key=("id",))
    assert t.properties["delta.enableChangeDataFeed"] == "true"
    t.append(rows(0, 150, "eu"))                         # v1
    t.append(rows(150, 150, "us"))                       # v2
    moved = rows(100, 100, "us").set_column(2, "score", pa.array([-1.0] * 100))
    t.merge(pa.concat_tables([moved, rows(300, 40, "ü")]))  # v3: 50 eu rows move to us
    t.delete(pc.field("id").isin(range(0, 340, 7)))     # v4: rewrites files in part
    assert list(pathlib.Path(uri, "_change_data").iterdir()), "the merge and delete wrote change data"
    return t


def _after_merge_and_delete(uri: str) -> Case:
    _merged(uri)
    return Case(uri, None)


def _at_old_version(uri: str) -> Case:
    _merged(uri)
    return Case(uri, 2)  # before the merge: its removed files must come back


def _checkpointed(uri: str) -> Case:
    """Commits summarised by a checkpoint are cleaned up: an engine must read the checkpoint."""
    t = _merged(uri)
    t.checkpoint()                                       # at v4
    t.append(rows(400, 30, None))                        # v5, after the checkpoint
    assert t.cleanup_log(retention=dt.timedelta(0)) == [0, 1, 2, 3]
    return Case(uri, None)


BUILDERS: dict[str, Callable[[str], Case]] = {
    "partitioned": _partitioned,
    "merge_delete": _after_merge_and_delete,
    "checkpoint": _checkpointed,
    "old_version": _at_old_version,
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("engines")
    return {name: build(str(root / name)) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One small local Ray for the session: starting one takes seconds."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report over the network
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=100 * 2**20, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def read_dask(uri: str, version: int | None) -> pa.Table:
    # Arrow-backed pandas columns: dask's default conversion turns nested and nullable
    # boolean columns into strings (test_dask_default_conversion_is_dasks_own below).
    frame = dask_deltatable.read_deltalake(uri, version=version,
                                           pyarrow_to_pandas={"types_mapper": pd.ArrowDtype}).compute()
    return pa.Table.from_pandas(frame, preserve_index=False)


def read_ray(uri: str, version: int | None) -> pa.Table:
    dataset = ray.data.read_delta(uri, version=version)
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def read_datafusion(uri: str, version: int | None) -> pa.Table:
    ctx = datafusion.SessionContext()
    ctx.register_table("t", deltalake.DeltaTable(uri, version=version))
    return ctx.sql("SELECT * FROM t").to_arrow_table()


def read_duckdb(uri: str, version: int | None) -> pa.Table:
    # The wheel ships DuckDB's signed extension binary; LOAD by path needs no download.
    extension = next(pathlib.Path(duckdb_extension_delta.__file__).parent.glob("extensions/*/delta.duckdb_extension"))
    with duckdb.connect() as con:
        con.execute(f"LOAD '{extension}'")
        at = "" if version is None else f", version => {int(version)}"
        return con.execute(f"SELECT * FROM delta_scan($uri{at})", {"uri": uri}).arrow().read_all()


READERS: dict[str, Callable[[str, int | None], pa.Table]] = {
    "dask": read_dask, "ray": read_ray, "datafusion": read_datafusion, "duckdb": read_duckdb,
}


def oracle(case: Case) -> pa.Table:
    table = deltalake.DeltaTable(case.uri, version=case.version)
    return pa.table(deltalake.QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all())


@pytest.mark.parametrize("case_name", list(BUILDERS))
@pytest.mark.parametrize("engine", list(READERS))
def test_engine_reads_lakeflow_table(request: pytest.FixtureRequest, cases: dict[str, Case],
                                     engine: str, case_name: str) -> None:
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    case = cases[case_name]
    ours = lf.Table(case.uri).snapshot(version=case.version).to_arrow()
    theirs = READERS[engine](case.uri, case.version)
    assert sorted(theirs.column_names) == sorted(ours.column_names)
    assert_table_equal(theirs.select(ours.column_names).cast(ours.schema), ours)
    assert_table_equal(oracle(case).select(ours.column_names).cast(ours.schema), ours)
