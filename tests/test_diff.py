"""Diffs between versions and per-commit changes, on every backend, against deltalake's CDF."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import json
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.actions import Add, Cdc, Remove
from lakeflow.testing import Fault, assert_table_equal
from lakeflow.write import write_data_files

from helpers import faulty_table

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("part", pa.string())])
META = ["_change_type", "_commit_version", "_commit_timestamp"]
CONFORMANCE = Path(__file__).parent / "data" / "conformance"


def rows(*items):
    """Rows from (id, name[, part]) tuples."""
    full = [(i, n, p[0] if p else "a") for i, n, *p in items]
    return pa.Table.from_pylist([dict(zip(SCHEMA.names, r, strict=True)) for r in full], schema=SCHEMA)


def empty():
    return SCHEMA.empty_table()


def commit(t, remove=(), add=(), data_change=True, cdc=None, operation="WRITE"):
    """Commit a copy-on-write change: retire files `remove`, write each table of `add`.

    `cdc` (rows with `_change_type`) is written as a change data file, as a
    merge or delete with the change data feed would.
    """
    t.refresh()
    actions = [a.remove(int(time.time() * 1000), data_change) for a in remove]
    for data in add:
        actions += write_data_files(t.storage, data, t.partition_by, data_change=data_change,
                                    mapping=t.snapshot().column_mapping)
    if cdc is not None:
        actions += write_cdc(t, cdc)
    return t.transaction(operation).add(*actions).commit().version


def write_cdc(t, cdc):
    """Change data files as Spark lays them out: one per partition, partition columns in the log."""
    parts = sorted(set(cdc["part"].to_pylist()), key=str) if t.partition_by else [None]
    out = []
    for value in parts:
        chunk = cdc
        if t.partition_by:
            chunk = cdc.filter(pc.field("part").is_null() if value is None
                               else pc.field("part") == value).drop_columns(["part"])
        buf = io.BytesIO()
        pq.write_table(chunk, buf)
        path = f"_change_data/cdc-{uuid.uuid4()}.snappy.parquet"
        t.storage.write(path, buf.getvalue())
        out.append(Cdc(path, {"part": value} if t.partition_by else {}, len(buf.getvalue())))
    return out


def files(t, version=None):
    return [f.add for f in t.snapshot(version=version).files]


def as_rows(table):
    names = sorted(c for c in table.column_names if c not in META)
    return Counter(tuple(r.values()) for r in table.select(names).to_pylist())


def snapshot_rows(t, version):
    """Rows at `version`; -1 is the empty table before version 0."""
    return Counter() if version == -1 else as_rows(t.snapshot(version=version).to_arrow())


def check_diff_law(t, v1, v2, d):
    """Snapshot(v1) + added - removed == Snapshot(v2), as multisets."""
    before, after = snapshot_rows(t, v1), snapshot_rows(t, v2)
    added, removed = as_rows(d.added), as_rows(d.removed)
    assert not (removed - before), "removed rows that were not there"
    assert before - removed + added == after


# ---- consolidation ------------------------------------------------------------------------


def test_appends_and_reverse(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    v1 = t.append(rows((1, "a"), (2, "b")))
    v2 = t.append(rows((3, "c")))
    d = t.diff(v1)
    assert (d.from_version, d.to_version) == (1, 2)
    assert_table_equal(d.added, rows((3, "c")))
    assert d.removed.num_rows == 0
    assert d.summary.files_read == 1 and d.summary.commits == 1
    (new,) = [a for a in files(t) if a.path not in {f.path for f in files(t, v1)}]
    assert d.summary.bytes_read == new.size
    back = t.diff(v2, v1)
    assert_table_equal(back.removed, rows((3, "c")))
    assert back.added.num_rows == 0
    assert_table_equal(t.diff(0, v2).added, rows((1, "a"), (2, "b"), (3, "c")))
    same = t.diff(v2, v2)
    assert same.added.num_rows == same.removed.num_rows == same.summary.files_read == 0
    assert same.added.schema == SCHEMA


def test_instants_pick_versions(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    t.append(rows((2, "b")))
    stamps = {c.version: c.timestamp for c in t.history()}
    d = t.diff(stamps[1], stamps[2].isoformat())
    assert (d.from_version, d.to_version) == (1, 2)
    assert_table_equal(d.added, rows((2, "b")))
    with pytest.raises(lf.VersionNotFoundError):
        t.diff(stamps[0] - dt.timedelta(days=1))


def test_rewrite_without_change_is_no_change(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a"), (2, "b")))
    t.append(rows((3, "c")))
    data = t.snapshot().to_arrow()
    v_rewrite = commit(t, remove=files(t), add=[data], operation="MERGE")
    d = t.diff(2, v_rewrite)
    assert d.added.num_rows == d.removed.num_rows == 0
    assert d.summary.files_read == 3  # a rewrite flagged as a data change must be read
    v_compact = commit(t, remove=files(t), add=[data], data_change=False, operation="OPTIMIZE")
    d = t.diff(v_rewrite, v_compact)
    assert d.added.num_rows == d.removed.num_rows == 0
    assert d.summary.files_read == 0  # dataChange=false: nothing to read
    assert_table_equal(t.diff(0, v_compact).added, data)


def test_inserted_then_deleted_inside_range_is_never_read(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    t.append(rows((2, "b")))
    last = files(t, 2)
    gone = [a for a in last if a.path not in {f.path for f in files(t, 1)}]
    v3 = commit(t, remove=gone, operation="DELETE")
    d = t.diff(1, v3)
    assert d.added.num_rows == d.removed.num_rows == 0
    assert (d.summary.files_read, d.summary.files_skipped) == (0, 1)
    d = t.diff(0, v3)
    assert_table_equal(d.added, rows((1, "a")))
    assert d.summary.files_read == 1


def test_removed_and_readded_path_cancels_unread(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    (f,) = files(t)
    v2 = commit(t, remove=[f])
    v3 = t.transaction("RESTORE").add(f).commit().version
    assert t.diff(v2, v3).added.num_rows == 1
    d = t.diff(1, v3)
    assert d.added.num_rows == d.removed.num_rows == d.summary.files_read == 0
    assert d.summary.files_skipped == 1


def test_duplicate_rows_keep_multiplicity(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a"), (1, "a"), (2, "b")))
    v2 = commit(t, remove=files(t), add=[rows((1, "a"), (2, "b"))], operation="DELETE")
    d = t.diff(1, v2)
    assert_table_equal(d.removed, rows((1, "a")))
    assert d.added.num_rows == 0
    assert_table_equal(t.diff(v2, 0).removed, rows((1, "a"), (2, "b")))
    assert_table_equal(t.diff(0, 1).added, rows((1, "a"), (1, "a"), (2, "b")))


def test_to_arrow_and_polars(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a"), (2, "b")))
    v2 = commit(t, remove=files(t), add=[rows((1, "a"), (3, "c"))])
    out = t.diff(1, v2).to_arrow()
    assert out.column_names == [*SCHEMA.names, *META]
    assert out.schema.field("_commit_version").type == pa.int64()
    assert out.schema.field("_commit_timestamp").type == pa.timestamp("ms", tz="UTC")
    got = sorted(zip(out["id"].to_pylist(), out["_change_type"].to_pylist(), strict=True))
    assert got == [(2, "delete"), (3, "insert")]
    assert set(out["_commit_version"].to_pylist()) == {v2}
    assert out["_commit_timestamp"][0].as_py() == t.history(limit=1)[0].timestamp
    frame = t.diff(1, v2).to_polars()
    assert isinstance(frame, pl.DataFrame) and frame.height == 2


def test_commit_version_is_the_last_change_in_range(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    t.append(rows((2, "b")))
    v3 = t.append(rows((3, "c")))
    out = t.diff(0, v3).to_arrow()
    assert dict(zip(out["id"].to_pylist(), out["_commit_version"].to_pylist(), strict=True)) == {1: 1, 2: 2, 3: 3}


def test_diff_is_immutable(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    d = t.diff(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.added = empty()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.summary.inserted = 5  # type: ignore[misc]


def test_partitioned_table(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"])
    t.append(rows((1, "a", "x"), (2, "b", "y"), (3, "c", None)))
    old = [f for f in files(t) if f.partition_values["part"] == "y"]
    v2 = commit(t, remove=old, add=[rows((2, "B", "y"))])
    d = t.diff(1, v2)
    assert_table_equal(d.removed, rows((2, "b", "y")))
    assert_table_equal(d.added, rows((2, "B", "y")))
    assert_table_equal(t.diff(v2, -1).removed, rows((1, "a", "x"), (2, "B", "y"), (3, "c", None)))


def test_schema_change_compares_on_union_schema(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    v2 = t.append(rows((2, "b")).append_column("score", pa.array([1.5])), schema_mode="merge")
    d = t.diff(0, v2)
    assert d.schema.names == [*SCHEMA.names, "score"]
    got = sorted(d.added.select(["id", "score"]).to_pylist(), key=lambda r: r["id"])
    assert got == [{"id": 1, "score": None}, {"id": 2, "score": 1.5}]
    assert d.removed.schema == d.added.schema
    # The columns of the range's newest schema even when it is the older end.
    assert t.diff(v2, 1).removed.column("score").to_pylist() == [1.5]


def test_columns_restrict_the_comparison(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a"), (2, "b")))
    v2 = commit(t, remove=files(t), add=[rows((1, "a"), (2, "renamed"))])
    assert t.diff(1, v2, columns=["id"]).added.num_rows == 0
    d = t.diff(1, v2, columns="name")
    assert d.added.column_names == ["name"]
    assert d.added.column("name").to_pylist() == ["renamed"]
    keyed = t.diff(1, v2, key="id", columns=["name"])
    assert keyed.updated.column_names == ["id", "name_old", "name_new", "_changed_columns"]


# ---- keyed diffs --------------------------------------------------------------------------


def test_keyed_diff_pairs_updates(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows((1, "a"), (2, "b"), (3, "c", "z"), (5, "e")))
    v2 = commit(t, remove=files(t), add=[rows((1, "a"), (2, "B"), (4, "d"), (5, "e", "q"))],
                operation="MERGE")
    d = t.diff(1, v2)
    assert d.key == ("id",)
    assert_table_equal(d.inserted, rows((4, "d")))
    assert_table_equal(d.deleted, rows((3, "c", "z")))
    assert d.updated.to_pylist() == [
        {"id": 2, "name_old": "b", "name_new": "B", "part_old": "a", "part_new": "a",
         "_changed_columns": ["name"]},
        {"id": 5, "name_old": "e", "name_new": "e", "part_old": "a", "part_new": "q",
         "_changed_columns": ["part"]},
    ]
    assert (d.summary.inserted, d.summary.deleted, d.summary.updated) == (1, 1, 2)
    out = d.to_arrow()
    assert list(zip(out["id"].to_pylist(), out["_change_type"].to_pylist(), strict=True)) == [
        (2, "update_preimage"), (2, "update_postimage"), (3, "delete"), (4, "insert"),
        (5, "update_preimage"), (5, "update_postimage")]
    # The reverse diff swaps the sides.
    back = t.diff(v2, 1)
    assert_table_equal(back.inserted, rows((3, "c", "z")))
    assert back.updated.column("name_new").to_pylist() == ["b", "e"]
    # key=() turns pairing off even when the table declares a key.
    plain = t.diff(1, v2, key=())
    assert plain.key == () and plain.added.num_rows == 3
    assert set(plain.to_arrow()["_change_type"].to_pylist()) == {"insert", "delete"}
    with pytest.raises(lf.InvalidArgumentError, match="key"):
        _ = plain.updated


def test_keyed_diff_with_null_key_and_composite_key(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, None, "x"), (1, "n", "y")))
    v2 = commit(t, remove=files(t), add=[rows((2, None, "x"), (1, "n", "y"))])
    d = t.diff(1, v2, key=["name", "part"])
    assert d.updated.to_pylist() == [{"name": None, "part": "x", "id_old": 1, "id_new": 2,
                                      "_changed_columns": ["id"]}]
    assert d.inserted.num_rows == d.deleted.num_rows == 0


def test_keyed_diff_with_nan_null_values_and_composite_keys_in_key_order(table_uri):
    """NaN equals NaN and null equals null in the values; changes come ordered by key, nulls last."""
    schema = pa.schema([("k1", pa.string()), ("k2", pa.int64()), ("x", pa.float64()),
                        ("tag", pa.string())])
    nan = float("nan")

    def table(*items):
        return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in items],
                                    schema=schema)

    t = lf.Table.create(table_uri, schema)
    v1 = t.append(table(("b", 1, nan, None), ("b", None, 1.0, "u"), ("a", 2, None, "v"),
                        (None, 1, nan, "w"), ("a", 1, 2.0, None), ("c", 3, 0.5, "gone")))
    v2 = t.overwrite(table(("b", 1, nan, None), ("b", None, nan, "u"), ("a", 2, None, "V"),
                           (None, 1, 3.0, "w"), ("a", 1, 2.0, None), ("c", 4, 0.5, "new")))
    d = t.diff(v1, v2, key=["k1", "k2"])
    # (b, 1) and (a, 1) are unchanged (NaN and null compare equal) and drop out.
    assert d.updated.select(["k1", "k2", "_changed_columns"]).to_pylist() == [
        {"k1": "a", "k2": 2, "_changed_columns": ["tag"]},
        {"k1": "b", "k2": None, "_changed_columns": ["x"]},
        {"k1": None, "k2": 1, "_changed_columns": ["x"]},
    ]
    assert [pc.is_nan(d.updated[c]).to_pylist() for c in ("x_old", "x_new")] == [
        [None, False, True], [None, True, False]]
    out = d.to_arrow()
    assert list(zip(out["k1"].to_pylist(), out["k2"].to_pylist(), out["_change_type"].to_pylist(),
                    strict=True)) == [
        ("a", 2, "update_preimage"), ("a", 2, "update_postimage"),
        ("b", None, "update_preimage"), ("b", None, "update_postimage"),
        ("c", 3, "delete"), ("c", 4, "insert"),
        (None, 1, "update_preimage"), (None, 1, "update_postimage"),
    ]
    # The updated table lines old and new values up with the pre- and postimages.
    pre = out.filter(pc.field("_change_type") == "update_preimage")
    post = out.filter(pc.field("_change_type") == "update_postimage")
    assert d.updated["tag_old"].to_pylist() == pre["tag"].to_pylist() == ["v", "u", "w"]
    assert d.updated["tag_new"].to_pylist() == post["tag"].to_pylist() == ["V", "u", "w"]
    assert (d.summary.inserted, d.summary.deleted, d.summary.updated) == (1, 1, 3)


def test_keyed_diff_names_the_changed_columns_of_every_type(table_uri):
    """One update per column type changes that column only; NaN to NaN and null to null do not."""
    decimal, ts = pa.decimal128(9, 2), pa.timestamp("us", tz="UTC")
    new_year = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    columns = {
        "i": (pa.int32(), 1, 2), "f": (pa.float64(), 1.5, float("nan")), "b": (pa.bool_(), True, False),
        "s": (pa.string(), "x", "y"), "bin": (pa.binary(), b"x", b"y"),
        "dec": (decimal, Decimal("1.00"), Decimal("2.00")), "ts": (ts, new_year, None),
        "d": (pa.date32(), dt.date(2024, 1, 1), dt.date(2024, 1, 2)),
        "l": (pa.list_(pa.int64()), [1, None], [1, 2]),
        "st": (pa.struct([("a", pa.int64())]), {"a": 1}, {"a": None}),
    }
    schema = pa.schema([("id", pa.int64()), *((c, t) for c, (t, _, _) in columns.items())])
    base = {c: before for c, (_, before, _) in columns.items()}
    same = {**base, "f": float("nan"), "ts": None}  # NaN and null: unchanged when kept

    def table(items):
        return pa.Table.from_pylist(items, schema=schema)

    old = [{"id": n, **same} for n in range(len(columns))]
    new = [{**row, c: columns[c][2]} for row, c in zip(old, columns, strict=True)]
    # Row n changes column n only; f goes NaN -> 1.5 and ts null -> a value.
    new[1]["f"], new[6]["ts"] = 1.5, new_year
    t = lf.Table.create(table_uri, schema)
    v1 = t.append(table([*old, {"id": 99, **same}]))
    v2 = t.overwrite(table([*new, {"id": 99, **same}]))
    d = t.diff(v1, v2, key="id")
    assert d.updated["_changed_columns"].to_pylist() == [[c] for c in columns]
    assert d.updated["id"].to_pylist() == list(range(len(columns)))


def test_duplicate_key_on_either_side_names_its_version(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    v1 = t.append(rows((1, "a"), (2, None), (3, None)))
    v2 = t.overwrite(rows((1, "b"), (2, "c"), (3, "c")))
    with pytest.raises(lf.DuplicateKeyError, match=rf"\{{'name': None\}} appears 2 times .* {v1},"):
        t.diff(v1, v2, key="name")
    with pytest.raises(lf.DuplicateKeyError, match=rf"\{{'name': 'c'\}} appears 2 times .* {v2},"):
        t.diff(0, v2, key="name")


def test_duplicate_key_is_a_clear_error(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a"), (2, "a")))
    with pytest.raises(lf.DuplicateKeyError, match=r"\{'name': 'a'\} appears 2 times") as e:
        t.diff(0, key="name")
    assert isinstance(e.value, lf.SchemaMismatchError)
    assert "key=()" in str(e.value)


# ---- bad input ----------------------------------------------------------------------------


def test_bad_input_is_refused_before_reading(table_uri):
    lf.Table.create(table_uri, SCHEMA).append(rows((1, "a")))
    # A data read fails with a StorageError, which none of the checks below expects.
    t, _ = faulty_table(table_uri, Fault("read", path="part-", times=None))
    with pytest.raises(lf.VersionNotFoundError, match=r"versions 0\.\.1"):
        t.diff(0, 7)
    with pytest.raises(lf.VersionNotFoundError):
        t.diff(-2)
    with pytest.raises(lf.SchemaMismatchError, match="unknown"):
        t.diff(0, key=["nope"])
    with pytest.raises(lf.SchemaMismatchError, match="unknown"):
        t.diff(0, columns=["id", "nope"])
    with pytest.raises(lf.InvalidArgumentError):
        t.diff(0, columns=[])
    with pytest.raises(lf.InvalidArgumentError, match="version number"):
        t.diff(1.5)
    with pytest.raises(lf.InvalidArgumentError, match="version number"):
        t.diff(True)
    with pytest.raises(lf.InvalidArgumentError, match="swap"):
        t.changes(1, 0)
    with pytest.raises(lf.VersionNotFoundError):
        t.changes(0, 9)
    assert t.diff(1, 1).added.num_rows == 0  # an empty range reads nothing


def test_key_name_clash_in_updated_is_refused(table_uri):
    schema = pa.schema([("a", pa.int64()), ("a_old", pa.int64())])
    t = lf.Table.create(table_uri, schema)
    t.append(pa.table({"a": [1], "a_old": [2]}, schema=schema))
    with pytest.raises(lf.SchemaMismatchError, match="a_old"):
        t.diff(0, key="a_old")


def test_damaged_deletion_vector_is_a_corrupt_log(table_uri):
    # Diffs over deletion vectors: tests/test_reader_features.py.
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    (f,) = files(t)
    dv = dataclasses.replace(f, deletion_vector={"storageType": "i", "pathOrInlineDv": "x",
                                                  "sizeInBytes": 1, "cardinality": 1})
    v2 = t.transaction("DELETE").add(f.remove(0), dv).commit().version
    with pytest.raises(lf.CorruptLogError, match="not Z85"):
        t.diff(1, v2)


def test_cleaned_up_log_is_version_not_found(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    t.append(rows((2, "b")))
    t.checkpoint()
    t.storage.delete("_delta_log/00000000000000000001.json")
    t.storage.delete("_delta_log/00000000000000000000.json")
    fresh = lf.Table(table_uri)
    with pytest.raises(lf.VersionNotFoundError):
        fresh.diff(0, 2)
    with pytest.raises(lf.VersionNotFoundError):
        fresh.diff(-1, 2)
    assert fresh.diff(2, 2).added.num_rows == 0


# ---- change data files and per-commit changes ---------------------------------------------


def cdc_rows(*items):
    """Change rows from (id, name, part, change_type) tuples."""
    schema = SCHEMA.append(pa.field("_change_type", pa.string()))
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in items], schema=schema)


def test_cdc_files_replace_reading_whole_files(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows(*[(i, f"n{i}") for i in range(50)]))
    (old,) = files(t)
    after = rows(*[(i, "new" if i == 7 else f"n{i}") for i in range(49)])
    change = cdc_rows((7, "n7", "a", "update_preimage"), (7, "new", "a", "update_postimage"),
                      (49, "n49", "a", "delete"))
    v2 = commit(t, remove=[old], add=[after], cdc=change, operation="MERGE")
    d = t.diff(1, v2)
    assert d.summary.files_read == 1  # only the change data file, not the 50-row files
    (cdc_action,) = [a for a in t.snapshot().log.read_commit(v2) if isinstance(a, Cdc)]
    assert d.summary.bytes_read == cdc_action.size
    assert d.updated.to_pylist() == [{"id": 7, "name_old": "n7", "name_new": "new",
                                      "part_old": "a", "part_new": "a",
                                      "_changed_columns": ["name"]}]
    assert_table_equal(d.deleted, rows((49, "n49")))
    (c,) = list(t.changes(1, v2))
    assert (c.version, c.operation, c.files_read) == (v2, "MERGE", 1)
    assert sorted(c.rows["_change_type"].to_pylist()) == ["delete", "update_postimage",
                                                          "update_preimage"]
    check_diff_law(t, 0, v2, t.diff(0, v2, key=()))


def test_lakeflow_merge_and_delete(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows(*[(i, f"n{i}") for i in range(20)]))
    t.merge(rows((3, "new"), (40, "x")))
    t.delete(pc.field("id") == 5)
    d = t.diff(1)
    assert d.updated.select(["id", "name_old", "name_new"]).to_pylist() == [
        {"id": 3, "name_old": "n3", "name_new": "new"}]
    assert d.inserted["id"].to_pylist() == [40] and d.deleted["id"].to_pylist() == [5]
    for v in (2, 3):
        cdc = [a for a in t.snapshot().log.read_commit(v) if isinstance(a, Cdc)]
        if cdc:  # the change data files alone are read
            summary = t.diff(v - 1, v).summary
            assert (summary.files_read, summary.bytes_read) == (len(cdc), sum(a.size for a in cdc))
    for v1 in range(4):
        check_diff_law(t, v1, 3, t.diff(v1, 3, key=()))


def test_unknown_change_type_is_corrupt(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    v1 = commit(t, cdc=cdc_rows((1, "a", "a", "upsert")), operation="MERGE")
    with pytest.raises(lf.CorruptLogError, match="upsert"):
        t.diff(0, v1)


def test_changes_per_commit_sum_to_the_diff(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a"), (2, "b")))
    t.append(rows((3, "c")))
    v3 = commit(t, remove=files(t, 1), add=[rows((1, "a"))], operation="DELETE")
    commit(t, remove=files(t), add=[t.snapshot().to_arrow()], data_change=False,
           operation="OPTIMIZE")
    got = list(t.changes(-1))
    assert [c.version for c in got] == [0, 1, 2, 3, 4]
    assert [c.operation for c in got] == ["CREATE TABLE", "WRITE", "WRITE", "DELETE", "OPTIMIZE"]
    assert [c.rows.num_rows for c in got] == [0, 2, 1, 3, 0]
    assert got[3].rows.column_names == [*SCHEMA.names, *META]
    changed = got[3].rows.select(["id", "_change_type"]).to_pylist()
    assert Counter(tuple(r.values()) for r in changed) == Counter(
        {(1, "delete"): 1, (2, "delete"): 1, (1, "insert"): 1})
    assert got[3].timestamp == t.history()[1].timestamp
    weights = Counter()
    for c in got:
        for r in c.rows.to_pylist():
            weights[(r["id"], r["name"], r["part"])] += 1 if r["_change_type"] == "insert" else -1
    assert +weights == as_rows(t.diff(-1, v3).added)


def test_changes_are_lazy(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows((1, "a")))
    t.append(rows((2, "b")))
    t, fs = faulty_table(table_uri)
    it = t.changes(0)

    def opened() -> list[str]:
        return sorted({path for op, path in fs.calls if op == "read" and "part-" in path})

    assert opened() == []
    next(it)
    assert len(opened()) == 1


# ---- the law, on random histories ---------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.lists(st.tuples(st.integers(0, 5), st.sampled_from("xy")),
                                          min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("delete_cdc"), st.integers(0, 5)),
    st.tuples(st.just("overwrite"), st.lists(st.tuples(st.integers(0, 5), st.sampled_from("xy")),
                                             max_size=3)),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("rewrite"), st.none()),
), min_size=1, max_size=7)


def apply(t, op, arg):
    """One random write; duplicates and partitions (part) are both in play."""
    current = files(t)
    if op == "append":
        t.append(rows(*[(i, f"n{i}", p) for i, p in arg]))
    elif op in ("delete", "delete_cdc"):
        s = t.snapshot()
        matching = s.files_matching(pc.field("id") == arg)
        hit = [f.add for f in matching]
        data = pa.concat_tables(s.read_files(matching)) if matching else s.schema.empty_table()
        keep = data.filter(pc.field("id") != arg)
        gone = data.filter(pc.field("id") == arg)
        cdc = None
        if op == "delete_cdc":
            cdc = gone.append_column("_change_type", pa.array(["delete"] * gone.num_rows))
        commit(t, remove=hit, add=[keep] if keep.num_rows else [], cdc=cdc, operation="DELETE")
    elif op == "overwrite":
        commit(t, remove=current, add=[rows(*[(i, f"n{i}", p) for i, p in arg])] if arg else [])
    elif op == "compact" and current:
        commit(t, remove=current, add=[t.snapshot().to_arrow()], data_change=False)
    elif op == "rewrite" and current:
        commit(t, remove=current, add=[t.snapshot().to_arrow()])


def test_snapshot_plus_diff_is_snapshot(table_uri, backend):
    # Every example writes a fresh table; on the S3 emulator that costs ~1 s, so fewer there.
    examples = settings.default.max_examples
    if backend == "s3":
        examples = max(5, examples // 8)

    @settings(max_examples=examples)
    @given(ops=OPS, data=st.data())
    def law(ops, data):
        t = lf.Table.create(f"{table_uri}/{uuid.uuid4().hex}", SCHEMA, partition_by=["part"])
        for op, arg in ops:
            apply(t, op, arg)
        versions = st.integers(-1, t.version)
        for _ in range(3):
            v1, v2 = data.draw(versions), data.draw(versions)
            check_diff_law(t, v1, v2, t.diff(v1, v2))
            check_diff_law(t, v2, v1, t.diff(v2, v1))
        # Per-commit changes add up to the same Z-set.
        lo, hi = sorted((v1, v2))
        weights = Counter()
        for c in t.changes(lo, hi):
            for r in c.rows.select([*sorted(SCHEMA.names), "_change_type"]).to_pylist():
                sign = 1 if r.pop("_change_type") in ("insert", "update_postimage") else -1
                weights[tuple(r.values())] += sign
        d = t.diff(lo, hi)
        assert +weights == as_rows(d.added) and -weights == as_rows(d.removed)

    law()


# ---- oracles: deltalake's change data feed --------------------------------------------------


def cdf_rows(table, with_timestamp=False):
    """Comparable change rows: data columns, _change_type, _commit_version (and timestamp)."""
    table = pa.table(table)
    cols = [c for c in table.column_names if c != "_commit_timestamp" or with_timestamp]
    out = table.select(cols)
    out = out.set_column(out.schema.get_field_index("_commit_version"), "_commit_version",
                         out["_commit_version"].cast(pa.int64()))
    if with_timestamp:
        i = out.schema.get_field_index("_commit_timestamp")
        out = out.set_column(i, "_commit_timestamp",
                             out["_commit_timestamp"].cast(pa.timestamp("ms", tz="UTC")))
    return Counter(tuple(r.values()) for r in out.to_pylist())


def changes_rows(t, lo, hi, with_timestamp=False):
    return sum((cdf_rows(c.rows, with_timestamp) for c in t.changes(lo, hi)), Counter())


def test_changes_match_cdf_conformance_table():
    path = CONFORMANCE / "tables" / "cdf-table"
    t = lf.Table(str(path))
    expected = pq.read_table(CONFORMANCE / "expected" / "cdf-table" / "cdf.parquet")
    assert changes_rows(t, -1, 3) == cdf_rows(expected)
    for v in range(4):
        want = expected.filter(pc.field("_commit_version") == v)
        assert changes_rows(t, v - 1, v) == cdf_rows(want)
    for v1 in range(-1, 4):
        for v2 in range(-1, 4):
            check_diff_law(t, v1, v2, t.diff(v1, v2, key=()))
    d = t.diff(0, 3, key="id")
    assert d.summary.files_read == 13  # change data files only: 6 + 6 + 1
    assert sorted(d.updated["id"].to_pylist()) == [2, 3, 4, 5, 6]
    assert {tuple(c) for c in d.updated["_changed_columns"].to_pylist()} == {("birthday",)}
    assert d.deleted.to_pylist() == [{"id": 7, "name": "Dennis",
                                      "birthday": dt.date(2023, 12, 24)}]


def conformance_tables(kind):
    manifest = json.loads((CONFORMANCE / "manifest.json").read_text())
    return [m["name"] for m in manifest if m["expected"] == kind]


def canonical_rows(table, columns):
    """Rows as hashable reprs over `columns`; a column the table lacks reads as null."""
    rows = table.to_pylist()
    return Counter(repr(tuple(r.get(c) for c in columns)) for r in rows)


@pytest.mark.parametrize("name", conformance_tables("read"))
def test_diff_law_on_conformance_tables(name):
    """Foreign tables (Spark, old writers, checkpoints, nested types): the law at every step."""
    expected = CONFORMANCE / "expected" / name
    meta = json.loads((expected / "meta.json").read_text())
    t = lf.Table(str(CONFORMANCE / "tables" / name))
    versions = meta["versions"]
    pairs = [*itertools.pairwise(versions), (versions[0], versions[-1])]
    if versions[0] == 0:
        pairs.append((-1, versions[-1]))
    checked = 0
    for v1, v2 in pairs:
        if any(v not in meta["log_commit_files"] for v in range(v1 + 1, v2 + 1)):
            with pytest.raises(lf.VersionNotFoundError):
                t.diff(v1, v2)
            continue
        d = t.diff(v1, v2, key=())
        cols = sorted(d.schema.names)

        def at(v, cols=cols):
            if v == -1:
                return Counter()
            return canonical_rows(pq.read_table(expected / meta["data_files"][str(v)]), cols)

        before, after = at(v1), at(v2)
        removed, added = canonical_rows(d.removed, cols), canonical_rows(d.added, cols)
        assert not removed - before
        assert before - removed + added == after, (v1, v2)
        checked += 1
    assert checked


def test_removes_without_file_details_are_looked_up(table_uri):
    """Old writers' removes carry neither partition values nor size: take them from the add."""
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"])
    t.append(rows((1, "a", "x"), (2, "b", "y")))
    (old,) = [f for f in files(t) if f.partition_values["part"] == "y"]
    bare = Remove(path=old.path, deletion_timestamp=0, data_change=True)
    v2 = t.transaction("DELETE").add(bare).commit().version
    d = t.diff(1, v2)
    assert_table_equal(d.removed, rows((2, "b", "y")))
    assert d.summary.bytes_read == old.size
    (c,) = list(t.changes(1, v2))
    assert c.rows.to_pylist()[0]["part"] == "y"


