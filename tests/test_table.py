"""Create, open, append, snapshots, time travel and history, on every backend."""

from __future__ import annotations

import datetime as dt
import json
import time

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal

from helpers import Calls

UTC = dt.timezone.utc
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("day", pa.date32())])


def rows(ids, day=dt.date(2024, 1, 1)):
    return pa.table({"id": pa.array(ids, pa.int64()), "name": [f"n{i}" for i in ids],
                     "day": pa.array([day] * len(ids), pa.date32())})


def test_create_and_open(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["day"], key=["id"], event_time="day")
    assert t.version == 0
    assert t.schema == SCHEMA
    assert t.partition_by == ("day",)
    assert t.key == ("id",)
    assert t.event_time == "day"
    again = lf.Table(table_uri)
    assert again.version == 0 and again.schema == SCHEMA
    assert again.snapshot().to_arrow().num_rows == 0


def test_create_twice_and_open_missing(table_uri):
    with pytest.raises(lf.TableNotFoundError):
        lf.Table(table_uri)
    lf.Table.create(table_uri, SCHEMA)
    with pytest.raises(lf.TableExistsError):
        lf.Table.create(table_uri, SCHEMA)


@pytest.mark.parametrize("kwargs, match", [
    ({"partition_by": ["nope"]}, "unknown"),
    ({"key": ["id", "id"]}, "repeats"),
    ({"event_time": "name"}, "timestamp or date"),
    ({"partition_by": ["id", "name", "day"]}, "at least one"),
])
def test_create_rejects_bad_arguments(table_uri, kwargs, match):
    with pytest.raises(lf.SchemaMismatchError, match=match):
        lf.Table.create(table_uri, SCHEMA, **kwargs)
    with pytest.raises(lf.TableNotFoundError):
        lf.Table(table_uri)


def test_append_and_time_travel(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["day"])
    v1 = t.append(rows([1, 2]))
    v2 = t.append(rows([3], dt.date(2024, 1, 2)))
    assert (v1, v2) == (1, 2)
    assert_table_equal(t.snapshot(version=1).to_arrow(), rows([1, 2]))
    assert_table_equal(t.snapshot().to_arrow(),
                       pa.concat_tables([rows([1, 2]), rows([3], dt.date(2024, 1, 2))]))
    assert t.snapshot(version=0).num_rows == 0
    # Reading an old version never moves the handle.
    assert t.version == 2
    with pytest.raises(lf.VersionNotFoundError, match=r"versions 0\.\.2"):
        t.snapshot(version=7)
    with pytest.raises(lf.VersionNotFoundError):
        t.snapshot(version=-1)


@pytest.mark.parametrize("convert", [
    lambda t: t,
    lambda t: pl.from_arrow(t),
    lambda t: t.to_pandas(),
    lambda t: pa.RecordBatchReader.from_batches(t.schema, t.to_batches()),
    lambda t: t.to_batches()[0],
    lambda t: pl.from_arrow(t).lazy(),
], ids=["arrow", "polars", "pandas", "reader", "batch", "lazy"])
def test_append_accepts_any_arrow_input(table_uri, convert):
    t = lf.Table.create(table_uri, SCHEMA)
    data = rows([1, 2, 3])
    t.append(convert(data))
    assert_table_equal(t.snapshot().to_arrow(), data)


def test_append_pycapsule_object(table_uri):
    class Capsule:
        def __init__(self, table):
            self.table = table

        def __arrow_c_stream__(self, requested_schema=None):
            return self.table.__arrow_c_stream__(requested_schema)

    t = lf.Table.create(table_uri, SCHEMA)
    t.append(Capsule(rows([5])))
    assert t.snapshot().to_arrow().column("id").to_pylist() == [5]


def test_empty_append_commits_nothing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    assert t.append(rows([])) == 0
    assert len(t.history()) == 1


