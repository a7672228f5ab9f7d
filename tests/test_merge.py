"""Merge and delete: copy-on-write, pruning, change data files, conflicts, bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.int64()),
                    ("region", pa.string())])


def rows(ids, region="eu", amount=None, name="n"):
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": [f"{name}{i}" for i in ids],
        "amount": pa.array([amount if amount is not None else i * 10 for i in ids], pa.int64()),
        "region": [region] * len(ids),
    }, schema=SCHEMA)


def by_id(table):
    return table.sort_by("id").to_pylist()


def test_upsert_updates_inserts_and_counts(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2, 3]))
    src = pa.concat_tables([rows([2], amount=99), rows([3]), rows([4], amount=7)])
    r = t.merge(src)
    assert isinstance(r, lf.MergeResult)
    assert (r.version, r.inserted, r.updated, r.deleted, r.unchanged) == (2, 1, 1, 0, 1)
    assert (r.files_read, r.files_rewritten) == (1, 1)
    expected = pa.concat_tables([rows([1]), rows([2], amount=99), rows([3]), rows([4], amount=7)])
    assert_table_equal(t.to_arrow(), expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.inserted = 5  # type: ignore[misc]


def test_delete_removes_whole_files_and_rewrites_partial_ones(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["region"])
    t.append(rows([1, 2], "eu"))
    t.append(rows([3, 4], "us"))
    before = {f.path for f in t.snapshot().files}
    assert t.delete(pc.field("region") == "us") == 2
    assert t.delete(pc.field("id") == 1) == 1
    assert t.delete(pc.field("id") == 42) == 0
    assert t.version == 4  # the no-op delete commits nothing
    assert by_id(t.to_arrow()) == by_id(rows([2], "eu"))
    last = t.history(limit=2)
    assert last[1].metrics["numCopiedRows"] == 0 and last[1].metrics["numAddedFiles"] == 0
    assert last[0].metrics["numCopiedRows"] == 1
    assert not before & {f.path for f in t.snapshot().files}


def test_merge_reads_back_identically_in_deltalake_with_change_feed(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, partition_by=["region"], key=["id"])
    t.append(rows([1, 2, 3], "eu"))
    t.append(rows([4, 5], "us"))
    t.merge(pa.concat_tables([rows([2], "eu", amount=-1), rows([6], "us")]))
    dl = deltalake.DeltaTable(local_uri)
    theirs = pa.table(deltalake.QueryBuilder().register("t", dl).execute("select * from t").read_all())
    assert_table_equal(theirs.cast(SCHEMA), t.to_arrow())
    cdf = pa.table(dl.load_cdf(starting_version=3, ending_version=3).read_all())
    changes = sorted((r["id"], r["amount"], r["_change_type"]) for r in cdf.to_pylist())
    assert changes == [(2, -1, "update_postimage"), (2, 20, "update_preimage"), (6, 60, "insert")]


def test_when_matched_expression(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2]))
    r = t.merge(pa.table({"id": [2, 3], "amount": [5, 6]}),
                when_matched={"amount": pl.col("target.amount") + pl.col("source.amount")},
                when_not_matched="ignore")
    assert (r.updated, r.inserted) == (1, 0)
    assert [x["amount"] for x in by_id(t.to_arrow())] == [10, 25]


def test_bad_input_writes_nothing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1]))
    with pytest.raises(lf.SchemaMismatchError, match="unknown"):
        t.merge(rows([1]), on="nope")
    with pytest.raises(lf.DuplicateKeyError, match="'id': 2"):
        t.merge(rows([2, 2]))
    with pytest.raises(lf.SchemaMismatchError, match="null"):
        t.merge(pa.table({"id": pa.array([None, 5], pa.int64()), "name": ["a", "b"],
                          "amount": [1, 2], "region": ["eu", "eu"]}))
    assert t.version == 1


def test_watermark_reject_and_history(table_uri):
    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))])
    t = lf.Table.create(table_uri, schema, key=["id"], event_time="ts", window="1d")
    day = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
    t.append(pa.table({"id": [1], "ts": [day]}, schema=schema), watermark=day + dt.timedelta(days=1))
    with pytest.raises(lf.LateDataError, match="1 changed rows"):
        t.merge(pa.table({"id": [2], "ts": [day]}, schema=schema), late="reject")
    r = t.merge(pa.table({"id": [2], "ts": [day]}, schema=schema))
    assert r.late_rows == 1 and r.revised_windows == (day,)
    assert t.history(limit=1)[0].late_rows == 1
    assert [c.version for c in t.revisions(day)] == [r.version]
