"""Writes to column-mapped tables (modes `name` and `id`): every write path stores physical names.

Tables are made by deltalake (`write_deltalake(..., configuration={"delta.columnMapping.mode": ...})`)
and by lakeflow itself; after each write lakeflow's read equals deltalake's SQL scan at
every version, polars reads the table, and every Parquet file lakeflow wrote holds the
physical names (and Parquet field ids) of the schema, never a logical name.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections import Counter
from pathlib import Path

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

import lakeflow as lf
from lakeflow.ops.replace import replace_keys
from lakeflow.testing import assert_table_equal, copy_table

from helpers import commit_actions, sql_scan

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64()), ("s", pa.struct([("x", pa.int64())])),
                    ("part", pa.string())])
MODES = ["name", "id"]
CORPUS_CM = Path(__file__).parent / "data" / "conformance" / "tables" / "table_with_column_mapping"


def rows(ids: range | list[int], v: int = 0, part: str = "a") -> pa.Table:
    ids = list(ids)
    return pa.table({"id": pa.array(ids, pa.int64()), "v": pa.array([v] * len(ids), pa.int64()),
                     "s": pa.array([{"x": i} for i in ids], SCHEMA.field("s").type),
                     "part": [part] * len(ids)}, schema=SCHEMA)


def deltalake_table(tmp_path: Path, uri: str, mode: str) -> lf.Table:
    """A table deltalake created with column mapping `mode` (two partitions), at `uri`."""
    src = tmp_path / f"src-{uuid.uuid4().hex}"
    write_deltalake(str(src), pa.concat_tables([rows(range(0, 10)), rows(range(10, 20), part="b")]),
                    partition_by=["part"], configuration={"delta.columnMapping.mode": mode})
    copy_table(src, uri)
    return lf.Table(uri)


def local_copy(uri: str, tmp_path: Path) -> str:
    """A local copy of the table at `uri` now, for deltalake and polars (which cannot read memory://)."""
    fs, root = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    dest = tmp_path / f"copy-{uuid.uuid4().hex}"
    for path in fs.find(root):
        rel = path[len(root.rstrip("/")) + 1:]
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(fs.cat_file(path))
    return str(dest)


def agrees_with_deltalake(t: lf.Table, tmp_path: Path) -> str:
    """At every version lakeflow's read equals deltalake's SQL scan, and so does lakeflow's polars frame.

    (polars' own `read_delta` refuses every column-mapped table, reader version 2 or 3.)
    """
    local = local_copy(t.uri, tmp_path)
    for v in range(t.version + 1):
        assert_table_equal(t.snapshot(version=v).to_arrow(), sql_scan(local, version=v), check_types=False)
    assert_table_equal(t.snapshot().to_polars().collect(), sql_scan(local), check_types=False)
    return local


def _physical(schema_string: str) -> tuple[set[str], dict[str, int]]:
    """Every physical name of the schema (any depth), and the ids by physical name."""
    names, ids = set(), {}
    stack = list(json.loads(schema_string)["fields"])
    while stack:
        f = stack.pop()
        meta = f["metadata"]
        names.add(meta["delta.columnMapping.physicalName"])
        ids[meta["delta.columnMapping.physicalName"]] = int(meta["delta.columnMapping.id"])
        if isinstance(f["type"], dict) and f["type"].get("type") == "struct":
            stack += f["type"]["fields"]
    return names, ids


def _file_fields(schema: pa.Schema) -> list[pa.Field]:
    out, stack = [], list(schema)
    while stack:
        f = stack.pop()
        out.append(f)
        if pa.types.is_struct(f.type):
            stack += [f.type.field(i) for i in range(f.type.num_fields)]
    return out


def assert_files_physical(t: lf.Table, since: int = 1) -> int:
    """Every data and change file written by commits `since`.. holds physical names (and ids); how many.

    Files re-added (restore, deletion vectors) were checked by the commit that wrote them.
    """
    checked = 0
    seen = {a["add"]["path"] for v in range(since) for a in commit_actions(t.storage, v) if "add" in a}
    for v in range(since, t.version + 1):
        snap = t.snapshot(version=v)
        names, ids = _physical(snap.metadata.schema_string)
        physical_of = {snap.column_mapping.physical_name(c) for c in snap.schema.names}
        for action in commit_actions(t.storage, v):
            kind = "add" if "add" in action else "cdc" if "cdc" in action else None
            if kind is None or action[kind]["path"] in seen:
                continue
            a = action[kind]
            seen.add(a["path"])
            assert set(a["partitionValues"]) <= physical_of, a["partitionValues"]
            stats = json.loads(a.get("stats") or "{}")
            for k in ("minValues", "maxValues", "nullCount"):
                assert set(stats.get(k, {})) <= physical_of, stats
            schema = pq.read_schema(t.storage.arrow_fs()[0].open_input_file(
                f"{t.storage.arrow_fs()[1]}/{a['path']}"))
            for f in _file_fields(schema):
                if f.name == "_change_type":
                    continue
                assert f.name in names, (f.name, a["path"])
                assert int(f.metadata[b"PARQUET:field_id"]) == ids[f.name]
            checked += 1
    return checked


def _rows(table: pa.Table, columns: list[str]) -> Counter[str]:
    return Counter(repr(tuple(r[c] for c in columns)) for r in table.select(columns).to_pylist())


def changes_agree(t: lf.Table, since: int = 1) -> None:
    """Each commit's change data (read back from the change files) is the difference of its versions."""
    for v in range(since, t.version + 1):
        columns = t.snapshot(version=v).schema.names
        before = _version_rows(t, v - 1, columns)
        after = _version_rows(t, v, columns)
        (change,) = t.changes(v - 1, v)
        kinds = change.rows.column("_change_type").to_pylist()
        added = change.rows.filter(pa.array([k in ("insert", "update_postimage") for k in kinds], pa.bool_()))
        gone = change.rows.filter(pa.array([k in ("delete", "update_preimage") for k in kinds], pa.bool_()))
        assert after - before == _rows(added, columns) - _rows(gone, columns), v
        assert before - after == _rows(gone, columns) - _rows(added, columns), v


def _version_rows(t: lf.Table, v: int, columns: list[str]) -> Counter[str]:
    table = t.snapshot(version=v).to_arrow()
    for c in columns:
        if c not in table.column_names:
            table = table.append_column(c, pa.nulls(table.num_rows))
    return _rows(table, columns)


# ---- every write path ----------------------------------------------------------------------


def _ops(t: lf.Table) -> list:
    return [
        lambda: t.append(rows(range(20, 25), v=1)),
        lambda: t.append(pa.table({"id": pa.array([30], pa.int64()), "note": ["new"]}), schema_mode="merge"),
        lambda: t.merge(pa.table({"id": pa.array([1, 40], pa.int64()), "v": pa.array([7, 7], pa.int64()),
                                  "part": ["a", "c"]}), on="id",
                        when_matched={"v": pl.col("source.v")}),
        lambda: t.delete(pc.field("id") == 2),
        lambda: t.update("id = 3", set={"v": "v + 100"}),
        lambda: t.overwrite(rows([4, 5], v=9), where=pc.field("id").isin([4, 5])),
        lambda: t.compact(),
        lambda: t.add_columns([pa.field("extra", pa.int32())]),
        lambda: t.append(pa.table({"id": pa.array([50], pa.int64()), "extra": pa.array([5], pa.int32())})),
        lambda: t.restore(3),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_every_write_to_a_deltalake_mapped_table_reads_like_deltalake(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    for op in _ops(t):
        op()
    assert t.version == len(_ops(t))
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) >= 8
    assert sorted(t.to_arrow()["id"].to_pylist()) == sorted(t.snapshot(version=3).to_arrow()["id"].to_pylist())


@pytest.mark.parametrize("mode", [*MODES, "renamed"])
def test_every_write_to_a_lakeflow_mapped_table_with_change_data_reads_like_deltalake(table_uri, tmp_path, mode):
    properties = {"delta.columnMapping.mode": mode} if mode != "renamed" else {}
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"], properties=properties)
    t.append(pa.concat_tables([rows(range(0, 10)), rows(range(10, 20), part="b")]))
    if mode == "renamed":  # mapping turned on by a rename (and back) over plain files
        t.rename_column("v", "value")
        t.rename_column("value", "v")
    assert t.snapshot().column_mapping.mode == ("name" if mode == "renamed" else mode)
    first = t.version + 1
    for op in _ops(t):
        op()
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t, since=first) >= 8  # change files among them
    assert any("cdc" in a for v in range(t.version + 1) for a in commit_actions(t.storage, v))
    changes_agree(t, since=first)  # (across the renames: test_diff_across_a_rename_shows_the_newer_names)


@pytest.mark.parametrize("mode", MODES)
def test_schema_overwrite_gives_the_new_columns_new_physical_names_and_ids(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    before = t.snapshot()
    top = int(before.properties["delta.columnMapping.maxColumnId"])
    new = pa.table({"id": pa.array([1], pa.int64()), "w": ["x"], "part": ["a"]})
    t.overwrite(new, schema_mode="overwrite")
    after = t.snapshot()
    _, old_ids = _physical(before.metadata.schema_string)
    names, ids = _physical(after.metadata.schema_string)
    assert not names & set(old_ids) and min(ids.values()) > top
    assert int(after.properties["delta.columnMapping.maxColumnId"]) == max(ids.values())
    t.overwrite(pa.table({"id": pa.array([2], pa.int64()), "w": ["y"], "part": ["b"]}), schema_mode="overwrite")
    assert t.snapshot().metadata.schema_string == after.metadata.schema_string  # same columns: kept
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) == 2


@pytest.mark.parametrize("mode", MODES)
def test_add_columns_assigns_a_fresh_id_and_physical_name(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    top = int(t.properties["delta.columnMapping.maxColumnId"])
    t.add_columns([pa.field("n", pa.struct([("y", pa.string())]))])
    fields = json.loads(t.snapshot().metadata.schema_string)["fields"]
    n = fields[-1]["metadata"]
    nested = fields[-1]["type"]["fields"][0]["metadata"]
    assert n["delta.columnMapping.physicalName"].startswith("col-")
    assert {n["delta.columnMapping.id"], nested["delta.columnMapping.id"]} == {top + 1, top + 2}
    assert t.properties["delta.columnMapping.maxColumnId"] == str(top + 2)
    t.append(rows([99]).append_column("n", pa.array([{"y": "q"}])))
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) == 1


@pytest.mark.parametrize("mode", MODES)
def test_widen_column_keeps_the_mapping(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    t.add_columns([pa.field("w", pa.int32())])
    t.append(rows([90]).append_column("w", pa.array([7], pa.int32())))
    before = t.snapshot().column_mapping
    t.widen_column("w", pa.int64())  # deltalake cannot read type widening: lakeflow's own read only
    t.append(rows([91]).append_column("w", pa.array([2**40], pa.int64())))
    assert t.snapshot().column_mapping.agrees(before, t.schema.names)
    got = {r["id"]: r["w"] for r in t.to_arrow().to_pylist()}
    assert (got[90], got[91], got[0]) == (7, 2**40, None)
    assert assert_files_physical(t) == 2


@pytest.mark.parametrize("mode", MODES)
def test_pruning_on_a_mapped_table_uses_the_physical_stats(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    for i in range(4):
        t.append(rows(range(100 * (i + 1), 100 * (i + 1) + 10)))
    snap = t.snapshot()
    assert len(snap.files) == 6
    assert len(snap.files_matching(pc.field("id") >= 400)) == 1  # stats written by lakeflow
    assert len(snap.files_matching(pc.field("id") < 5)) == 1  # stats written by deltalake
    assert len(snap.files_matching("part = 'b'")) == 1
    assert sorted(snap.to_arrow(filter=pc.field("id") >= 405)["id"].to_pylist()) == list(range(405, 410))
    tasks = snap.scan_tasks(filter=pc.field("id") >= 400)
    assert sum(len(task.files) for task in tasks) == 1


@pytest.mark.parametrize("mode", MODES)
def test_keyed_appends_and_event_time_quarantine_on_a_mapped_table(table_uri, tmp_path, mode):
    schema = pa.schema([("k", pa.int64()), ("at", pa.timestamp("us", tz="UTC")), ("part", pa.string())])
    t = lf.Table.create(table_uri, schema, partition_by=["part"], key=["k"], event_time="at",
                        properties={"delta.columnMapping.mode": mode})
    day = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)

    def batch(keys: list[int], at: dt.datetime) -> pa.Table:
        return pa.table({"k": pa.array(keys, pa.int64()), "at": pa.array([at] * len(keys), schema.field("at").type),
                         "part": ["a"] * len(keys)})

    t.append(batch([1, 2], day), watermark=day)
    with pytest.raises(lf.DuplicateKeyError):  # the key index reads the physical partition values and stats
        t.append(batch([2], day + dt.timedelta(hours=1)))
    quarantine = str(tmp_path / "q")
    t.append(batch([3], day - dt.timedelta(days=2)), late="quarantine", quarantine=quarantine)
    assert lf.Table(quarantine).to_arrow()["k"].to_pylist() == [3]
    replace_keys(t.snapshot(), batch([1], day + dt.timedelta(hours=2)), ["k"], app_id="app", txn_version=1)
    assert sorted(t.to_arrow()["k"].to_pylist()) == [1, 2]
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) >= 2


@pytest.mark.parametrize("mode", MODES)
def test_staged_writes_take_the_table_mapping(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    plain = lf.write_files(table_uri, rows([70]), partition_by=t.partition_by, schema=t.schema)
    with pytest.raises(lf.SchemaMismatchError, match=r"column_mapping=table\.snapshot"):
        t.commit_files([plain])
    staged = lf.write_files(table_uri, rows([71, 72]), partition_by=t.partition_by, schema=t.schema,
                            column_mapping=t.snapshot().column_mapping)
    t.commit_files([staged])
    assert sorted(t.to_arrow()["id"].to_pylist())[-2:] == [71, 72]
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) == 1


def test_dask_appends_to_a_mapped_table(tmp_path):
    pytest.importorskip("dask")
    import dask.dataframe as dd

    from lakeflow.dask import append as dask_append

    uri = str(tmp_path / "t")
    t = deltalake_table(tmp_path, uri, "id")
    frame = rows(range(80, 90)).drop_columns(["s"]).to_pandas()
    dask_append(dd.from_pandas(frame, npartitions=2), uri)
    assert sorted(t.to_arrow()["id"].to_pylist())[-10:] == list(range(80, 90))
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) >= 2