def test_schema_enforcement(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    with pytest.raises(lf.SchemaMismatchError, match="extra"):
        t.append(rows([1]).append_column("extra", pa.array([1])))
    with pytest.raises(lf.SchemaMismatchError, match="'id'"):
        t.append(pa.table({"id": ["x"], "name": ["a"], "day": [dt.date(2024, 1, 1)]}))
    # Safe widening casts are applied: int32 -> int64, large_string -> string.
    t.append(pa.table({"id": pa.array([1], pa.int32()), "name": pa.array(["a"], pa.large_string()),
                       "day": [dt.date(2024, 1, 1)]}))
    # Missing nullable columns are filled with nulls.
    t.append(pa.table({"id": pa.array([2], pa.int64())}))
    got = t.snapshot().to_arrow().sort_by("id")
    assert got.column("name").to_pylist() == ["a", None]
    assert got.schema == SCHEMA
    assert t.version == 2


def test_non_nullable_and_narrowing(table_uri):
    schema = pa.schema([pa.field("id", pa.int32(), nullable=False)])
    t = lf.Table.create(table_uri, schema)
    with pytest.raises(lf.SchemaMismatchError, match="not nullable"):
        t.append(pa.table({"id": pa.array([1, None], pa.int32())}))
    with pytest.raises(lf.SchemaMismatchError, match="int64"):
        t.append(pa.table({"id": pa.array([1], pa.int64())}))
    assert t.version == 0


def test_schema_merge_adds_nullable_column(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1]))
    t.append(rows([2]).append_column("score", pa.array([1.5])), schema_mode="merge")
    assert t.schema.names == ["id", "name", "day", "score"]
    got = t.snapshot().to_arrow().sort_by("id")
    assert got.column("score").to_pylist() == [None, 1.5]
    assert t.snapshot(version=1).schema == SCHEMA


def test_exactly_once_append(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    v1 = t.append(rows([1]), app_id="job", txn_version=1)
    v2 = t.append(rows([2]), app_id="job", txn_version=2)
    assert t.append(rows([2]), app_id="job", txn_version=2) == v2
    assert t.append(rows([1]), app_id="job", txn_version=1) == v1
    # Another handle (another process after a restart) sees the same.
    other = lf.Table(table_uri)
    assert other.append(rows([2]), app_id="job", txn_version=2) == v2
    assert t.snapshot().num_rows == 2
    assert t.append(rows([3]), app_id="other", txn_version=1) == 3
    h = t.history()
    assert [(c.app_id, c.txn_version) for c in h[:3]] == [("other", 1), ("job", 2), ("job", 1)]


def test_exactly_once_checked_at_commit_time(table_uri):
    """A stale handle that retries a batch another handle committed writes nothing."""
    a, b = lf.Table.create(table_uri, SCHEMA), lf.Table(table_uri)
    va = a.append(rows([1]), app_id="job", txn_version=1)
    # b has not refreshed (it read version 0); its append must still find the winner's txn.
    assert b.append(rows([1]), app_id="job", txn_version=1) == va
    assert lf.Table(table_uri).snapshot().num_rows == 1


def test_stale_handle_appends_at_next_version(table_uri):
    a = lf.Table.create(table_uri, SCHEMA)
    b = lf.Table(table_uri)
    a.append(rows([1]))
    assert b.append(rows([2])) == 2
    assert lf.Table(table_uri).snapshot().num_rows == 2


def test_history(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1]), metadata={"source": "test"})
    t.append(rows([2, 3]))
    h = t.history()
    assert [c.version for c in h] == [2, 1, 0]
    assert [c.operation for c in h] == ["WRITE", "WRITE", "CREATE TABLE"]
    assert h[0].metrics["numOutputRows"] == 2
    assert h[1].info["source"] == "test"
    assert all(c.engine.startswith("lakeflow/") for c in h)
    assert [c.version for c in t.history(limit=1)] == [2]
    stamps = [c.timestamp for c in reversed(h)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_time_travel_by_instant(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1]))
    t.append(rows([2]))
    h = {c.version: c.timestamp for c in t.history()}
    assert t.snapshot(as_of=h[1]).version == 1
    assert t.snapshot(as_of=h[2] + dt.timedelta(days=1)).version == 2
    assert t.snapshot(as_of=(h[1] + dt.timedelta(microseconds=500)).isoformat()).version == 1
    with pytest.raises(lf.VersionNotFoundError, match="first commit"):
        t.snapshot(as_of=h[0] - dt.timedelta(seconds=1))
    with pytest.raises(lf.InvalidArgumentError, match="time zone"):
        t.snapshot(as_of=dt.datetime(2024, 1, 1))
    with pytest.raises(lf.InvalidArgumentError):
        t.snapshot(as_of="yesterday")


