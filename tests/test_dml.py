"""Overwrite, restore, properties, constraints and new columns: each one commit, read back by deltalake."""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.testing import assert_table_equal, commit_after

from helpers import sql_scan

SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.float64()), ("day", pa.string())])


def rows(*values: tuple[int, float, str]) -> pa.Table:
    return pa.table({"id": [v[0] for v in values], "amount": [v[1] for v in values],
                     "day": [v[2] for v in values]}, schema=SCHEMA)



def filled(uri: str, **kwargs) -> lf.Table:
    t = lf.Table.create(uri, SCHEMA, **kwargs)
    t.append(rows((1, 10.0, "a"), (2, 20.0, "b")))
    t.append(rows((3, 30.0, "a")))
    return t


def test_overwrite_replaces_every_row_in_one_commit(table_uri):
    t = filled(table_uri, partition_by=["day"])
    v = t.overwrite(rows((9, 1.0, "c")))
    assert v == 3 and t.history(limit=1)[0].parameters["mode"] == "Overwrite"
    assert_table_equal(t.to_arrow(), rows((9, 1.0, "c")))
    assert_table_equal(t.snapshot(version=2).to_arrow(), rows((1, 10.0, "a"), (2, 20.0, "b"), (3, 30.0, "a")))
    d = t.diff(2, 3)
    assert (d.summary.inserted, d.summary.deleted) == (1, 3)


def test_overwrite_is_read_by_deltalake(local_uri):
    t = filled(local_uri)
    t.overwrite(rows((9, 1.0, "c"), (8, 2.0, "d")))
    assert_table_equal(sql_scan(local_uri), t.to_arrow())
    cdf = DeltaTable(local_uri).load_cdf(starting_version=3).read_all()
    assert sorted(cdf.column("_change_type").to_pylist()) == ["delete"] * 3 + ["insert"] * 2


def test_overwrite_schema_mode_overwrite_replaces_the_schema(local_uri):
    t = filled(local_uri)
    new = pa.table({"id": [5], "label": ["x"], "day": ["e"]})
    with pytest.raises(lf.SchemaMismatchError):
        t.overwrite(new)  # strict by default
    t.overwrite(new, schema_mode="overwrite")
    assert t.schema.names == ["id", "label", "day"]
    assert_table_equal(sql_scan(local_uri), t.to_arrow())
    assert t.snapshot(version=2).schema.names == ["id", "amount", "day"]


def test_overwrite_keeps_declared_columns_and_keys(table_uri):
    t = filled(table_uri, key=["id"])
    with pytest.raises(lf.SchemaMismatchError, match="key"):
        t.overwrite(pa.table({"x": [1]}), schema_mode="overwrite")
    with pytest.raises(lf.DuplicateKeyError):
        t.overwrite(rows((1, 1.0, "a"), (1, 2.0, "a")))
    assert t.version == 2


def test_overwrite_exactly_once_and_conflicts_with_a_concurrent_append(table_uri):
    t = filled(table_uri)
    v = t.overwrite(rows((9, 1.0, "c")), app_id="job", txn_version=1)
    assert t.overwrite(rows((9, 1.0, "c")), app_id="job", txn_version=1) == v
    assert t.version == v
    commit_after(t, lambda: lf.Table(table_uri).append(rows((50, 5.0, "z"))))
    with pytest.raises(lf.CommitConflictError):
        t.overwrite(rows((7, 7.0, "c")))
    assert sorted(lf.Table(table_uri).to_arrow().column("id").to_pylist()) == [9, 50]


def test_overwrite_of_an_append_only_table_is_refused(table_uri):
    t = filled(table_uri, properties={"delta.appendOnly": "true"})
    with pytest.raises(lf.AppendOnlyError):
        t.overwrite(rows((9, 1.0, "c")))
    assert t.version == 2