@pytest.mark.parametrize("mode", MODES)
def test_deletion_vectors_and_purge_on_a_mapped_table(table_uri, tmp_path, mode):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"],
                        properties={"delta.columnMapping.mode": mode, "delta.enableDeletionVectors": "true"})
    t.append(rows(range(0, 50)))
    t.delete(pc.field("id") < 10)
    t.merge(rows([20, 60], v=5), on="id")
    assert any(f.deletion_vector is not None for f in t.snapshot().files)
    t.purge()
    assert all(f.deletion_vector is None for f in t.snapshot().files)
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) >= 3


def test_views_and_derived_refreshes_over_a_mapped_source(tmp_path):
    src = deltalake_table(tmp_path, str(tmp_path / "src"), "name")
    view = lf.View.create(str(tmp_path / "view"), src, group_by=["part"],
                          aggregates={"n": "count", "total": ("v", "sum")})
    src.append(rows(range(100, 105), v=2, part="b"))
    src.delete(pc.field("id") == 0)
    view.refresh()
    got = {r["part"]: (r["n"], r["total"]) for r in view.snapshot().to_pylist()}
    assert got == {"a": (9, 0), "b": (15, 10)}


def test_the_corpus_table_with_column_mapping_is_written_like_deltalake_reads_it(tmp_path):
    root = tmp_path / "cm"
    shutil.copytree(CORPUS_CM, root)
    t = lf.Table(str(root))
    names = t.schema.names
    extra = pa.table({names[0]: ["BMS", "NEW"], names[1]: ["Ann", "Bob"]})
    t.append(extra)
    t.delete(pc.field(names[1]) == "Timothy Lamb")
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t) >= 2


