"""Deletion vectors written (merge-on-read): delete, merge and key replacement mark rows in a DV.

At every version lakeflow's read equals deltalake's SQL scan, diffs and change
data equal a recomputation from the versions' rows, and compaction / purge
materialize the vectors.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule
from pyroaring import BitMap64
from test_model import TableModel
from test_reader_features import WRITES

import lakeflow as lf
from lakeflow import deletion_vectors
from lakeflow.deletion_vectors import decode_bitmap_array, encode_bitmap_array
from lakeflow.testing import assert_table_equal, commit_after

from helpers import commit_actions, sql_scan, stored_files

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64()), ("part", pa.string())])
DV_ON = {"delta.enableDeletionVectors": "true"}
CORPUS_DV = Path(__file__).parent / "data" / "conformance" / "tables" / "table-with-dv-small"  # Spark wrote it


def rows(ids: range | list[int], v: int = 0, part: str = "a") -> pa.Table:
    ids = list(ids)
    return pa.table({"id": pa.array(ids, pa.int64()), "v": pa.array([v] * len(ids), pa.int64()),
                     "part": [part] * len(ids)}, schema=SCHEMA)


def among(ids: range | list[int]) -> pc.Expression:
    return pc.field("id").isin(pa.array(list(ids), pa.int64()))


def dv_table(uri: str, **kwargs) -> lf.Table:
    t = lf.Table.create(uri, SCHEMA, properties=DV_ON, **kwargs)
    t.append(rows(range(0, 100)))
    t.append(rows(range(100, 200), part="b"))
    return t


def dv_files(t: lf.Table) -> dict[str, dict]:
    """The deletion vector descriptor of each live file that has one (fields that are set)."""
    return {f.path: {k: v for k, v in f.add.deletion_vector.items() if v is not None}
            for f in t.snapshot().files if f.add.deletion_vector}


@pytest.fixture
def dvs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deletion vector in a DV file, however small (for the tests about DV files)."""
    monkeypatch.setattr(deletion_vectors, "INLINE_MAX_BYTES", 0)


def agrees_with_deltalake(t: lf.Table, uri: str) -> None:
    """At every version, lakeflow's read equals deltalake's SQL scan."""
    for v in range(t.version + 1):
        assert_table_equal(t.snapshot(version=v).to_arrow(), sql_scan(uri, version=v), check_types=False)


def agrees_with_recomputation(t: lf.Table) -> None:
    """Each commit's diff and change data equal the difference of the two versions' rows."""
    for v in range(1, t.version + 1):
        before = {r["id"]: r for r in t.snapshot(version=v - 1).to_arrow().to_pylist()}
        after = {r["id"]: r for r in t.snapshot(version=v).to_arrow().to_pylist()}
        d = t.diff(v - 1, v)
        assert d.summary.inserted == len(after.keys() - before.keys()), v
        assert d.summary.deleted == len(before.keys() - after.keys()), v
        changed = sum(1 for k in after.keys() & before.keys() if after[k] != before[k])
        assert d.summary.updated == changed, v


def expected_changes(t: lf.Table, v: int) -> list[tuple[int, str, int]]:
    """The change data feed of commit v recomputed from the rows of v - 1 and v: (id, kind, v)."""
    before = {r["id"]: r for r in t.snapshot(version=v - 1).to_arrow().to_pylist()}
    after = {r["id"]: r for r in t.snapshot(version=v).to_arrow().to_pylist()}
    out = [(i, "insert", v) for i in after.keys() - before.keys()]
    out += [(i, "delete", v) for i in before.keys() - after.keys()]
    for i in after.keys() & before.keys():
        if after[i] != before[i]:
            out += [(i, "update_preimage", v), (i, "update_postimage", v)]
    return out


def change_keys(rows: pa.Table) -> list[tuple[int, str, int]]:
    return list(zip(rows["id"].to_pylist(), rows["_change_type"].to_pylist(), rows["_commit_version"].to_pylist(),
                    strict=True))


def changes_agree(t: lf.Table) -> None:
    """lakeflow's change feed of every commit equals its recomputation."""
    for c in t.changes(0, t.version):
        assert sorted(change_keys(c.rows)) == sorted(expected_changes(t, c.version)), c.version