def test_restore_commits_the_old_state(table_uri):
    t = filled(table_uri)
    t.delete(pc.field("id") == 1)
    t.append(rows((4, 40.0, "b")))
    v = t.restore(version=2)
    assert v == 5 and t.history(limit=1)[0].operation == "RESTORE"
    assert_table_equal(t.to_arrow(), t.snapshot(version=2).to_arrow())
    d = t.diff(4, 5, key="id")
    assert (d.summary.inserted, d.summary.deleted, d.summary.updated) == (1, 1, 0)
    when = t.history()[-2].timestamp  # version 1
    t.restore(as_of=when)
    assert_table_equal(t.to_arrow(), rows((1, 10.0, "a"), (2, 20.0, "b")))


def test_restore_is_read_by_deltalake_and_brings_the_schema_back(local_uri):
    t = filled(local_uri)
    t.append(pa.table({"id": [5], "amount": [5.0], "day": ["c"], "note": ["n"]}), schema_mode="merge")
    t.restore(version=2)
    assert t.schema.names == ["id", "amount", "day"]
    assert_table_equal(sql_scan(local_uri), t.to_arrow())


def test_restore_refuses_when_a_needed_file_was_vacuumed(local_uri):
    t = filled(local_uri)
    t.overwrite(rows((9, 1.0, "c")))
    time.sleep(0.05)  # fast commits get timestamps a few ms ahead of the clock (as in test_maintenance)
    assert t.vacuum(dt.timedelta(0), enforce_retention=False).files
    with pytest.raises(lf.VacuumedDataError, match="vacuumed"):
        t.restore(version=2)
    assert t.version == 3
    with pytest.raises(lf.InvalidArgumentError):
        t.restore()


def test_set_properties(table_uri):
    t = filled(table_uri)
    v = t.set_properties({"delta.logRetentionDuration": "interval 60 days", "team": "payments"})
    assert t.properties["team"] == "payments" and t.history(limit=1)[0].operation == "SET TBLPROPERTIES"
    assert t.snapshot(version=v).config.log_retention_ms == 60 * 86_400_000
    with pytest.raises(lf.InvalidArgumentError, match="add_constraint"):
        t.set_properties({"delta.constraints.positive": "amount > 0"})
    with pytest.raises(lf.UnsupportedFeatureError, match="row ids"):
        t.set_properties({"delta.enableRowTracking": "true"})
    with pytest.raises(lf.UnsupportedFeatureError, match="key"):
        t.set_properties({"lakeflow.key": '["id"]'})
    assert t.version == v


def test_enabling_in_commit_timestamps_raises_the_protocol(local_uri):
    t = filled(local_uri)
    t.set_properties({"delta.enableInCommitTimestamps": "true"})
    assert "inCommitTimestamp" in (t.snapshot().protocol.writer_features or ())
    t.append(rows((7, 1.0, "x")))
    assert_table_equal(sql_scan(local_uri), t.to_arrow())


def test_constraints_are_checked_on_existing_rows_then_on_writes(local_uri):
    t = filled(local_uri)
    with pytest.raises(lf.ConstraintViolationError):
        t.add_constraint("small", "amount < 25")  # row 3 has 30
    assert t.version == 2
    t.add_constraint("positive", "amount > 0")
    with pytest.raises(lf.ConstraintViolationError, match="positive"):
        t.append(rows((8, -1.0, "a")))
    assert "checkConstraints" in (t.snapshot().protocol.writer_features or ()) or \
        t.snapshot().protocol.min_writer_version >= 3
    assert DeltaTable(local_uri).metadata().configuration["delta.constraints.positive"] == "amount > 0"
    with pytest.raises(lf.InvalidArgumentError, match="already"):
        t.add_constraint("positive", "amount > 1")
    t.drop_constraint("positive")
    t.append(rows((8, -1.0, "a")))
    with pytest.raises(lf.InvalidArgumentError, match="no constraint"):
        t.drop_constraint("positive")
    assert_table_equal(sql_scan(local_uri), t.to_arrow())


def test_add_constraint_conflicts_with_a_concurrent_append(table_uri):
    t = filled(table_uri)
    commit_after(t, lambda: lf.Table(table_uri).append(rows((50, -5.0, "z"))))
    with pytest.raises(lf.CommitConflictError):
        t.add_constraint("positive", "amount > 0")