# ---- rename_column and drop_columns ---------------------------------------------------------


def plain_table(uri: str, **kwargs) -> lf.Table:
    t = lf.Table.create(uri, SCHEMA, partition_by=["part"], **kwargs)
    t.append(pa.concat_tables([rows(range(0, 10), v=1), rows(range(10, 20), v=2, part="b")]))
    return t


def metadata_only(t: lf.Table, version: int) -> None:
    """Commit `version` wrote no file: only metadata (and protocol)."""
    kinds = {k for a in commit_actions(t.storage, version) for k in a}
    assert kinds <= {"commitInfo", "metaData", "protocol"}, kinds


def test_rename_turns_column_mapping_on_and_rewrites_nothing(table_uri, tmp_path):
    t = plain_table(table_uri)
    files = {f.path for f in t.snapshot().files}
    v = t.rename_column("v", "value")
    metadata_only(t, v)
    snap = t.snapshot()
    assert {f.path for f in snap.files} == files
    assert snap.schema.names == ["id", "value", "s", "part"]
    assert (snap.protocol.min_reader_version, snap.protocol.min_writer_version) == (2, 5)  # as deltalake writes it
    assert snap.properties["delta.columnMapping.mode"] == "name"
    assert snap.properties["delta.columnMapping.maxColumnId"] == "5"  # id, v, s, s.x, part
    assert snap.column_mapping.physical_name("value") == "v"  # the name its files hold
    assert sorted(snap.to_arrow().select(["id", "value"]).to_pylist(), key=lambda r: r["id"])[9:11] == [
        {"id": 9, "value": 1}, {"id": 10, "value": 2}]
    t.append(rows([30], v=3).rename_columns(["id", "value", "s", "part"]))
    t.rename_column("value", "v")  # and back
    t.append(rows([31], v=4))
    assert {r["id"]: r["v"] for r in t.to_arrow().to_pylist()}[30] == 3
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t, since=2) == 2