def test_delete_marks_rows_instead_of_rewriting(table_uri):
    t = dv_table(table_uri)
    before = {f.path for f in t.snapshot().files}
    assert t.delete(among(range(0, 200, 10))) == 20
    snap = t.snapshot()
    assert {f.path for f in snap.files} == before  # no file rewritten
    assert {d["cardinality"] for d in dv_files(t).values()} == {10}
    assert sorted(snap.to_arrow()["id"].to_pylist()) == [i for i in range(200) if i % 10]
    protocol = snap.protocol
    assert "deletionVectors" in (protocol.reader_features or ()) and "deletionVectors" in protocol.writer_features
    # A second delete on the same file: the union, in a new DV; the remove names the old DV.
    first = dv_files(t)
    t.delete(pc.field("id") < 5)
    second = dv_files(t)
    assert sorted(d["cardinality"] for d in second.values()) == [10, 14]
    changed = next(p for p in second if second[p]["cardinality"] == 14)
    assert second[changed]["pathOrInlineDv"] != first[changed]["pathOrInlineDv"]
    removes = [a["remove"] for a in commit_actions(t.storage, t.version) if "remove" in a]
    assert [r["deletionVector"] for r in removes] == [first[changed]]
    assert sorted(t.to_arrow()["id"].to_pylist()) == [i for i in range(5, 200) if i % 10]
    agrees_with_recomputation(t)
    changes_agree(t)


def test_delete_with_dvs_is_read_by_deltalake_at_every_version(local_uri):
    t = dv_table(local_uri, partition_by=["part"])
    t.delete(among(range(0, 200, 7)))
    t.delete(among(range(0, 200, 3)))
    t.delete(pc.field("id") >= 150)
    t.append(rows(range(300, 310), part="b"))
    agrees_with_deltalake(t, local_uri)
    agrees_with_recomputation(t)
    changes_agree(t)


def test_merge_marks_updated_and_deleted_rows_and_writes_only_new_images(table_uri):
    t = dv_table(table_uri, key=["id"])
    before = {f.path: f.size for f in t.snapshot().files}
    source = pa.concat_tables([rows(range(10, 20), v=1), rows(range(150, 155), v=1, part="b"),
                               rows(range(500, 503), v=2)])
    result = t.merge(source, on="id")
    snap = t.snapshot()
    assert before.keys() <= {f.path for f in snap.files}  # the old files stay, with DVs
    new = [f for f in snap.files if f.path not in before]
    assert sum(f.num_records or 0 for f in new) == 18  # only the 15 new images and 3 inserts
    assert sorted(d["cardinality"] for d in dv_files(t).values()) == [5, 10]
    assert result is not None
    want = {i: 0 for i in range(200)} | {i: 1 for i in [*range(10, 20), *range(150, 155)]} | {500: 2, 501: 2, 502: 2}
    got = t.to_arrow()
    assert dict(zip(got["id"].to_pylist(), got["v"].to_pylist(), strict=True)) == want
    t.merge(rows(range(0, 15), v=3), on="id", when_matched="delete", when_not_matched="ignore")
    assert sorted(t.to_arrow()["id"].to_pylist()) == [*range(15, 200), 500, 501, 502]
    agrees_with_recomputation(t)
    changes_agree(t)


def test_merge_and_delete_on_dv_tables_read_by_deltalake(local_uri):
    t = dv_table(local_uri, key=["id"], partition_by=["part"])
    t.merge(rows(range(90, 110), v=1), on="id")
    t.delete(among(range(95, 105)))
    t.merge(rows(range(0, 200, 2), v=2), on="id", when_not_matched_by_source="delete")
    t.merge(rows(range(0, 50, 4), v=5), on="id", when_matched="delete", when_not_matched="ignore")
    agrees_with_deltalake(t, local_uri)
    agrees_with_recomputation(t)
    changes_agree(t)
    cdf = pa.table(DeltaTable(local_uri).load_cdf(starting_version=1).read_all())
    assert sorted(change_keys(cdf)) == sorted(k for v in range(1, t.version + 1) for k in expected_changes(t, v))


def test_a_spark_table_with_dvs_is_written_by_lakeflow_and_read_by_deltalake(tmp_path):
    uri = str(tmp_path / "t")
    shutil.copytree(CORPUS_DV, uri)
    t = lf.Table(uri)
    assert sorted(t.to_arrow()["value"].to_pylist()) == list(range(1, 9))
    t.delete(pc.field("value").isin([2, 5]))  # the union with Spark's DV (rows 0 and 9)
    assert [d["cardinality"] for d in dv_files(t).values()] == [4]
    t.append(pa.table({"value": pa.array([42], pa.int32())}))
    for v in range(t.version + 1):
        assert_table_equal(t.snapshot(version=v).to_arrow(), sql_scan(uri, version=v), check_types=False)
    assert sorted(sql_scan(uri)["value"].to_pylist()) == [1, 3, 4, 6, 7, 8, 42]