def test_add_columns(local_uri):
    t = filled(local_uri)
    t.add_columns([pa.field("note", pa.string()), pa.field("at", pa.timestamp("us", "UTC"))])
    assert t.schema.names == ["id", "amount", "day", "note", "at"]
    assert t.to_arrow().column("note").null_count == 3
    t.append(pa.table({"id": [4], "amount": [1.0], "day": ["q"], "note": ["hi"],
                       "at": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)], pa.timestamp("us", "UTC"))}))
    assert_table_equal(sql_scan(local_uri), t.to_arrow())
    with pytest.raises(lf.SchemaMismatchError, match="exist"):
        t.add_columns([pa.field("NOTE", pa.string())])
    with pytest.raises(lf.SchemaMismatchError, match="nullable"):
        t.add_columns([pa.field("x", pa.int64(), nullable=False)])


def test_update_sets_new_values_on_matching_rows(local_uri):
    t = filled(local_uri, partition_by=["day"])
    assert t.update("amount > 15", {"amount": "amount * 10"}) == 2
    assert sorted(t.to_arrow().column("amount").to_pylist()) == [10.0, 200.0, 300.0]
    assert t.history(limit=1)[0].operation == "UPDATE"
    assert_table_equal(sql_scan(local_uri), t.to_arrow())
    d = t.diff(2, 3, key="id")
    assert (d.summary.updated, d.summary.inserted, d.summary.deleted) == (2, 0, 0)
    cdf = DeltaTable(local_uri).load_cdf(starting_version=3).read_all()
    assert sorted(cdf.column("_change_type").to_pylist()) == ["update_postimage"] * 2 + ["update_preimage"] * 2


def test_update_takes_polars_and_pyarrow_expressions(table_uri):
    import polars as pl

    t = filled(table_uri)
    assert t.update(pc.field("id") == 1, {"amount": pl.col("amount") + 1}) == 1
    assert t.update(pc.field("id") == 2, {"amount": pc.multiply(pc.field("amount"), 2)}) == 1
    assert sorted(t.to_arrow().column("amount").to_pylist()) == [11.0, 30.0, 40.0]
    assert t.update("id = 99", {"amount": "0"}) == 0 and t.version == 4


def test_update_refuses_bad_input_before_writing(table_uri):
    t = filled(table_uri, key=["id"])
    t.add_constraint("positive", "amount > 0")
    v = t.version
    with pytest.raises(lf.InvalidArgumentError, match="key"):
        t.update("id = 1", {"id": "5"})
    with pytest.raises(lf.SchemaMismatchError, match="nope"):
        t.update("id = 1", {"nope": "1"})
    with pytest.raises(lf.InvalidArgumentError, match="not a column"):
        t.update("nope = 1", {"amount": "1"})
    with pytest.raises(lf.ConstraintViolationError, match="positive"):
        t.update("id = 1", {"amount": "-1"})
    assert t.version == v


def test_sql_predicates_filter_reads_and_deletes(local_uri):
    t = filled(local_uri, partition_by=["day"])
    s = t.snapshot()
    assert sorted(s.to_arrow(filter="amount >= 20 AND day = 'a'").column("id").to_pylist()) == [3]
    assert len(s.files_matching("day = 'b'")) == 1  # partition pruning still applies
    assert s.head(5, filter="id IN (1, 3)").num_rows == 2
    assert t.delete("day = 'a' AND amount < 15") == 1
    assert sorted(t.to_arrow().column("id").to_pylist()) == [2, 3]
    with pytest.raises(lf.InvalidArgumentError, match="'colour' is not a column"):
        s.to_arrow(filter="colour = 'red'")