def test_rename_on_a_table_with_features_adds_the_column_mapping_feature(table_uri, tmp_path):
    t = plain_table(table_uri, properties={"delta.enableDeletionVectors": "true"})
    t.delete(pc.field("id") == 1)
    t.rename_column("id", "key")
    p = t.snapshot().protocol
    assert (p.min_reader_version, p.min_writer_version) == (3, 7)
    assert {"columnMapping", "deletionVectors"} <= set(p.reader_features or ())
    assert {"columnMapping", "deletionVectors"} <= set(p.writer_features or ())
    t.delete(pc.field("key") == 2)  # a deletion vector on a file of physical name "id"
    assert sorted(t.to_arrow()["key"].to_pylist())[:2] == [0, 3]
    agrees_with_deltalake(t, tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_rename_a_partition_column_keeps_partition_pruning(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    t.rename_column("part", "region")
    snap = t.snapshot()
    assert snap.partition_columns == ("region",)
    assert len(snap.files_matching(pc.field("region") == "b")) == 1
    assert len(snap.files_matching(pc.field("id") >= 15)) == 1
    t.append(rows([40]).rename_columns(["id", "v", "s", "region"]))
    assert sorted(t.to_arrow(filter=pc.field("region") == "a")["id"].to_pylist()) == [*range(10), 40]
    agrees_with_deltalake(t, tmp_path)


@pytest.mark.parametrize("start", ["plain", *MODES])
def test_drop_then_add_a_column_of_the_same_name_does_not_resurrect_it(table_uri, tmp_path, start):
    t = plain_table(table_uri) if start == "plain" else deltalake_table(tmp_path, table_uri, start)
    old = t.snapshot().column_mapping.physical_name("v")
    v = t.drop_columns("v")
    metadata_only(t, v)
    assert t.schema.names == ["id", "s", "part"]
    t.add_columns([pa.field("v", pa.int64())])
    assert t.snapshot().column_mapping.physical_name("v") != old
    assert set(t.to_arrow()["v"].to_pylist()) == {None}
    t.append(rows([50], v=5))
    assert {r["id"]: r["v"] for r in t.to_arrow().to_pylist() if r["v"] is not None} == {50: 5}
    agrees_with_deltalake(t, tmp_path)


def test_drop_several_columns_and_read_old_versions(table_uri, tmp_path):
    t = plain_table(table_uri)
    t.drop_columns("v", "s")
    assert t.schema.names == ["id", "part"]
    assert t.snapshot(version=1).schema.names == SCHEMA.names  # time travel keeps them
    assert set(t.snapshot(version=1).to_arrow()["v"].to_pylist()) == {1, 2}
    agrees_with_deltalake(t, tmp_path)


def test_set_properties_turns_column_mapping_on_by_name_only(tmp_path):
    t = plain_table(str(tmp_path / "t"))
    with pytest.raises(lf.UnsupportedFeatureError, match="none -> name"):
        t.set_properties({"delta.columnMapping.mode": "id"})
    t.set_properties({"delta.columnMapping.mode": "name"})
    assert t.snapshot().column_mapping.physical_name("v") == "v"
    with pytest.raises(lf.UnsupportedFeatureError, match="none -> name"):
        t.set_properties({"delta.columnMapping.mode": "none"})
    with pytest.raises(lf.UnsupportedFeatureError, match="maxColumnId"):
        t.set_properties({"delta.columnMapping.maxColumnId": "100"})
    agrees_with_deltalake(t, tmp_path)


def _refused(t: lf.Table, error: type[Exception], match: str, op) -> None:
    before = t.version
    with pytest.raises(error, match=match):
        op()
    assert t.refresh() == before


def test_renames_and_drops_that_would_break_a_rule_are_refused_before_writing(tmp_path):
    schema = pa.schema([("k", pa.int64()), ("at", pa.timestamp("us", tz="UTC")), ("amount", pa.int64()),
                        ("note", pa.string()), ("s", pa.struct([("x", pa.int64())])), ("part", pa.string())])
    t = lf.Table.create(str(tmp_path / "t"), schema, partition_by=["part"], key=["k"], event_time="at")
    t.add_constraint("positive", "`amount` > 0")
    _refused(t, lf.UnsupportedFeatureError, "key", lambda: t.rename_column("k", "key"))
    _refused(t, lf.UnsupportedFeatureError, "key", lambda: t.drop_columns("k"))
    _refused(t, lf.UnsupportedFeatureError, "event-time", lambda: t.rename_column("at", "when"))
    _refused(t, lf.UnsupportedFeatureError, "CHECK constraint 'positive'", lambda: t.drop_columns("amount"))
    _refused(t, lf.UnsupportedFeatureError, "CHECK constraint", lambda: t.rename_column("AMOUNT", "x"))
    _refused(t, lf.UnsupportedFeatureError, "partition column", lambda: t.drop_columns("part"))
    _refused(t, lf.UnsupportedFeatureError, "not fields of a struct", lambda: t.drop_columns("s.x"))
    _refused(t, lf.SchemaMismatchError, "no field 'z'", lambda: t.rename_column("s.z", "y"))
    _refused(t, lf.SchemaMismatchError, "not a struct column", lambda: t.rename_column("note.x", "y"))
    _refused(t, lf.SchemaMismatchError, "case-insensitive", lambda: t.rename_column("note", "Amount"))
    _refused(t, lf.SchemaMismatchError, "no such column", lambda: t.drop_columns("nope"))
    _refused(t, lf.InvalidArgumentError, "distinct", lambda: t.drop_columns("note", "note"))
    _refused(t, lf.InvalidArgumentError, "non-empty", lambda: t.rename_column("note", ""))
    t.rename_column("note", "Note")  # only the case: allowed
    assert "Note" in t.schema.names


@pytest.mark.parametrize("start", ["plain", *MODES])
def test_rename_a_field_of_a_struct_column(table_uri, tmp_path, start):
    t = plain_table(table_uri) if start == "plain" else deltalake_table(tmp_path, table_uri, start)
    t.rename_column("s.x", "y")
    assert t.schema.field("s").type == pa.struct([("y", pa.int64())])
    assert {r["id"]: r["s"] for r in t.to_arrow().to_pylist()}[3] == {"y": 3}
    t.append(rows([60]).set_column(2, "s", pa.array([{"y": 61}], pa.struct([("y", pa.int64())]))))
    assert {r["id"]: r["s"] for r in t.to_arrow().to_pylist()}[60] == {"y": 61}
    assert t.diff(1 if start == "plain" else 0, t.version).schema.field("s").type == t.schema.field("s").type
    agrees_with_deltalake(t, tmp_path)
    assert assert_files_physical(t, since=2 if start == "plain" else 1) == 1
    with pytest.raises(lf.SchemaMismatchError, match="case-insensitive"):
        t.rename_column("S.Y", "y")


def test_dropping_every_data_column_is_refused(tmp_path):
    t = lf.Table.create(str(tmp_path / "t"), pa.schema([("a", pa.int64()), ("p", pa.string())]), partition_by=["p"])
    _refused(t, lf.SchemaMismatchError, "at least one column", lambda: t.drop_columns("a"))


def test_generated_columns_and_their_sources_are_not_renamed(tmp_path):
    from crafted_log import Log, field

    gen = field("double", "long")
    gen["metadata"]["delta.generationExpression"] = "`id` * 2"
    Log(tmp_path, [field("id", "long"), gen, field("other", "long")],
        {"minReaderVersion": 1, "minWriterVersion": 4})
    t = lf.Table(str(tmp_path))
    _refused(t, lf.UnsupportedFeatureError, "generated column", lambda: t.rename_column("double", "twice"))
    _refused(t, lf.UnsupportedFeatureError, "computed from it", lambda: t.drop_columns("id"))
    t.rename_column("other", "third")
    t.append(pa.table({"id": pa.array([3], pa.int64()), "third": pa.array([1], pa.int64())}))
    assert t.to_arrow().to_pylist() == [{"id": 3, "double": 6, "third": 1}]


# ---- diffs, changes and views across renames and drops -----------------------------------


def _by_id(table: pa.Table) -> dict:
    return {r["id"]: r for r in table.to_pylist()}


def test_diff_across_a_rename_shows_the_newer_names(table_uri):
    t = plain_table(table_uri)
    t.append(rows([20, 21], v=3))
    t.rename_column("v", "value")
    t.update("id = 20", set={"value": "value + 10"})
    t.drop_columns("s")
    t.append(pa.table({"id": pa.array([22], pa.int64()), "value": pa.array([4], pa.int64()), "part": ["a"]}))
    d = t.diff(1, t.version)
    assert d.schema.names == ["id", "value", "part"]  # the newest names; `s` was dropped
    assert {i: r["value"] for i, r in _by_id(d.added).items()} == {20: 13, 21: 3, 22: 4}
    assert _by_id(d.removed) == {}  # the pre-rename rows are the same rows
    keyed = t.diff(2, t.version, key="id")
    assert keyed.summary.updated == 1 and keyed.summary.inserted == 1
    before = t.snapshot(version=2).to_arrow().rename_columns(["id", "value", "s", "part"]).drop_columns(["s"])
    moved = _rows(before, d.schema.names) + _rows(t.diff(2, t.version).added, d.schema.names)
    moved.subtract(_rows(t.diff(2, t.version).removed, d.schema.names))
    assert +moved == _rows(t.to_arrow(), d.schema.names)
    for change in t.changes(1, t.version):  # every commit's change rows under the newest names
        assert {"id", "value", "part"} <= set(change.rows.column_names) and "v" not in change.rows.column_names
    (change,) = t.changes(3, 4)
    updated = change.rows
    assert sorted(zip(updated["_change_type"].to_pylist(), updated["value"].to_pylist(), strict=True)) == [
        ("update_postimage", 13), ("update_preimage", 3)]


@pytest.mark.parametrize("mode", MODES)
def test_diff_across_a_rename_of_a_deltalake_mapped_partitioned_table(table_uri, tmp_path, mode):
    t = deltalake_table(tmp_path, table_uri, mode)
    t.rename_column("part", "region")
    t.rename_column("v", "value")
    t.delete(pc.field("id") == 3)
    d = t.diff(0, t.version)
    assert d.schema.names == ["id", "value", "s", "region"]
    assert [(r["id"], r["region"]) for r in d.removed.to_pylist()] == [(3, "a")]


def test_diff_across_a_dropped_and_re_added_column_is_refused(table_uri):
    t = plain_table(table_uri)
    t.drop_columns("v")
    t.add_columns([pa.field("v", pa.int64())])
    t.append(rows([30], v=1))
    with pytest.raises(lf.UnsupportedFeatureError, match=r"column 'v' of version 0 is another column"):
        t.diff(0, t.version)
    assert t.diff(3, t.version).summary.inserted == 1  # after the change: fine


def test_view_over_a_renamed_source_refreshes_by_the_new_names_or_refuses(tmp_path):
    src = plain_table(str(tmp_path / "src"))
    view = lf.View.create(str(tmp_path / "view"), src, group_by=["part"],
                          aggregates={"n": "count", "total": ("v", "sum")})
    view.refresh()
    src.rename_column("v", "value")
    src.append(rows([30], v=5).rename_columns(["id", "value", "s", "part"]))
    before = view.table.version
    with pytest.raises(lf.SchemaMismatchError, match="'v'"):
        view.refresh()
    assert view.table.refresh() == before
    _refused(view.table, lf.UnsupportedFeatureError, "lakeflow view", lambda: view.table.rename_column("total", "t"))


def test_view_over_a_source_with_an_unrelated_rename_keeps_refreshing(tmp_path):
    src = plain_table(str(tmp_path / "src"))
    view = lf.View.create(str(tmp_path / "view"), src, group_by=["part"],
                          aggregates={"n": "count", "total": ("v", "sum")})
    view.refresh()
    src.rename_column("s", "payload")
    src.append(rows([30], v=5).rename_columns(["id", "v", "payload", "part"]))
    src.delete(pc.field("id") == 0)
    view.refresh()
    assert_table_equal(view.snapshot(), view.recompute(src.version))
    assert {r["part"]: (r["n"], r["total"]) for r in view.snapshot().to_pylist()} == {"a": (10, 14), "b": (10, 20)}


def test_cli_rename_column_and_drop_columns(tmp_path, capsys):
    from test_cli import run

    uri = str(tmp_path / "t")
    plain_table(uri)
    code, out, _ = run(capsys, "rename-column", uri, "v", "value", "--json")
    assert code == 0 and json.loads(out) == {"version": 2}
    code, out, _ = run(capsys, "drop-columns", uri, "s,value")
    assert code == 0 and "dropped s, value: version 3" in out
    assert sql_scan(uri).column_names == ["id", "part"]
    code, _, err = run(capsys, "drop-columns", uri, "part")
    assert code == 1 and "cannot drop partition column" in err
    code, _, err = run(capsys, "rename-column", uri, "id", "PART")
    assert code == 1 and "case-insensitive" in err


@pytest.mark.parametrize("start", ["renamed", "id"])
def test_deltalake_writes_after_lakeflow_and_lakeflow_reads_them(tmp_path, start):
    uri = str(tmp_path / "t")
    if start == "id":
        t = lf.Table.create(uri, SCHEMA, partition_by=["part"], properties={"delta.columnMapping.mode": "id"})
        t.append(rows(range(0, 10), v=1))
        t.rename_column("v", "value")
    else:
        t = plain_table(uri)
        t.rename_column("v", "value")
    t.checkpoint()
    write_deltalake(uri, rows([70], v=7).rename_columns(["id", "value", "s", "part"]), mode="append")
    t.append(rows([71], v=8).rename_columns(["id", "value", "s", "part"]))
    assert {r["id"]: r["value"] for r in t.to_arrow().to_pylist()}.items() >= {70: 7, 71: 8, 0: 1}.items()
    agrees_with_deltalake(t, tmp_path)


def test_restore_across_a_rename_and_across_turning_mapping_on(table_uri, tmp_path):
    t = plain_table(table_uri)  # version 1: plain
    t.rename_column("v", "value")  # 2: mapping on
    t.add_columns([pa.field("extra", pa.string())])  # 3
    t.append(rows([80], v=8).rename_columns(["id", "value", "s", "part"]).append_column("extra", pa.array(["e"])))
    top = int(t.properties["delta.columnMapping.maxColumnId"])
    t.restore(2)
    assert t.schema.names == ["id", "value", "s", "part"] and 80 not in t.to_arrow()["id"].to_pylist()
    t.restore(1)  # before column mapping: the files hold the names the mapping kept
    assert t.schema.names == SCHEMA.names and t.snapshot().column_mapping.mode == "none"
    assert int(t.properties["delta.columnMapping.maxColumnId"]) == top  # ids are never reissued
    t.rename_column("s", "struct")
    assert min(_physical(t.snapshot().metadata.schema_string)[1].values()) > top
    assert sorted(t.to_arrow()["id"].to_pylist()) == list(range(20))
    agrees_with_deltalake(t, tmp_path)


def test_a_rename_racing_an_append_commits_both(tmp_path):
    from lakeflow.testing import commit_after

    uri = str(tmp_path / "t")
    t = plain_table(uri)
    other = lf.Table(uri)
    commit_after(t, lambda: other.append(rows([90], v=9)))  # lands while the rename commits
    assert t.rename_column("v", "value") == 3  # replayed on top of the append (version 2)
    assert {r["id"]: r["value"] for r in t.to_arrow().to_pylist()}[90] == 9
    agrees_with_deltalake(t, tmp_path)


def test_a_project_whose_tables_use_column_mapping_runs_and_rebuilds(tmp_path):
    from test_factory import PROJECT, day, land, project

    mapped = "{delta.columnMapping.mode: 'name'}"
    text = PROJECT.replace("    key: [id]\n", f"    key: [id]\n    properties: {mapped}\n")
    text = text.replace("    view: {group_by: [account]", f"    properties: {mapped}\n    view: {{group_by: [account]")
    p = project(tmp_path, text.replace("    sql: \"SELECT", f"    properties: {mapped}\n    sql: \"SELECT"))
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0), (2, "b", 20.0), (3, "a", 30.0)))
    p.run()
    source = p.table("payments")
    source.merge(pa.table({"id": [3], "account": ["a"], "amount": [31.0], "ts": source.to_arrow()["ts"].slice(0, 1)}))
    p.run()
    for name in ("payments", "balances", "big"):
        t = p.table(name)
        assert t.snapshot().column_mapping.mode == "name"
        assert assert_files_physical(t) >= 1
        agrees_with_deltalake(t, tmp_path)
    for name in ("balances", "big"):
        assert p.rebuild(name, verify=True).differences == 0
    assert {r["account"]: r["balance"] for r in p.table("balances").to_arrow().to_pylist()} == {"a": 36.0, "b": 20.0}