@pytest.mark.parametrize("write", sorted(WRITES))
def test_every_write_works_on_a_spark_dv_table(tmp_path, write):
    uri = str(tmp_path / "t")
    shutil.copytree(CORPUS_DV, uri)
    WRITES[write](lf.Table(uri))
    t = lf.Table(uri)
    assert_table_equal(t.to_arrow(), sql_scan(uri), check_types=False)


def test_deltalake_writes_on_after_lakeflow_dvs(local_uri):
    from deltalake import write_deltalake
    t = dv_table(local_uri)
    t.delete(among(range(0, 200, 3)))
    DeltaTable(local_uri).delete("id < 50")  # deltalake rewrites the file, reading lakeflow's DV
    write_deltalake(local_uri, rows(range(1000, 1005)), mode="append")
    t.delete(among(range(100, 110)))
    want = sorted(i for i in [*range(50, 200), *range(1000, 1005)] if (i % 3 or i >= 1000) and not 100 <= i < 110)
    assert sorted(t.to_arrow()["id"].to_pylist()) == want
    agrees_with_deltalake(t, local_uri)


def test_enabling_deletion_vectors_keeps_the_features(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, properties={"delta.constraints.positive": "v >= 0"})
    t.append(rows(range(10)))
    t.delete(among([1]))  # copy-on-write: no DV yet
    assert not dv_files(t)
    t.set_properties(DV_ON)
    p = t.snapshot().protocol
    assert (p.min_reader_version, p.min_writer_version) == (3, 7)
    assert list(p.reader_features or ()) == ["deletionVectors"]
    assert {"appendOnly", "invariants", "checkConstraints", "changeDataFeed", "deletionVectors"} <= set(
        p.writer_features or ())
    t.delete(among([2]))
    assert [d["cardinality"] for d in dv_files(t).values()] == [1]
    with pytest.raises(lf.ConstraintViolationError):
        t.append(rows([99], v=-1))
    # Turned off again: writes go back to copy-on-write, the existing DV stays readable.
    t.set_properties({"delta.enableDeletionVectors": "false"})
    t.delete(among([3]))
    assert not dv_files(t) and sorted(t.to_arrow()["id"].to_pylist()) == [0, 4, 5, 6, 7, 8, 9]
    changes_agree(t)


def test_compact_and_purge_materialize_deletion_vectors(table_uri):
    t = dv_table(table_uri)
    t.delete(among(range(0, 200, 2)))
    want = sorted(t.to_arrow()["id"].to_pylist())
    big = t.compact(target_file_size=1)  # every file is "large": only files with a DV are rewritten
    assert (big.files_removed, big.files_added) == (2, 2) and not dv_files(t)
    assert sorted(t.to_arrow()["id"].to_pylist()) == want
    assert t.compact(target_file_size=1).version is None
    t.delete(among(range(1, 50, 2)))
    assert t.purge().files_removed == 1 and not dv_files(t)
    assert t.purge().version is None
    assert sorted(t.to_arrow()["id"].to_pylist()) == [i for i in want if i >= 50]
    assert t.diff(t.version - 1, t.version).summary.inserted == 0  # no data change
    agrees_with_recomputation(t)


def test_vacuum_keeps_live_dv_files_and_deletes_replaced_ones(table_uri, dvs_in_files):
    t = dv_table(table_uri)
    t.delete(among(range(0, 200, 2)))
    first = {f for f in stored_files(table_uri) if f.startswith("deletion_vector_")}
    t.delete(among(range(1, 20, 2)))  # a's DV grows: a new DV file; b's stays in the first one
    live = {f.deletion_vector.file_path for f in t.snapshot().files if f.deletion_vector}
    assert len(first) == 1 and len(live) == 2 and first < live | first
    done = t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    assert not any(f.startswith("deletion_vector_") for f in done.files)  # the first file is still b's
    assert sorted(t.to_arrow()["id"].to_pylist()) == [i for i in range(21, 200, 2)]
    t.delete(among(range(101, 120, 2)))  # b's DV replaced: now nothing uses the first file
    time.sleep(0.05)  # fast commits get timestamps up to a few ms ahead of the clock
    done = t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    assert {f for f in done.files if f.startswith("deletion_vector_")} == first
    # Within the retention window the replaced DV file stays for time travel.
    t.delete(among(range(21, 30, 2)))
    assert not t.vacuum(retention=dt.timedelta(hours=1), enforce_retention=False).files
    assert sorted(t.snapshot(version=t.version - 1).to_arrow()["id"].to_pylist()) == [
        i for i in range(21, 200, 2) if not 101 <= i < 120]
    assert sorted(t.to_arrow()["id"].to_pylist()) == [i for i in range(31, 200, 2) if not 101 <= i < 120]


