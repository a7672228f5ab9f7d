"""Merge with a source that lacks some table columns: Delta's `UPDATE SET *` / `INSERT *` rule.

Updated rows keep the target's values of the columns the source does not have;
inserted rows get nulls there. Each case is checked against the same merge run by
deltalake (`when_matched_update_all().when_not_matched_insert_all()`) and, on local
tables, against deltalake's SQL scan of lakeflow's table.
"""

from __future__ import annotations

import datetime as dt

import deltalake
import polars as pl
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal

from helpers import sql_scan as sql_rows

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.int64()),
                    ("region", pa.string())])
INITIAL = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"], "amount": [10, 20, 30],
                    "region": ["eu", "eu", "us"]}, schema=SCHEMA)
CDF = ["_change_type", "_commit_version", "_commit_timestamp"]


def deltalake_merge(path, schema, initial, source, *, insert=True, partition_by=None):
    """What deltalake's own `UPDATE SET *` (and `INSERT *`) merge makes of `initial`: rows, feed."""
    deltalake.write_deltalake(path, initial.cast(schema), partition_by=partition_by,
                              configuration={"delta.enableChangeDataFeed": "true"})
    merger = deltalake.DeltaTable(path).merge(source, "t.id = s.id", source_alias="s",
                                              target_alias="t").when_matched_update_all()
    if insert:
        merger = merger.when_not_matched_insert_all()
    merger.execute()
    feed = pa.table(deltalake.DeltaTable(path).load_cdf(starting_version=1).read_all())
    return sql_rows(path), feed.drop_columns(["_commit_version", "_commit_timestamp"])


def test_partial_source_keeps_target_columns_on_update_and_nulls_on_insert(table_uri, backend, tmp_path):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["region"], key=["id"])
    t.append(INITIAL)
    source = pa.table({"id": pa.array([2, 3, 4], pa.int64()), "amount": pa.array([99, 31, 40], pa.int64())})
    r = t.merge(source)
    assert (r.inserted, r.updated, r.unchanged) == (1, 2, 0)

    expected, expected_feed = deltalake_merge(str(tmp_path / "oracle"), SCHEMA, INITIAL, source,
                                              partition_by=["region"])
    assert_table_equal(t.to_arrow(), expected)
    assert t.to_arrow().filter(pa.compute.field("id") == 2).to_pylist() == [
        {"id": 2, "name": "b", "amount": 99, "region": "eu"}]
    if backend == "local":  # deltalake's SQL scan of moto S3 stalls on partitioned reads
        assert_table_equal(sql_rows(table_uri), expected)
    # The change data: pre- and postimages keep name and region; the insert has nulls.
    (change,) = t.changes(r.version - 1, r.version)
    assert_table_equal(change.rows.drop_columns(CDF[1:]), expected_feed)


def test_update_only_merge_may_omit_non_nullable_columns(table_uri, tmp_path):
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string(), nullable=False),
                        ("amount", pa.int64())])
    initial = pa.table({"id": [1, 2], "name": ["a", "b"], "amount": [1, 2]}, schema=schema)
    t = lf.Table.create(table_uri, schema, key=["id"])
    t.append(initial)
    source = pa.table({"id": pa.array([2, 5], pa.int64()), "amount": pa.array([7, 8], pa.int64())})
    r = t.merge(source, when_not_matched="ignore")
    assert (r.inserted, r.updated) == (0, 1)
    expected, _ = deltalake_merge(str(tmp_path / "oracle"), schema, initial, source, insert=False)
    assert_table_equal(t.to_arrow(), expected, check_types=False)
    assert sorted(t.to_arrow().to_pylist(), key=lambda x: x["id"]) == [
        {"id": 1, "name": "a", "amount": 1}, {"id": 2, "name": "b", "amount": 7}]


def test_inserting_merge_refuses_a_source_without_a_non_nullable_column(table_uri):
    schema = pa.schema([("id", pa.int64()), pa.field("name", pa.string(), nullable=False), ("amount", pa.int64())])
    t = lf.Table.create(table_uri, schema, key=["id"])
    t.append(pa.table({"id": [1, 2], "name": ["a", "b"], "amount": [1, 2]}, schema=schema))
    files = {f.path for f in t.snapshot().files}
    # Refused up front, even when every source key exists (nothing would be inserted).
    for ids in ([2, 5], [2]):
        source = pa.table({"id": pa.array(ids, pa.int64()), "amount": pa.array([7] * len(ids), pa.int64())})
        with pytest.raises(lf.SchemaMismatchError, match=r"non-nullable column\(s\) \['name'\].*when_not_matched"):
            t.merge(source)
    assert t.version == 1 and {f.path for f in t.snapshot().files} == files


def test_source_without_a_key_column_is_refused_before_writing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["region", "id"])
    t.append(INITIAL)
    with pytest.raises(lf.SchemaMismatchError, match=r"lacks the key column\(s\) \['region'\]"):
        t.merge(pa.table({"id": pa.array([1], pa.int64()), "amount": pa.array([5], pa.int64())}))
    assert t.version == 1


def test_partial_source_identical_values_rewrite_nothing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(INITIAL)
    r = t.merge(pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", "b"]}))
    assert (r.updated, r.unchanged, r.files_rewritten, r.version) == (0, 2, 0, 1)


def test_expressions_see_only_the_source_columns_given(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(INITIAL)
    source = pa.table({"id": pa.array([1, 9], pa.int64()), "amount": pa.array([5, 6], pa.int64())})
    r = t.merge(source, when_matched={"amount": pl.col("target.amount") + pl.col("source.amount")})
    assert (r.updated, r.inserted) == (1, 1)
    assert sorted(t.to_arrow().to_pylist(), key=lambda x: x["id"])[0::3] == [
        {"id": 1, "name": "a", "amount": 15, "region": "eu"},
        {"id": 9, "name": None, "amount": 6, "region": None}]
    # A source column the source does not have is an error, not a column of nulls.
    with pytest.raises(lf.InvalidArgumentError, match=r"source\.name"):
        t.merge(source, when_matched={"name": pl.col("source.name")})
    assert t.version == 2


def test_late_partial_update_is_judged_and_held_as_the_row_it_would_write(table_uri):
    utc = dt.timezone.utc
    d1, d2 = dt.datetime(2024, 3, 1, 9, tzinfo=utc), dt.datetime(2024, 3, 2, tzinfo=utc)
    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("amount", pa.int64()),
                        ("note", pa.string())])
    t = lf.Table.create(table_uri, schema, key=["id"], event_time="ts")
    t.append(pa.table({"id": [1], "ts": [d1], "amount": [10], "note": ["x"]}, schema=schema), watermark=d2)
    source = pa.table({"id": pa.array([1, 3], pa.int64()), "amount": pa.array([11, 5], pa.int64())})
    # The update keeps id 1's event time, which is behind the watermark: a late change.
    with pytest.raises(lf.LateDataError, match="1 changed rows"):
        t.merge(source, late="reject")
    r = t.merge(source, late="quarantine")
    assert (r.updated, r.inserted, r.quarantined) == (0, 1, 1)
    held = lf.Table(f"{table_uri}/_lakeflow_quarantine").to_arrow().select(schema.names)
    # Held as the row the update would write, so merging it back later writes exactly that.
    assert held.to_pylist() == [{"id": 1, "ts": d1, "amount": 11, "note": "x"}]
