"""Compaction, vacuum and log cleanup."""

from __future__ import annotations

import datetime as dt
import os
import time

import deltalake
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal, commit_after

from helpers import ID_PART_SCHEMA as SCHEMA
from helpers import commit_actions
from helpers import part_rows as rows

NOW = dt.timedelta(0)


def filled(uri, n=6, **kwargs):
    t = lf.Table.create(uri, SCHEMA, **kwargs)
    for i in range(n):
        t.append(rows([i], "a" if i % 2 else "b"))
    return t


def test_compact_rewrites_small_files_per_partition(table_uri):
    t = filled(table_uri, partition_by=["part"])
    before = t.snapshot().to_arrow()
    result = t.compact()
    assert (result.version, result.files_removed, result.files_added, result.rows) == (7, 6, 2, 6)
    snap = t.snapshot()
    assert len(snap.files) == 2
    assert {f.partition_values["part"] for f in snap.files} == {"a", "b"}
    assert_table_equal(snap.to_arrow(), before)
    assert t.history(limit=1)[0].operation == "OPTIMIZE"
    actions = commit_actions(t.storage, 7)
    file_actions = [a.get("add") or a.get("remove") for a in actions if "add" in a or "remove" in a]
    assert len(file_actions) == 8 and not any(a["dataChange"] for a in file_actions)
    assert t.compact().version is None  # nothing left to compact
    assert_table_equal(t.snapshot(version=6).to_arrow(), before)


def test_compact_does_not_conflict_with_a_concurrent_append(table_uri):
    t = filled(table_uri)
    commit_after(t, lambda: lf.Table(table_uri).append(rows([100])))
    assert t.compact().version == 8   # replayed on top of the append at 7
    snap = lf.Table(table_uri).snapshot()
    assert sorted(snap.to_arrow().column("id").to_pylist()) == [0, 1, 2, 3, 4, 5, 100]
    assert len(snap.files) == 2


def test_compact_conflicts_with_a_concurrent_compaction(table_uri):
    t = filled(table_uri)
    commit_after(t, lambda: lf.Table(table_uri).compact())
    with pytest.raises(lf.CommitConflictError, match="removed the file"):
        t.compact()
    assert sorted(lf.Table(table_uri).snapshot().to_arrow().column("id").to_pylist()) == list(range(6))


def test_compact_is_read_by_deltalake(local_uri):
    t = filled(local_uri, partition_by=["part"])
    t.compact()
    got = deltalake.DeltaTable(local_uri)
    assert got.version() == 7 and len(got.file_uris()) == 2
    assert_table_equal(pa.table(got.to_pyarrow_table()).cast(SCHEMA), t.snapshot().to_arrow())


def test_vacuum_deletes_only_unreachable_files(local_uri):
    t = filled(local_uri)
    before = t.snapshot().to_arrow()
    old_files = {f.path for f in t.snapshot().files}
    t.compact()
    with pytest.raises(lf.InvalidArgumentError, match="retention"):
        t.vacuum(NOW)
    orphan = os.path.join(local_uri, "part-orphan.parquet")
    with open(orphan, "wb") as f:
        f.write(b"partial")
    young_orphan = os.path.join(local_uri, "part-young.parquet")
    with open(young_orphan, "wb") as f:
        f.write(b"in flight")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    dry = t.vacuum(dt.timedelta(minutes=10), dry_run=True, enforce_retention=False)
    assert set(dry.files) == {"part-orphan.parquet"}  # tombstones are younger than 10 minutes
    assert os.path.exists(orphan)
    time.sleep(0.02)  # past the young orphan's mtime: with no retention it goes too
    done = t.vacuum(NOW, enforce_retention=False)
    assert set(done.files) == old_files | {"part-orphan.parquet", "part-young.parquet"}
    assert done.bytes > 0 and not done.dry_run
    assert not os.path.exists(orphan)
    assert_table_equal(lf.Table(local_uri).snapshot().to_arrow(), before)
    assert os.listdir(os.path.join(local_uri, "_delta_log"))
    assert t.vacuum(NOW, enforce_retention=False).files == ()


def test_vacuum_on_every_backend_keeps_the_latest_version(table_uri):
    t = filled(table_uri)
    t.compact()
    t.vacuum(NOW, enforce_retention=False)
    assert sorted(lf.Table(table_uri).snapshot().to_arrow().column("id").to_pylist()) == list(range(6))


def test_cleanup_log_keeps_a_checkpoint_for_the_oldest_version(table_uri):
    t = filled(table_uri, n=7, properties={"delta.checkpointInterval": "3"})
    time.sleep(0.02)  # fast commits get timestamps up to a few ms ahead of the clock
    deleted = t.cleanup_log(NOW)
    assert deleted == [0, 1, 2, 3, 4, 5]
    fresh = lf.Table(table_uri)
    assert fresh.version == 7 and fresh.snapshot().num_rows == 7
    assert fresh.snapshot(version=6).num_rows == 6
    with pytest.raises(lf.VersionNotFoundError, match=r"6\.\.7"):
        fresh.snapshot(version=2)
    assert [c.version for c in fresh.history()] == [7, 6]
