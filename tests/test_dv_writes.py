"""Deletion vectors written (merge-on-read): delete, merge and key replacement mark rows in a DV.

At every version lakeflow's read equals deltalake's SQL scan, diffs and change
data equal a recomputation from the versions' rows, and compaction / purge
materialize the vectors.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap64

from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.deletion_vectors import decode_bitmap_array, encode_bitmap_array
from lakeflow.testing import assert_table_equal

from helpers import commit_actions, sql_scan, stored_files

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64()), ("part", pa.string())])
DV_ON = {"delta.enableDeletionVectors": "true"}


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
    """The deletion vector descriptor of each live file that has one."""
    return {f.path: dict(f.add.deletion_vector) for f in t.snapshot().files if f.add.deletion_vector}


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
    # A second delete on the same file: the union, in a new DV file; the remove names the old DV.
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