def test_checkpoints_carry_the_deletion_vectors(table_uri):
    t = dv_table(table_uri)
    t.delete(among(range(0, 200, 5)))
    t.checkpoint()
    fresh = lf.Table(table_uri)
    assert dv_files(fresh) == dv_files(t) and len(dv_files(t)) == 2
    assert sorted(fresh.to_arrow()["id"].to_pylist()) == [i for i in range(200) if i % 5]
    fresh.delete(among([1, 101]))
    assert sorted(d["cardinality"] for d in dv_files(lf.Table(table_uri)).values()) == [21, 21]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 70_000), st.integers(0, 2**40), st.integers(2**32 - 5, 2**32 + 5)),
                max_size=300),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**16 - 1), st.integers(1, 5000)), max_size=3))
def test_bitmap_serialization_round_trips(values, runs):
    for high, start, length in runs:  # dense stretches: bitmap and run containers
        values = [*values, *range((high << 32) + start, (high << 32) + start + length)]
    rows = np.unique(np.array(values, dtype=np.uint64))
    data = encode_bitmap_array(rows)
    assert decode_bitmap_array(data).tolist() == rows.tolist()
    assert BitMap64.deserialize(data[4:]) == BitMap64(rows.tolist())  # pyroaring reads it (after the magic)


def grouped(t: lf.Table, version: int | None = None) -> dict[str, tuple[int, int]]:
    """The view recomputed from scratch: part -> (sum of v, row count)."""
    out: dict[str, tuple[int, int]] = {}
    for r in t.snapshot(version=version).to_arrow().to_pylist():
        total, n = out.get(r["part"], (0, 0))
        out[r["part"]] = (total + r["v"], n + 1)
    return out


def test_a_view_over_a_dv_table_refreshes_by_marking_its_own_rows(table_uri, tmp_path):
    source = lf.Table.create(table_uri, SCHEMA, key=["id"], properties=DV_ON)
    source.append(pa.concat_tables([rows(range(i * 10, i * 10 + 10), v=i, part=f"p{i}") for i in range(30)]))
    view = lf.View.create(str(tmp_path / "view"), source, group_by=["part"],
                          aggregates={"total": ("v", "sum"), "n": "count"})
    view.table.set_properties(DV_ON)
    view.refresh()
    steps = [lambda: source.delete(among(range(0, 300, 7))),
             lambda: source.merge(rows(range(50, 60), v=100, part="p5"), on="id"),
             lambda: source.merge(rows([3, 4], v=9, part="p0"), on="id", when_matched="delete",
                                  when_not_matched="ignore")]
    for step in steps:
        step()
        view.refresh()
        got = {r["part"]: (r["total"], r["n"]) for r in view.snapshot().to_pylist()}
        assert got == grouped(source)
        assert view.source_version == source.version
    assert dv_files(source) and dv_files(view.table)  # both sides merge-on-read
    last = view.table.history(limit=1)[0]
    assert last.operation == "VIEW REFRESH" and last.metrics.get("numRewrittenFiles") == 1
    for v in range(source.version + 1):
        got = {r["part"]: (r["total"], r["n"]) for r in view.snapshot(source_version=v).to_pylist()}
        assert got == grouped(source, v)


class DVTableModel(TableModel):
    """The table model (tests/test_model.py) on a table with deletion vectors, plus purge and compact."""

    def __init__(self) -> None:
        super().__init__()
        self.table.set_properties(DV_ON)
        self.settle(self.current)

    @rule()
    def purge(self) -> None:
        self.table.purge()
        assert not dv_files(self.table)
        self.settle(self.current)

    @rule()
    def compact(self) -> None:
        self.table.compact()
        self.settle(self.current)


DVTableModel.TestCase.settings = settings(max_examples=60, stateful_step_count=8, deadline=None)
test_dv_table_model = DVTableModel.TestCase


