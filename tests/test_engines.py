"""Other engines read lakeflow-written tables: the same rows as lakeflow and deltalake's SQL scan.

Engines (installed by the `test` extra): dask-deltatable, Ray Data's `read_delta`,
DataFusion with deltalake's table provider, and DuckDB's `delta` extension loaded
from the `duckdb-extension-delta` wheel (and `httpfs` from its wheel for S3; `INSTALL
delta` downloads from DuckDB's own server, which CI cannot reach). Daft is not among them: every Daft release on the
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
import pathlib
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import dask_deltatable
import datafusion
import deltalake
import duckdb
import duckdb_extension_delta
import duckdb_extension_httpfs
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
from conftest import S3_BUCKET

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


def _partitioned(uri: str) -> None:
    t = lf.Table.create(uri, SCHEMA, partition_by=("region", "day"))
    for i, region in enumerate(REGIONS):
        t.append(rows(100 * i, 60 + i, region))


def _merged(uri: str) -> lf.Table:
    """A keyed table with change data on: appends, a merge (updates and inserts), a delete."""
    t = lf.Table.create(uri, SCHEMA, partition_by=("region",), key=("id",))
    assert t.properties["delta.enableChangeDataFeed"] == "true"
    t.append(rows(0, 150, "eu"))                         # v1
    t.append(rows(150, 150, "us"))                       # v2
    moved = rows(100, 100, "us").set_column(2, "score", pa.array([-1.0] * 100))
    t.merge(pa.concat_tables([moved, rows(300, 40, "ü")]))  # v3: 50 eu rows move to us
    t.delete(pc.field("id").isin(range(0, 340, 7)))     # v4: rewrites files in part
    assert t.storage.list_dir("_change_data/region=us"), "the merge and delete wrote change data"
    return t


def _checkpointed(uri: str) -> None:
    """Commits summarised by a checkpoint are cleaned up: an engine must read the checkpoint."""
    t = _merged(uri)
    t.checkpoint()                                       # at v4
    t.append(rows(400, 30, None))                        # v5, after the checkpoint
    assert t.cleanup_log(retention=dt.timedelta(0)) == [0, 1, 2, 3]


def _typed_partitions(uri: str) -> None:
    """Partition columns of most primitive types, with nulls and sub-second timestamps."""
    schema = pa.schema([("id", pa.int64()), ("bin", pa.binary()), ("small", pa.int16()),
                        ("at", pa.timestamp("us", tz="UTC")), ("flag", pa.bool_()), ("ratio", pa.float64()),
                        ("day", pa.date32())])
    t = lf.Table.create(uri, schema, partition_by=schema.names[1:])
    t.append(pa.table({
        "id": [1, 2, 3],
        "bin": [b"ab", "😈".encode(), None],
        "small": [1, None, -3],
        "at": [dt.datetime(2024, 5, 1, 10, 30, 0, 123456, tzinfo=UTC), None, dt.datetime(1970, 1, 1, tzinfo=UTC)],
        "flag": [True, None, False],
        "ratio": [1.5, None, -0.25],
        "day": [dt.date(2024, 1, 1), None, dt.date(1969, 12, 31)],
    }, schema=schema))


DECIMALS = pa.schema([("id", pa.int64()), ("price", pa.decimal128(10, 3))])


def _decimal_partitions(uri: str) -> None:
    t = lf.Table.create(uri, DECIMALS, partition_by=("price",))
    prices = [decimal.Decimal(v) for v in ("-2.250", "1.500", "-0.500")] + [None]
    t.append(pa.table({"id": [1, 2, 3, 4], "price": prices}, schema=DECIMALS))


TABLES: dict[str, Callable[[str], object]] = {
    "partitioned": _partitioned, "merged": _merged, "checkpointed": _checkpointed,
    "typed_partitions": _typed_partitions, "decimal_partitions": _decimal_partitions,
}
# Case name -> (table, version read).
CASES: dict[str, tuple[str, int | None]] = {
    "partitioned": ("partitioned", None),
    "merge_delete": ("merged", None),
    "checkpoint": ("checkpointed", None),
    "old_version": ("merged", 2),  # before the merge: the files it removed come back
    "checkpoint_version": ("checkpointed", 4),  # commits 0-3 are gone: only the checkpoint gives v4
    "typed_partitions": ("typed_partitions", None),
    "decimal_partitions": ("decimal_partitions", None),
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Case]]:
    """Every case's table on a store ("local", or "s3": conftest's SeaweedFS), built once."""
    built: dict[str, dict[str, Case]] = {}

    def on(store: str) -> dict[str, Case]:
        if store not in built:
            root = (str(tmp_path_factory.mktemp("engines")) if store == "local"
                    else f"s3://{S3_BUCKET}/e-{uuid.uuid4().hex}")
            for name, build in TABLES.items():
                build(f"{root}/{name}")
            built[store] = {case: Case(f"{root}/{table}", version) for case, (table, version) in CASES.items()}
        return built[store]

    return on


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One small local Ray for this module: starting one takes seconds."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no usage report over the network
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=100 * 2**20, _temp_dir=str(tmp_path_factory.mktemp("ray")))
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            yield
        finally:
            ray.shutdown()


Reader = Callable[[str, int | None, dict[str, str]], pa.Table]


def read_dask(uri: str, version: int | None, options: dict[str, str]) -> pa.Table:
    # Arrow-backed pandas columns: dask's default conversion turns nested and nullable
    # boolean columns into strings (test_dask_default_conversion_is_dasks_own below).
    # The files are read through fsspec (s3fs, configured by the AWS environment).
    frame = dask_deltatable.read_deltalake(uri, version=version, delta_storage_options=options,
                                           pyarrow_to_pandas={"types_mapper": pd.ArrowDtype}).compute()
    return pa.Table.from_pandas(frame, preserve_index=False)


def read_ray(uri: str, version: int | None, options: dict[str, str]) -> pa.Table:
    dataset = ray.data.read_delta(uri, version=version, storage_options=options)
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def read_datafusion(uri: str, version: int | None, options: dict[str, str]) -> pa.Table:
    ctx = datafusion.SessionContext()
    ctx.register_table("t", deltalake.DeltaTable(uri, version=version, storage_options=options))
    return ctx.sql("SELECT * FROM t").to_arrow_table()


def _duckdb_extension(module: ModuleType) -> str:
    """The extension binary a `duckdb-extension-*` wheel ships (DuckDB's own, signed)."""
    return str(next(pathlib.Path(module.__file__ or "").parent.glob("extensions/*/*.duckdb_extension")))


def _duckdb_s3_secret(con: duckdb.DuckDBPyConnection, options: dict[str, str]) -> None:
    endpoint = urllib.parse.urlsplit(options["AWS_ENDPOINT_URL"])
    con.execute("CREATE SECRET (TYPE s3, KEY_ID $key, SECRET $secret, REGION $region, ENDPOINT $endpoint, "
                "URL_STYLE 'path', USE_SSL false)",
                {"key": options["AWS_ACCESS_KEY_ID"], "secret": options["AWS_SECRET_ACCESS_KEY"],
                 "region": options["AWS_REGION"], "endpoint": endpoint.netloc})


def read_duckdb(uri: str, version: int | None, options: dict[str, str]) -> pa.Table:
    # LOAD by path: `INSTALL delta` would download from DuckDB's server.
    with duckdb.connect() as con:
        con.execute(f"LOAD '{_duckdb_extension(duckdb_extension_delta)}'")
        if options:
            con.execute(f"LOAD '{_duckdb_extension(duckdb_extension_httpfs)}'")
            _duckdb_s3_secret(con, options)
        at = "" if version is None else f", version => {int(version)}"
        return con.execute(f"SELECT * FROM delta_scan($uri{at})", {"uri": uri}).arrow().read_all()


READERS: dict[str, Reader] = {
    "dask": read_dask, "ray": read_ray, "datafusion": read_datafusion, "duckdb": read_duckdb,
}


def oracle(case: Case, options: dict[str, str]) -> pa.Table:
    table = deltalake.DeltaTable(case.uri, version=case.version, storage_options=options)
    return pa.table(deltalake.QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all())


# Engines that cannot read S3 tables, whoever wrote them (test_engine_cannot_read_s3_tables).
S3_FAILURES = {
    # dask-deltatable copies delta-rs option names (AWS_S3_ALLOW_UNSAFE_RENAME) into s3fs's.
    "dask": (TypeError, "unexpected keyword argument 'AWS_S3_ALLOW_UNSAFE_RENAME'"),
    # deltalake's FFI table provider scans through DataFusion's object stores (delta-rs#4623).
    "datafusion": (Exception, "No suitable object store found for s3://"),
}
# Engines that misread decimal partition values, on tables other writers make too
# (test_dask_cannot_read_decimal_partitions, test_negative_decimal_partitions_break_deltalake_datasets).
DECIMAL_FAILURES = {
    # pyarrow's Hive partitioning (dask-deltatable reads partition values from paths).
    "dask": (pa.ArrowNotImplementedError, "constructing scalars of type decimal128(10, 3)"),
    # deltalake's to_pyarrow_dataset() turns the log's "-2.250" into "-2.-250".
    "ray": (pa.ArrowInvalid, "The string '-2.-250' is not a valid decimal128 number"),
}
ENGINE_CASES = [pytest.param(store, engine, case, id=f"{store}-{engine}-{case}")
                for store in ("local", "s3") for engine in READERS for case in CASES
                if (store == "local" or engine not in S3_FAILURES)
                and (case != "decimal_partitions" or engine not in DECIMAL_FAILURES)]


@pytest.mark.parametrize(("store", "engine", "case_name"), ENGINE_CASES)
def test_engine_reads_lakeflow_table(request: pytest.FixtureRequest, tables: Callable[[str], dict[str, Case]],
                                     store: str, engine: str, case_name: str) -> None:
    options = {} if store == "local" else dict(request.getfixturevalue("s3_options"))
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    case = tables(store)[case_name]
    ours = lf.Table(case.uri, storage_options=options or None).snapshot(version=case.version).to_arrow()
    theirs = READERS[engine](case.uri, case.version, options)
    assert sorted(theirs.column_names) == sorted(ours.column_names)
    assert_table_equal(theirs.select(ours.column_names).cast(ours.schema), ours)
    assert_table_equal(oracle(case, options).select(ours.column_names).cast(ours.schema), ours)


def test_dask_default_conversion_is_dasks_own(tmp_path: pathlib.Path) -> None:
    """dask-deltatable's default pandas conversion loses types, on deltalake's own tables alike.

    dask's `dataframe.convert-string` (on by default) turns object columns into
    strings: lists and structs become their Python reprs, nullable booleans "True".
    A copy of the same rows written by deltalake, laid out in the same files (one per
    partition), reads the same way, so the loss is dask's, not lakeflow's.
    """
    ours, copy = str(tmp_path / "lakeflow"), str(tmp_path / "deltalake")
    _partitioned(ours)
    deltalake.write_deltalake(copy, lf.Table(ours).to_arrow(), partition_by=["region", "day"])
    lake, delta = (dask_deltatable.read_deltalake(uri).compute() for uri in (ours, copy))
    assert {str(lake[c].dtype) for c in ("tags", "point")} == {"string"}
    assert set(lake["tags"].dropna()) >= {"['t1']", "['t2' 't2']"}
    assert_table_equal(pa.Table.from_pandas(lake, preserve_index=False),
                       pa.Table.from_pandas(delta, preserve_index=False))


@pytest.mark.parametrize("engine", list(S3_FAILURES))
def test_engine_cannot_read_s3_tables(engine: str, s3_options: dict[str, str]) -> None:
    """The engines left out of the S3 cases fail on deltalake's own S3 tables the same way."""
    uri = f"s3://{S3_BUCKET}/e-{uuid.uuid4().hex}"
    deltalake.write_deltalake(uri, rows(0, 10), storage_options=s3_options)
    error, message = S3_FAILURES[engine]
    with pytest.raises(error, match=re.escape(message)):
        READERS[engine](uri, None, s3_options)


def test_dask_cannot_read_decimal_partitions(tmp_path: pathlib.Path) -> None:
    """dask-deltatable fails on decimal partitions, on deltalake's own table alike."""
    ours, copy = str(tmp_path / "lakeflow"), str(tmp_path / "deltalake")
    _decimal_partitions(ours)
    positive = pa.table({"id": [1], "price": pa.array([decimal.Decimal("1.500")], DECIMALS.field("price").type)})
    deltalake.write_deltalake(copy, positive, partition_by=["price"])
    error, message = DECIMAL_FAILURES["dask"]
    for uri in (ours, copy):
        with pytest.raises(error, match=re.escape(message)):
            read_dask(uri, None, {})


def test_negative_decimal_partitions_break_deltalake_datasets(tmp_path: pathlib.Path, ray_cluster: None) -> None:
    """lakeflow logs "-2.250" as the protocol says; deltalake's datasets (Ray's reader) misformat it.

    deltalake's SQL scan, DuckDB and DataFusion read the table right (the main test);
    `to_pyarrow_dataset()`, which Ray's `read_delta` uses, fails, and deltalake's own
    writer commits broken values ("-2.-250", "0.-500") to its log.
    """
    ours, copy = str(tmp_path / "lakeflow"), str(tmp_path / "deltalake")
    _decimal_partitions(ours)
    assert '"price":"-2.250"' in lf.Table(ours).storage.read("_delta_log/00000000000000000001.json").decode()
    error, message = DECIMAL_FAILURES["ray"]
    with pytest.raises(error, match=re.escape(message)):
        deltalake.DeltaTable(ours).to_pyarrow_dataset().to_table()
    with pytest.raises(error, match=re.escape(message)):
        read_ray(ours, None, {})
    with pytest.raises(deltalake.exceptions.DeltaError, match=r"Failed to parse value '(-2\.-250|0\.-500)'"):
        deltalake.write_deltalake(copy, lf.Table(ours).to_arrow(), partition_by=["price"])
    log = pathlib.Path(copy, "_delta_log", "00000000000000000000.json").read_text()
    assert '"price":"-2.-250"' in log and '"price":"0.-500"' in log  # -0.500 even loses its sign
