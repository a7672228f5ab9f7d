"""Interop both ways with deltalake (delta-rs), the oracle: same rows, schema, versions."""

from __future__ import annotations

import datetime as dt
import decimal

import deltalake
import polars as pl
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal

from helpers import sql_scan as oracle

UTC = dt.timezone.utc
SCHEMA = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("score", pa.float64()),
    ("amount", pa.decimal128(12, 2)), ("ts", pa.timestamp("us", tz="UTC")),
    ("day", pa.date32()), ("region", pa.string()),
])


def batch(start, n, region="eu", day=dt.date(2024, 5, 1)):
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": [f"name-{i}" if i % 3 else None for i in ids],
        "score": [i / 7 for i in ids],
        "amount": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(12, 2)),
        "ts": pa.array([dt.datetime(2024, 5, 1, tzinfo=UTC) + dt.timedelta(minutes=i) for i in ids],
                       pa.timestamp("us", tz="UTC")),
        "day": pa.array([day] * n, pa.date32()),
        "region": [region] * n,
    }, schema=SCHEMA)


@pytest.mark.parametrize("partition_by", [(), ("region",), ("day", "region")])
def test_deltalake_reads_lakeflow_tables_at_every_version(local_uri, partition_by):
    t = lf.Table.create(local_uri, SCHEMA, partition_by=partition_by,
                        properties={"delta.checkpointInterval": "3"})
    batches = [batch(0, 5), batch(5, 4, "us"), batch(9, 3, "eu", dt.date(2024, 5, 2)),
               batch(12, 2, "a/b=c %"), batch(14, 3, "ü")]
    for b in batches:
        t.append(b)
    t.append(batch(20, 2), app_id="job", txn_version=7)
    assert deltalake.DeltaTable(local_uri).version() == t.version
    for v in range(t.version + 1):
        ours = t.snapshot(version=v).to_arrow()
        theirs = oracle(local_uri, v)
        assert_table_equal(theirs.cast(ours.schema), ours)
        dl = deltalake.DeltaTable(local_uri, version=v)
        assert dl.metadata().partition_columns == list(partition_by)
        assert sorted(dl.file_uris()) == sorted(f"{local_uri}/{f.path}" for f in t.snapshot(version=v).files)
    assert deltalake.DeltaTable(local_uri).transaction_version("job") == 7
    # polars reads it too.
    assert_table_equal(pl.read_delta(local_uri).to_arrow().cast(SCHEMA), t.snapshot().to_arrow())


def test_deltalake_schema_matches(local_uri):
    t = lf.Table.create(local_uri, SCHEMA)
    t.append(batch(0, 3))
    theirs = pa.schema(deltalake.DeltaTable(local_uri).schema().to_arrow())
    assert theirs.names == SCHEMA.names
    normalized = [pa.string() if pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type)
                  else f.type for f in theirs]
    assert normalized == SCHEMA.types


def test_lakeflow_reads_deltalake_tables_at_every_version(local_uri):
    deltalake.write_deltalake(local_uri, batch(0, 5), partition_by=["region"])
    deltalake.write_deltalake(local_uri, batch(5, 5, "us"), mode="append")
    deltalake.DeltaTable(local_uri).create_checkpoint()
    deltalake.write_deltalake(local_uri, batch(10, 2, "eu"), mode="overwrite")
    deltalake.write_deltalake(local_uri, batch(12, 3, "x y"), mode="append")
    dl = deltalake.DeltaTable(local_uri)
    dl.delete("id = 13")
    t = lf.Table(local_uri)
    assert t.version == deltalake.DeltaTable(local_uri).version() == 4
    assert t.partition_by == ("region",)
    for v in range(t.version + 1):
        ours = t.snapshot(version=v).to_arrow()
        assert_table_equal(oracle(local_uri, v).cast(ours.schema), ours)


def test_both_write_the_same_table(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, partition_by=["region"])
    t.append(batch(0, 3))
    deltalake.write_deltalake(local_uri, batch(3, 3, "us"), mode="append")
    pl.from_arrow(batch(6, 2)).write_delta(local_uri, mode="append")
    assert t.append(batch(8, 2)) == 4
    assert lf.Table(local_uri).snapshot().num_rows == 10
    assert_table_equal(oracle(local_uri, 4).cast(SCHEMA), lf.Table(local_uri).snapshot().to_arrow())


def test_in_commit_timestamps(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, properties={"delta.enableInCommitTimestamps": "true"})
    assert "inCommitTimestamp" in t.state.protocol.writer_features
    t.append(batch(0, 2))
    t.append(batch(2, 2))
    import json

    stamps = []
    for v in range(3):
        first = json.loads(t.storage.read(f"_delta_log/{v:020d}.json").splitlines()[0])
        assert "commitInfo" in first
        stamps.append(first["commitInfo"]["inCommitTimestamp"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert [c.timestamp for c in reversed(t.history())] == [
        dt.datetime.fromtimestamp(s / 1000, tz=UTC) for s in stamps]
    assert_table_equal(oracle(local_uri, 2).cast(SCHEMA), t.snapshot().to_arrow())


def test_timestamp_ntz_uses_table_features(local_uri):
    schema = pa.schema([("id", pa.int64()), ("local", pa.timestamp("us"))])
    t = lf.Table.create(local_uri, schema)
    assert t.state.protocol.min_reader_version == 3
    assert t.state.protocol.reader_features == ("timestampNtz",)
    data = pa.table({"id": [1], "local": pa.array([dt.datetime(2024, 1, 1, 8)], pa.timestamp("us"))})
    t.append(data)
    assert_table_equal(oracle(local_uri, 1).cast(schema), data)


def test_deltalake_reads_typed_partition_values(local_uri):
    schema = pa.schema([("v", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("b", pa.bool_()),
                        ("d", pa.decimal128(10, 2)), ("i", pa.int32())])
    t = lf.Table.create(local_uri, schema, partition_by=["ts", "b", "d", "i"])
    data = pa.table({
        "v": [1, 2, 3],
        "ts": pa.array([dt.datetime(2024, 1, 1, 12, 30, 1, 5, tzinfo=UTC), None,
                        dt.datetime(1999, 12, 31, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
        "b": [True, None, False],
        "d": pa.array([decimal.Decimal("-12.50"), None, decimal.Decimal("3.00")], pa.decimal128(10, 2)),
        "i": pa.array([-5, None, 7], pa.int32()),
    }, schema=schema)
    t.append(data)
    assert_table_equal(oracle(local_uri, 1).cast(schema), data)