def test_concurrent_dv_deletes_of_one_file_conflict_or_retry_and_keep_both(table_uri, dvs_in_files):
    t = dv_table(table_uri)
    other = lf.Table(table_uri)
    commit_after(t, lambda: other.delete(among([1, 2])))
    with pytest.raises(lf.CommitConflictError):
        t.delete(among([3]))
    commit_after(t, lambda: other.delete(among([4])))
    t.delete(among([5]), retries=2)
    assert sorted(lf.Table(table_uri).to_arrow()["id"].to_pylist()) == [0, 3, *range(6, 200)]
    assert [d["cardinality"] for d in dv_files(lf.Table(table_uri)).values()] == [4]
    assert len({f for f in stored_files(table_uri) if f.startswith("deletion_vector_")}) == 3  # the loser's went


def _engine_dv_table(uri: str) -> lf.Table:
    t = dv_table(uri, key=["id"], partition_by=["part"])
    t.merge(rows(range(90, 110), v=1), on="id")
    t.delete(among(range(0, 200, 7)))
    return t


@pytest.mark.parametrize("source", ["lakeflow", "spark"])
def test_other_engines_on_dv_tables(tmp_path, source):
    """DuckDB's delta extension reads deletion vectors; dask-deltatable ignores them (it returns the
    deleted rows) and DataFusion with deltalake's table provider fails, on Spark's DV tables as on
    lakeflow's (docs/compatibility.md)."""
    from test_engines import read_dask, read_datafusion, read_duckdb
    uri = str(tmp_path / "t")
    if source == "spark":
        shutil.copytree(CORPUS_DV, uri)
    else:
        _engine_dv_table(uri)
    ours = lf.Table(uri).to_arrow()
    assert_table_equal(read_duckdb(uri, None, {}).select(ours.column_names).cast(ours.schema), ours)
    physical = sum(f.add.num_records() or 0 for f in lf.Table(uri).snapshot().files)
    assert read_dask(uri, None, {}).num_rows == physical > ours.num_rows
    with pytest.raises(Exception, match="deletion vector"):
        read_datafusion(uri, None, {})


def test_restore_brings_back_the_deletion_vector_of_a_version(table_uri, dvs_in_files):
    t = dv_table(table_uri)
    t.delete(among(range(0, 200, 2)))
    v = t.version
    t.delete(among(range(1, 200, 4)))
    t.restore(version=v)
    assert sorted(t.to_arrow()["id"].to_pylist()) == list(range(1, 200, 2))
    agrees_with_recomputation(t)
    t.delete(among(range(3, 200, 4)))  # the data files stay; version v's DV file is replaced
    time.sleep(0.05)
    gone = t.vacuum(retention=dt.timedelta(0), enforce_retention=False).files
    assert any(f.startswith("deletion_vector_") for f in gone)
    with pytest.raises(lf.VacuumedDataError, match="deletion_vector_"):
        t.restore(version=v)


def test_update_marks_old_rows_and_writes_only_new_values(table_uri):
    t = dv_table(table_uri, key=["id"])  # keyed: diffs pair an update's pre- and postimage
    before = {f.path for f in t.snapshot().files}
    assert t.update("id < 10 OR id >= 195", set={"v": "v + 7"}) == 15
    snap = t.snapshot()
    assert before <= {f.path for f in snap.files}
    assert sum(f.num_records or 0 for f in snap.files if f.path not in before) == 15
    assert sorted(d["cardinality"] for d in dv_files(t).values()) == [5, 10]
    t.update(among(range(0, 100)), set={"v": "1"})  # every row of a file: the file goes
    got = t.to_arrow()
    assert dict(zip(got["id"].to_pylist(), got["v"].to_pylist(), strict=True)) == (
        {i: 1 for i in range(100)} | {i: 0 for i in range(100, 195)} | {i: 7 for i in range(195, 200)})
    agrees_with_recomputation(t)
    changes_agree(t)


def test_update_on_dv_tables_read_by_deltalake(local_uri):
    t = dv_table(local_uri, key=["id"], partition_by=["part"])
    t.update(among(range(0, 200, 3)), set={"v": "v + 1"})
    t.delete(among(range(0, 200, 6)))
    t.update(among(range(0, 200, 2)), set={"v": "v + 10"})
    agrees_with_deltalake(t, local_uri)
    changes_agree(t)
    cdf = pa.table(DeltaTable(local_uri).load_cdf(starting_version=1).read_all())
    assert sorted(change_keys(cdf)) == sorted(k for v in range(1, t.version + 1) for k in expected_changes(t, v))