def test_commit_timestamps_strictly_increase_even_if_clock_goes_back(table_uri, monkeypatch):
    t = lf.Table.create(table_uri, SCHEMA)
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)  # clock far in the past
    t.append(rows([1]))
    t.append(rows([2]))
    stamps = [c.timestamp for c in reversed(t.history())]
    assert stamps[1] > stamps[0] and stamps[2] > stamps[1]


def test_time_travel_ignores_file_mtimes(local_uri):
    import os

    t = lf.Table.create(local_uri, SCHEMA)
    t.append(rows([1]))
    before = {c.version: c.timestamp for c in t.history()}
    for name in os.listdir(os.path.join(local_uri, "_delta_log")):
        os.utime(os.path.join(local_uri, "_delta_log", name), (0, 0))  # as after a copy
    after = {c.version: c.timestamp for c in lf.Table(local_uri).history()}
    assert before == after


def test_snapshot_filters_prune_partitions_and_stats(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["day"])
    t.append(rows([1, 2], dt.date(2024, 1, 1)))
    t.append(rows([10, 11], dt.date(2024, 1, 2)))
    t.append(rows([20, 21], dt.date(2024, 1, 2)))
    s = t.snapshot()
    assert len(s.files) == 3
    assert len(s.files_matching(pc.field("day") == dt.date(2024, 1, 2))) == 2
    assert len(s.files_matching(pc.field("id") >= 20)) == 1
    assert len(s.files_matching(pc.field("id") > 100)) == 0
    got = s.to_arrow(columns=["id"], filter=pc.field("id") >= 11)
    assert sorted(got.column("id").to_pylist()) == [11, 20, 21]
    assert got.column_names == ["id"]
    lazy = s.to_polars().filter(pl.col("day") == dt.date(2024, 1, 1)).select("id").collect()
    assert sorted(lazy["id"].to_list()) == [1, 2]


def test_stats_skipping_keeps_null_rows(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(pa.table({"id": pa.array([None, 5], pa.int64()), "name": ["x", "y"],
                       "day": [dt.date(2024, 1, 1)] * 2}))
    s = t.snapshot()
    assert s.to_arrow(filter=pc.field("id").is_null()).num_rows == 1
    assert s.to_arrow(filter=pc.field("id") == 5).num_rows == 1


def test_snapshot_errors(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1]))
    with pytest.raises(lf.SchemaMismatchError):
        t.snapshot().to_arrow(columns=["nope"])
    with pytest.raises(lf.InvalidArgumentError):
        t.snapshot().to_arrow(filter=42)
    with pytest.raises(lf.InvalidArgumentError):
        t.snapshot().to_arrow(filter="id >")  # SQL is taken, bad SQL refused
    with pytest.raises(lf.InvalidArgumentError):
        t.snapshot(version=1, as_of="2024-01-01T00:00:00Z")