def deltalake_history(path):
    """A deltalake-written CDF table changed by deltalake's merge and delete."""
    base = pa.table({"id": pa.array(range(20), pa.int64()), "v": [f"x{i}" for i in range(20)],
                     "part": ["a"] * 10 + ["b"] * 10})
    deltalake.write_deltalake(path, base, partition_by=["part"],
                              configuration={"delta.enableChangeDataFeed": "true"})
    dl = deltalake.DeltaTable(path)
    dl.delete("id = 3")
    src = pa.table({"id": pa.array([4, 15, 40], pa.int64()), "v": ["new4", "new15", "new40"],
                    "part": ["a", "b", "b"]})
    dl = deltalake.DeltaTable(path)
    (dl.merge(src, "t.id = s.id", source_alias="s", target_alias="t")
       .when_matched_update_all().when_not_matched_insert_all().execute())
    deltalake.DeltaTable(path).delete("part = 'b' and id > 17")
    deltalake.write_deltalake(path, base.slice(0, 2), mode="append")
    deltalake.DeltaTable(path).delete("id = 0")
    return deltalake.DeltaTable(path)


def test_changes_and_diff_match_deltalake_load_cdf(local_uri):
    dl = deltalake_history(local_uri)
    t = lf.Table(local_uri)
    assert t.version == dl.version() == 5
    kinds = {a for v in range(6) for a in map(type, t.snapshot().log.read_commit(v))}
    assert Cdc in kinds and Add in kinds
    for v in range(6):
        want = cdf_rows(dl.load_cdf(starting_version=v, ending_version=v).read_all(), True)
        assert changes_rows(t, v - 1, v, with_timestamp=True) == want, v
    for lo in range(-1, 6):
        for hi in range(lo, 6):
            cdf = pa.table(dl.load_cdf(starting_version=lo + 1, ending_version=hi).read_all()) \
                if hi > lo else None
            weights = Counter()
            for r in ([] if cdf is None else cdf.select(["id", "v", "part", "_change_type"])
                      .to_pylist()):
                sign = 1 if r.pop("_change_type") in ("insert", "update_postimage") else -1
                weights[tuple(r.values())] += sign
            d = t.diff(lo, hi, key=())
            got_added = Counter(tuple(r.values()) for r in d.added.to_pylist())
            got_removed = Counter(tuple(r.values()) for r in d.removed.to_pylist())
            assert (got_added, got_removed) == (+weights, -weights), (lo, hi)
    d = t.diff(0, 2, key="id")
    assert d.updated.select(["id", "v_old", "v_new"]).to_pylist() == [
        {"id": 4, "v_old": "x4", "v_new": "new4"}, {"id": 15, "v_old": "x15", "v_new": "new15"}]
    assert d.inserted["id"].to_pylist() == [40] and d.deleted["id"].to_pylist() == [3]


def test_lakeflow_written_changes_match_load_cdf(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, partition_by=["part"])
    t.append(rows((1, "a", "x"), (2, "b", "y")))
    t.append(rows((3, "c", "x")))
    old = [f for f in files(t) if f.partition_values["part"] == "y"]
    commit(t, remove=old, add=[rows((2, "B", "y"))], operation="UPDATE")
    dl = deltalake.DeltaTable(local_uri)
    want = cdf_rows(dl.load_cdf(starting_version=0).read_all(), True)
    assert changes_rows(t, -1, t.version, with_timestamp=True) == want


def test_commit_info_without_operation(local_uri):
    t = lf.Table.create(local_uri, SCHEMA)
    t.append(rows((1, "a")))
    log = Path(local_uri) / "_delta_log" / "00000000000000000001.json"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    lines = [x for x in lines if "commitInfo" not in x]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (c,) = list(lf.Table(local_uri).changes(0, 1))
    assert c.operation is None and c.rows.num_rows == 1
