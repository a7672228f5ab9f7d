"""Scale-out: staged writes committed exactly once, and Dask / Ray appends and reads.

Workers only write (`write_files`) and read (`ScanTask`) data files; the driver
reads and writes the log. The Dask tests run a real `distributed.LocalCluster`
(two worker processes), the Ray tests one local Ray started once per session.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, QueryBuilder

import lakeflow as lf
from lakeflow.testing import Fault, FaultyFileSystem, assert_table_equal, commit_after, copy_table

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("part", pa.string()), ("x", pa.float64())])


def _rows(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "part": pa.array([f"p{i % 3}" for i in ids]), "x": ids * 0.5}, schema=SCHEMA)


def _deltalake(uri: str, options: dict[str, str] | None = None) -> pa.Table:
    dl = DeltaTable(uri, storage_options=options)
    return pa.table(QueryBuilder().register("t", dl).execute("SELECT * FROM t").read_all())


def _stage(t: lf.Table, data: pa.Table, pieces: int, **kwargs: object) -> list[lf.StagedFiles]:
    """`data` staged by `pieces` "workers", as they would return it (pickled)."""
    size = -(-data.num_rows // pieces)
    staged = [lf.write_files(t.uri, data.slice(i * size, size), partition_by=t.partition_by,
                             schema=t.schema, **kwargs)
              for i in range(pieces)]
    return pickle.loads(pickle.dumps(staged))


def _data_files(t: lf.Table) -> set[str]:
    """Every Parquet file under the table root (committed or not)."""
    fs, root = t.storage.arrow_fs()
    from pyarrow import fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {i.path[len(root) + 1:] for i in infos if i.path.endswith(".parquet") and "_delta_log" not in i.path}


@pytest.fixture(params=["local", "s3"])
def shared_uri(request, tmp_path) -> tuple[str, dict[str, str] | None]:
    """A table location every worker process reaches, and the options that reach it."""
    if request.param == "local":
        return str(tmp_path / "table"), None
    options = request.getfixturevalue("s3_options")
    return f"s3://lakeflow-tests/dask-{os.urandom(6).hex()}", options


# ---- staged writes ------------------------------------------------------------------------


def test_write_files_reads_no_log():
    """A worker needs only the store: every access to _delta_log fails, and write_files works."""
    uri = f"memory://staged-{os.urandom(6).hex()}"
    t = lf.Table.create(uri, SCHEMA, partition_by=["part"])
    faulty = FaultyFileSystem(fsspec.filesystem("memory"), [Fault("any", path="_delta_log", times=None)])
    staged = lf.write_files(uri, _rows(0, 100), partition_by=["part"], schema=SCHEMA,
                            storage_options={"filesystem": faulty}, job_id="job-7")
    assert not [p for _, p in faulty.calls if "_delta_log" in p]
    assert staged.num_rows == 100 and len(staged.adds) == 3
    assert all(os.path.basename(a.path).startswith("part-job-7-") for a in staged.adds)
    assert t.version == 0  # nothing committed


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "x" * 101, 7])
def test_write_files_refuses_a_bad_job_id(tmp_path, bad):
    with pytest.raises(lf.InvalidArgumentError, match="job_id"):
        lf.write_files(str(tmp_path / "t"), _rows(0, 3), job_id=bad)


def test_commit_files_once_and_retry_commits_nothing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"])
    staged = _stage(t, _rows(0, 3000), 4)
    version = t.commit_files(staged, app_id="job", txn_version=1)
    assert version == 1 and len(t.history()) == 2
    assert t.history()[0].operation == "WRITE"
    files = _data_files(t)
    # The same job run again: new files staged, then found already committed.
    retry = _stage(t, _rows(0, 3000), 4)
    assert _data_files(t) > files
    assert t.commit_files(retry, app_id="job", txn_version=1) == 1
    assert t.version == 1 and _data_files(t) == files  # the retry's files are deleted
    assert_table_equal(t.to_arrow(), _rows(0, 3000))
    # Committing the very files again (same txn) keeps them: they are the table's.
    assert t.commit_files(staged, app_id="job", txn_version=1) == 1
    assert _data_files(t) == files
    assert_table_equal(t.to_arrow(), _rows(0, 3000))


@pytest.mark.parametrize("key", [(), ("id",)])
def test_two_attempts_of_a_job_racing_commit_once(table_uri, key):
    """The attempt that loses the race to the same (app_id, txn_version) commits nothing, deletes its files."""
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"], key=key)
    other = lf.Table(table_uri)
    first, second = _stage(t, _rows(0, 900), 3), _stage(t, _rows(0, 900), 3)
    commit_after(other, lambda: t.commit_files(first, app_id="job", txn_version=4))
    assert other.commit_files(second, app_id="job", txn_version=4) == 1
    assert t.version == 1
    assert_table_equal(t.to_arrow(), _rows(0, 900))
    assert not {a.path for s in second for a in s.adds} & _data_files(t)


def test_commit_files_is_read_by_deltalake(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, partition_by=["part"])
    t.commit_files(_stage(t, _rows(0, 2000), 3))
    assert_table_equal(_deltalake(local_uri), t.to_arrow())


def test_killed_job_files_are_left_for_vacuum(table_uri):
    """Files staged by a job that died before its commit: the rerun commits once, vacuum cleans up."""
    t = lf.Table.create(table_uri, SCHEMA)
    orphans = {a.path for s in _stage(t, _rows(0, 500), 2) for a in s.adds}  # never committed
    for _ in range(2):  # the rerun, and a retry of it
        staged = _stage(t, _rows(0, 500), 2)
        assert t.commit_files(staged, app_id="job", txn_version=3) == 1
    assert t.version == 1
    assert_table_equal(t.to_arrow(), _rows(0, 500))
    assert orphans <= _data_files(t)
    assert not t.vacuum().files  # younger than the retention: kept
    time.sleep(1.1)  # past the files' modification times (stores keep whole seconds)
    done = t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    assert set(done.files) == orphans
    assert_table_equal(t.to_arrow(), _rows(0, 500))


def test_commit_files_enforces_the_schema(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"])
    narrow = pa.table({"id": pa.array([1], pa.int32()), "part": ["a"], "x": [1.0]})
    extra = _rows(0, 2).append_column("y", pa.array([1, 2]))
    nulls = pa.table({"id": pa.array([1, None], pa.int64()), "part": ["a", "a"], "x": [1.0, 2.0]})
    cases = [
        (lf.write_files(table_uri, narrow, partition_by=["part"]), "Delta type"),
        (lf.write_files(table_uri, extra, partition_by=["part"]), "does not have"),
        (lf.write_files(table_uri, _rows(0, 2)), "partitioned by"),
        (lf.write_files(table_uri, nulls, partition_by=["part"]), "not nullable"),
        (lf.write_files(table_uri, pa.table({"part": ["a"], "x": [1.0]}), partition_by=["part"]),
         "non-nullable column 'id'"),
    ]
    for staged, message in cases:
        with pytest.raises(lf.SchemaMismatchError, match=message):
            t.commit_files([staged], app_id="job", txn_version=1)
    assert t.version == 0
    # A missing nullable column reads as null; a wider input is cast by write_files(schema=).
    t.commit_files([lf.write_files(table_uri, pa.table({"id": [5], "part": ["a"]}), partition_by=["part"]),
                    lf.write_files(table_uri, narrow, partition_by=["part"], schema=t.schema)])
    assert sorted(t.to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "part": "a", "x": 1.0}, {"id": 5, "part": "a", "x": None}]


def test_commit_files_refuses_files_of_another_table(tmp_path):
    a = lf.Table.create(str(tmp_path / "a"), SCHEMA)
    lf.Table.create(str(tmp_path / "b"), SCHEMA)
    staged = lf.write_files(str(tmp_path / "b"), _rows(0, 5))
    with pytest.raises(lf.InvalidArgumentError, match="cannot be committed"):
        a.commit_files([staged])
    with pytest.raises(lf.InvalidArgumentError, match="twice"):
        a.commit_files([staged, staged])
    assert a.version == 0


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"properties": {"delta.constraints.small": "id < 100"}}, "CHECK constraint 'small'"),
    ({"properties": {"delta.constraints.small": "id < 100", "delta.constraints.ts": "ts IS NOT NULL"}},
     "CHECK constraint 'small'.*CHECK constraint 'ts'"),
])
def test_commit_files_refuses_rules_that_need_the_rows(tmp_path, kwargs, rule):
    schema = SCHEMA.append(pa.field("ts", pa.timestamp("us", "UTC")))
    t = lf.Table.create(str(tmp_path / "t"), schema, **kwargs)
    rows = _rows(0, 3).append_column("ts", pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * 3))
    staged = lf.write_files(t.uri, rows, schema=t.schema)
    with pytest.raises(lf.UnsupportedFeatureError, match=f"{rule}.*use append|{rule}.*with append"):
        t.commit_files([staged])
    assert t.version == 0


def test_commit_files_on_an_event_time_table_proves_rows_on_time_by_statistics(table_uri):
    """No row behind the watermark (the files' minimum event times say so): committed, watermark kept."""
    utc = dt.timezone.utc
    schema = SCHEMA.append(pa.field("ts", pa.timestamp("us", "UTC")))
    t = lf.Table.create(table_uri, schema, event_time="ts")

    def at(start: int, day: int) -> lf.StagedFiles:
        rows = _rows(start, 3).append_column("ts", pa.array([dt.datetime(2026, 1, day, 0, 0, 0, 999, tzinfo=utc),
                                                               None, dt.datetime(2026, 1, 9, tzinfo=utc)]))
        return lf.write_files(t.uri, rows, schema=t.schema)

    assert t.commit_files([at(0, 1)]) == 1  # no watermark yet: nothing is late
    mark = dt.datetime(2026, 1, 5, tzinfo=utc)
    t.append(_rows(10, 1).append_column("ts", pa.array([mark], pa.timestamp("us", "UTC"))), watermark=mark)
    with pytest.raises(lf.UnsupportedFeatureError, match=r"behind the table watermark.*with append"):
        t.commit_files([at(20, 4)])
    assert t.version == 2
    assert t.commit_files([at(30, 5)]) == 3  # at the watermark is on time
    assert t.watermark == mark and t.history()[0].late_rows == 0
    assert t.snapshot().num_rows == 7


def test_commit_files_keeps_a_declared_key_unique(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"], key=["id"])
    t.append(_rows(0, 100))
    with pytest.raises(lf.DuplicateKeyError, match="already in the table"):
        t.commit_files(_stage(t, _rows(90, 20), 2))
    with pytest.raises(lf.DuplicateKeyError, match="more than once"):
        t.commit_files([lf.write_files(t.uri, _rows(200, 5), ["part"], t.schema),
                        lf.write_files(t.uri, _rows(204, 5), ["part"], t.schema)])
    assert t.version == 1
    assert t.commit_files(_stage(t, _rows(100, 50), 2), app_id="k", txn_version=1) == 2
    assert_table_equal(t.to_arrow(), _rows(0, 150))


# ---- Dask ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[object]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def _ddf(data: pa.Table, partitions: int):
    import dask.dataframe as dd

    return dd.from_pandas(data.to_pandas(), npartitions=partitions)


def _dask_append_is_one_commit(uri: str, options: dict[str, str] | None, n: int) -> None:
    import lakeflow.dask as ldask

    t = lf.Table.create(uri, SCHEMA, partition_by=["part"], storage_options=options)
    data = _rows(0, n)
    assert ldask.append(_ddf(data, 8), uri, app_id="job", txn_version=1, storage_options=options) == 1
    assert len(t.history()) == 2 and len(t.snapshot().files) == 24  # 8 partitions x 3 values
    assert ldask.append(_ddf(data, 8), uri, app_id="job", txn_version=1, storage_options=options) == 1
    assert t.version == 1
    assert_table_equal(t.to_arrow(), data)
    assert_table_equal(_deltalake(uri, options), data)


def test_dask_append_from_8_partitions_is_one_commit_exactly_once(dask_client, shared_uri):
    _dask_append_is_one_commit(*shared_uri, 50_000)


@pytest.mark.slow
def test_dask_append_1m_rows(dask_client, local_uri):
    _dask_append_is_one_commit(local_uri, None, 1_000_000)


def test_dask_job_killed_before_its_commit_commits_once(dask_client, local_uri):
    import dask

    import lakeflow.dask as ldask

    t = lf.Table.create(local_uri, SCHEMA, partition_by=["part"])
    ddf = _ddf(_rows(0, 20_000), 8)
    # The first run's workers wrote their files; the driver died before the commit.
    writes = [dask.delayed(lf.write_files)(local_uri, p, ["part"], t.schema) for p in ddf.to_delayed()]
    orphans = {a.path for s in dask.compute(*writes) for a in s.adds}
    assert t.version == 0 and orphans <= _data_files(t)
    assert ldask.append(ddf, local_uri, app_id="job", txn_version=1) == 1
    assert ldask.append(ddf, local_uri, app_id="job", txn_version=1) == 1
    assert len(t.history()) == 2
    assert_table_equal(t.to_arrow(), _rows(0, 20_000))
    assert not orphans & {f.path for f in t.snapshot().files}


def test_dask_read_equals_the_snapshot(dask_client, local_uri):
    import lakeflow.dask as ldask

    t = lf.Table.create(local_uri, SCHEMA, partition_by=["part"])
    empty = ldask.read(local_uri, columns=["id"]).compute()
    assert list(empty.columns) == ["id"] and len(empty) == 0
    t.append(_rows(0, 3000))
    t.append(_rows(3000, 3000))
    t.delete(pc.field("id") < 100)
    where = (pc.field("part") == "p1") & (pc.field("id") >= 2500)
    for version, columns, filter in [(None, None, None), (1, ["id", "x"], where), (3, ["x"], where)]:
        snap = t.snapshot(version)
        got = ldask.read(local_uri, version=version, columns=columns, filter=filter)
        assert got.npartitions == len(snap.scan_tasks(filter))
        assert_table_equal(pa.Table.from_pandas(got.compute(), preserve_index=False),
                           snap.to_arrow(columns=columns, filter=filter))
    pruned = ldask.read(local_uri, filter=pc.field("part") == "p1")
    assert pruned.npartitions == 1  # only the p1 files, in one group
    with pytest.raises(lf.SchemaMismatchError):
        ldask.read(local_uri, columns=["nope"])


@pytest.mark.parametrize("name", ["table-with-dv-small", "table_with_column_mapping"])
def test_dask_read_applies_deletion_vectors_and_column_mapping(dask_client, local_uri, name):
    """The workers read through the snapshot scan path: deleted rows left out, physical names mapped."""
    import lakeflow.dask as ldask

    copy_table(Path(__file__).parent / "data" / "conformance" / "tables" / name, local_uri)
    expected = lf.Table(local_uri).to_arrow()
    got = ldask.read(local_uri).compute()
    assert_table_equal(pa.Table.from_pandas(got, preserve_index=False), expected)


# ---- Ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_append_exactly_once_and_read(ray_session, local_uri):
    import ray.data

    import lakeflow.ray as lray

    t = lf.Table.create(local_uri, SCHEMA, partition_by=["part"])
    data = _rows(0, 50_000)
    dataset = ray.data.from_arrow([data.slice(i * 6250, 6250) for i in range(8)])  # 8 blocks
    assert lray.append(dataset, local_uri, app_id="job", txn_version=1) == 1
    assert lray.append(dataset, local_uri, app_id="job", txn_version=1) == 1
    assert len(t.history()) == 2 and len(t.snapshot().files) == 24
    assert_table_equal(_deltalake(local_uri), data)
    where = (pc.field("part") == "p2") & (pc.field("id") < 40_000)
    got = lray.read(local_uri, version=1, columns=["id", "x"], filter=where)
    assert_table_equal(pa.concat_tables(ray.get(got.to_arrow_refs())),
                       t.snapshot(1).to_arrow(columns=["id", "x"], filter=where))


def test_ray_append_to_a_column_mapped_table_writes_physical_names(ray_session, local_uri):
    import ray.data

    import lakeflow.ray as lray

    t = lf.Table.create(local_uri, SCHEMA, partition_by=["part"], properties={"delta.columnMapping.mode": "id"})
    t.rename_column("x", "value")
    data = _rows(0, 1000).rename_columns(["id", "part", "value"])
    lray.append(ray.data.from_arrow([data.slice(0, 500), data.slice(500)]), local_uri)
    assert_table_equal(_deltalake(local_uri), data)
    snap = t.snapshot()
    stored = {snap.column_mapping.physical_name(c) for c in ("id", "value")}
    assert "value" not in stored
    for f in snap.files:
        assert set(pq.read_schema(f"{local_uri}/{f.path}").names) == stored