def test_partition_values_round_trip(table_uri):
    schema = pa.schema([("v", pa.int64()), ("s", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("b", pa.bool_()), ("d", pa.decimal128(10, 2))])
    t = lf.Table.create(table_uri, schema, partition_by=["s", "ts", "b", "d"])
    import decimal

    data = pa.table({
        "v": [1, 2, 3, 4],
        "s": ["a/b", "x=y", "ü %20", None],
        "ts": pa.array([dt.datetime(2024, 1, 1, 12, 30, 1, 5, tzinfo=UTC), None,
                        dt.datetime(1999, 12, 31, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC)],
                       pa.timestamp("us", tz="UTC")),
        "b": [True, False, None, True],
        "d": pa.array([decimal.Decimal("-12.50"), decimal.Decimal("0.01"), None,
                       decimal.Decimal("99999999.99")], pa.decimal128(10, 2)),
    })
    t.append(data)
    assert_table_equal(lf.Table(table_uri).snapshot().to_arrow(), data)
    assert len(t.snapshot().files) == 4


def test_checkpoint_every_interval_and_replay_equivalence(table_uri):
    from lakeflow.checkpoint import read_checkpoint
    from lakeflow.log import list_log, read_commit, replay

    t = lf.Table.create(table_uri, SCHEMA, properties={"delta.checkpointInterval": "3"})
    for i in range(7):
        t.append(rows([i]), app_id="a", txn_version=i)
    listing = list_log(t.storage)
    assert sorted(listing.checkpoints) == [3, 6]
    full = replay(None, [(v, read_commit(t.storage, v)) for v in range(8)])
    from_cp = replay(
        replay(None, [(6, read_checkpoint(t.storage, listing.checkpoints[6]))]),
        [(7, read_commit(t.storage, 7))],
    )
    assert from_cp.files == full.files
    assert from_cp.txns.keys() == full.txns.keys()
    assert {k: v.version for k, v in from_cp.txns.items()} == {k: v.version for k, v in full.txns.items()}
    assert from_cp.metadata == full.metadata and from_cp.protocol == full.protocol
    assert json.loads(t.storage.read("_delta_log/_last_checkpoint"))["version"] == 6
    assert lf.Table(table_uri).snapshot().num_rows == 7
    assert lf.Table(table_uri).snapshot(version=4).num_rows == 4


def test_append_cost_does_not_replay_the_log(table_uri, monkeypatch):
    """An append reads only commits newer than the handle's state."""
    t = lf.Table.create(table_uri, SCHEMA)
    for i in range(5):
        t.append(rows([i]))
    calls = Calls(t, monkeypatch)
    t.append(rows([99]))
    reads = calls.commits_read()
    assert all(v > 5 for v in reads), reads


def test_concurrent_appends_from_threads(table_uri):
    from concurrent.futures import ThreadPoolExecutor

    lf.Table.create(table_uri, SCHEMA)

    def writer(w):
        t = lf.Table(table_uri)
        return [t.append(rows([w * 100 + i])) for i in range(10)]

    with ThreadPoolExecutor(4) as pool:
        versions = [v for vs in pool.map(writer, range(4)) for v in vs]
    assert sorted(versions) == list(range(1, 41))
    ids = lf.Table(table_uri).snapshot().to_arrow().column("id").to_pylist()
    assert sorted(ids) == sorted(w * 100 + i for w in range(4) for i in range(10))


def test_conflict_when_winner_changes_schema(table_uri):
    a = lf.Table.create(table_uri, SCHEMA)
    b = lf.Table(table_uri)
    a.append(rows([1]).append_column("extra", pa.array([1])), schema_mode="merge")
    with pytest.raises(lf.CommitConflictError, match="schema"):
        b.transaction("WRITE").commit()


def test_replay_applies_removes_before_adds_within_a_commit():
    from lakeflow.actions import Add, Metadata, Protocol, Remove
    from lakeflow.log import replay

    base = [Protocol(1, 2), Metadata("id", '{"type":"struct","fields":[]}')]
    add = Add("f.parquet", {}, 1, 0)
    # A rewrite of f (new deletion vector) may list its add before its remove.
    state = replay(None, [(0, [*base, add]), (1, [add, Remove("f.parquet", 5)])])
    assert list(state.files) == ["f.parquet"]


def test_read_version_records_what_the_writer_read(table_uri):
    a = lf.Table.create(table_uri, SCHEMA)
    b = lf.Table(table_uri)
    a.append(rows([1]))
    assert b.version == 1 and b.snapshot(version=0).version == 0
    assert b.transaction("WRITE", snapshot=b.snapshot(version=0)).commit().version == 2
    assert b.history(limit=1)[0].info["readVersion"] == 0