def test_widen_column_keeps_old_files_and_takes_wider_values(table_uri):
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int32()), ("x", pa.float32())]))
    t.append(pa.table({"id": pa.array([1, 2], pa.int32()), "x": pa.array([0.5, 1.5], pa.float32())}))
    v = t.widen_column("id", pa.int64())
    t.widen_column("x", pa.float64())
    assert t.schema.field("id").type == pa.int64() and t.schema.field("x").type == pa.float64()
    assert "typeWidening" in (t.snapshot().protocol.writer_features or ())
    assert t.history(limit=1)[0].operation == "CHANGE COLUMN"
    t.append(pa.table({"id": pa.array([2**40], pa.int64()), "x": pa.array([1e300], pa.float64())}))
    assert sorted(t.to_arrow().column("id").to_pylist()) == [1, 2, 2**40]
    assert t.to_arrow(filter="id = 2").column("x").to_pylist() == [1.5]  # old files prune by their stats
    assert t.snapshot(version=v - 1).schema.field("id").type == pa.int32()
    assert len(t.diff(1, t.version).added) == 1
    with pytest.raises(lf.UnsupportedFeatureError, match="not a type widening"):
        t.widen_column("id", pa.int32())
    with pytest.raises(lf.InvalidArgumentError, match="already"):
        t.widen_column("id", pa.int64())
    with pytest.raises(lf.SchemaMismatchError):
        t.widen_column("nope", pa.int64())


@pytest.mark.parametrize("dv", [False, True])
def test_overwrite_where_replaces_only_the_matching_rows(local_uri, dv):
    props = {"delta.enableDeletionVectors": "true"} if dv else None
    t = filled(local_uri, partition_by=["day"] if not dv else (), properties=props)
    v = t.overwrite(rows((7, 70.0, "a"), (8, 80.0, "a")), where="day = 'a'")
    assert sorted(t.to_arrow().column("id").to_pylist()) == [2, 7, 8]
    assert t.history(limit=1)[0].parameters["mode"] == "Overwrite"
    assert_table_equal(sql_scan(local_uri), t.to_arrow())
    d = t.diff(v - 1, v)
    assert (d.summary.inserted, d.summary.deleted) == (2, 2)
    cdf = DeltaTable(local_uri).load_cdf(starting_version=v, ending_version=v).read_all()
    assert sorted(cdf.column("_change_type").to_pylist()) == ["delete"] * 2 + ["insert"] * 2
    with pytest.raises(lf.InvalidArgumentError, match="do not match where"):
        t.overwrite(rows((9, 1.0, "b")), where="day = 'a'")
    assert t.version == v


def test_overwrite_where_is_refused_on_keyed_tables(table_uri):
    t = filled(table_uri, key=["id"])
    with pytest.raises(lf.UnsupportedFeatureError, match="merge"):
        t.overwrite(rows((1, 5.0, "a")), where="id = 1")
    assert t.version == 2


def test_restore_conflicts_with_a_concurrent_append(table_uri):
    t = filled(table_uri)
    commit_after(t, lambda: lf.Table(table_uri).append(rows((9, 9.0, "z"))))
    with pytest.raises(lf.CommitConflictError):
        t.restore(version=1)
    assert sorted(lf.Table(table_uri).to_arrow().column("id").to_pylist()) == [1, 2, 3, 9]


def test_a_schema_overwrite_needs_a_column(table_uri):
    t = filled(table_uri)
    with pytest.raises(lf.SchemaMismatchError, match="at least one column"):
        t.overwrite(pa.table({}), schema_mode="overwrite")
    assert t.version == 2


@pytest.mark.parametrize("dv", [False, True])
def test_update_keeps_nested_columns_of_the_rows_it_does_not_change(local_uri, dv):
    schema = pa.schema([("id", pa.int64()), ("s", pa.struct([("x", pa.int64())])),
                        ("tags", pa.list_(pa.string())), ("m", pa.map_(pa.string(), pa.int64()))])
    t = lf.Table.create(local_uri, schema, properties={"delta.enableDeletionVectors": str(dv).lower()})
    t.append(pa.table({"id": [1, 2, 3], "s": [{"x": 1}, None, {"x": 3}], "tags": [["a"], [], None],
                       "m": [[("k", 1)], None, [("j", 2)]]}, schema=schema))
    assert t.update("id = 2", {"id": "id * 10"}) == 1
    rows = sorted(t.to_arrow().to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": 1, "s": {"x": 1}, "tags": ["a"], "m": [("k", 1)]},
                    {"id": 3, "s": {"x": 3}, "tags": None, "m": [("j", 2)]},
                    {"id": 20, "s": None, "tags": [], "m": None}]
    assert sorted(sql_scan(local_uri).to_pylist(), key=lambda r: r["id"]) == rows
