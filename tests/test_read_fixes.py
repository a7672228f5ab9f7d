"""Reads that used to be silently wrong or untyped: binary partition values, column mapping
declared only as a writer feature, diffs across a change of partitioning, and diffs over
vacuumed files. Checked against deltalake's SQL scan where deltalake can read the table."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path

import deltalake
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.partitions import parse_partition_value
from lakeflow.testing import copy_table

from helpers import ID_PART_SCHEMA as SCHEMA
from helpers import part_rows as batch
from helpers import sql_scan as deltalake_scan

DEVIL = "😈".encode()  # the Delta acceptance tests' binary partition value: F0 9F 98 88


def sql_scan(uri: str, version: int | None = None) -> pa.Table:
    """The oracle: deltalake's SQL scan, with plain Arrow types."""
    t = deltalake_scan(uri, version)
    plain = {pa.binary_view(): pa.binary(), pa.string_view(): pa.string()}
    return pa.table({n: c.cast(plain.get(c.type, c.type))
                     for n, c in zip(t.column_names, t.columns, strict=True)})


def rows_of(table: pa.Table) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True, default=repr) for r in table.to_pylist())


def log_adds(uri: str) -> list[dict]:
    """Every add action in the log, oldest first."""
    fs, root = fsspec.core.url_to_fs(uri)
    out = []
    for path in sorted(fs.glob(f"{root}/_delta_log/*.json")):
        out += [a["add"] for a in map(json.loads, fs.cat_file(path).decode().splitlines()) if "add" in a]
    return out


# ---- binary partition values ---------------------------------------------------------------


BINARY = pa.schema([("b", pa.binary()), ("x", pa.int64())])


def test_binary_partition_values_parse_as_utf8():
    assert parse_partition_value("😈", pa.binary()) == DEVIL
    assert parse_partition_value("é", pa.binary()) == b"\xc3\xa9"


def test_binary_partition_values_are_written_as_utf8(table_uri):
    t = lf.Table.create(table_uri, BINARY, partition_by=["b"])
    data = pa.table({"b": pa.array([DEVIL, "é".encode(), None], pa.binary()), "x": [1, 2, 3]})
    t.append(data)
    assert sorted(str(a["partitionValues"]["b"]) for a in log_adds(table_uri)) == ["None", "é", "😈"]
    assert rows_of(lf.Table(table_uri).to_arrow()) == rows_of(data)
    assert rows_of(t.diff(0).added) == rows_of(data)


def test_binary_partition_values_read_like_deltalake(local_uri, tmp_path):
    data = pa.table({"b": pa.array([DEVIL, "é".encode(), b"plain", None], pa.binary()), "x": [1, 2, 3, 4]})
    lf.Table.create(local_uri, BINARY, partition_by=["b"]).append(data)
    assert rows_of(sql_scan(local_uri)) == rows_of(data)
    # And lakeflow reads deltalake's own binary partitions as deltalake does.
    theirs = str(tmp_path / "theirs")
    deltalake.write_deltalake(theirs, data, partition_by=["b"])
    assert rows_of(lf.Table(theirs).to_arrow()) == rows_of(sql_scan(theirs))


@pytest.mark.parametrize("bad", [b"\xe9", b"ok\xff\xfe"])
def test_binary_partition_value_that_is_not_utf8_is_refused_before_writing(table_uri, bad):
    t = lf.Table.create(table_uri, BINARY, partition_by=["b"])
    fs, root = fsspec.core.url_to_fs(table_uri)
    before = sorted(fs.find(root))
    with pytest.raises(lf.SchemaMismatchError, match="UTF-8"):
        t.append(pa.table({"b": pa.array([b"fine", bad], pa.binary()), "x": [1, 2]}))
    assert sorted(fs.find(root)) == before
    assert lf.Table(table_uri).version == 0


# ---- diffs across a change of partitioning ---------------------------------------------------


def repartitioned(root: Path) -> list[pa.Table]:
    """deltalake overwrites: v0 by `part`, v1 re-partitioned by `name`, v2 unpartitioned."""
    versions = [
        pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"], "part": ["x", "y", "x"]}),
        pa.table({"id": pa.array([1, 2, 4], pa.int64()), "name": ["a", "b", "d"], "part": ["x", "y", "z"]}),
        pa.table({"id": pa.array([1, 4, 5], pa.int64()), "name": ["a", "d", "e"], "part": ["x", "z", "z"]}),
    ]
    deltalake.write_deltalake(str(root), versions[0], partition_by=["part"])
    deltalake.write_deltalake(str(root), versions[1], mode="overwrite", partition_by=["name"],
                              schema_mode="overwrite")
    deltalake.write_deltalake(str(root), versions[2], mode="overwrite", partition_by=[],
                              schema_mode="overwrite")
    return versions


def test_diff_across_a_change_of_partitioning(tmp_path, table_uri):
    source = tmp_path / "source"
    versions = repartitioned(source)
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    assert [t.snapshot(version=v).partition_columns for v in range(3)] == [("part",), ("name",), ()]
    snaps = {-1: Counter(), **{v: rows_of(sql_scan(str(source), v)) for v in range(3)}}
    assert snaps[2] == rows_of(versions[2])
    for lo in range(-1, 3):
        for hi in range(-1, 3):
            d = t.diff(lo, hi)
            assert snaps[lo] + rows_of(d.added) - rows_of(d.removed) == snaps[hi], (lo, hi)
            assert not rows_of(d.removed) - snaps[lo], (lo, hi)
    d = t.diff(0, 1, key="id")
    assert d.deleted.to_pylist() == [{"id": 3, "name": "c", "part": "x"}]
    assert d.inserted.to_pylist() == [{"id": 4, "name": "d", "part": "z"}]
    assert d.updated.num_rows == 0
    for commit in t.changes(0, 2):
        kinds = commit.rows.column("_change_type").to_pylist()
        body = commit.rows.select(["id", "name", "part"])
        assert rows_of(body.filter(pa.array([k == "delete" for k in kinds]))) == snaps[commit.version - 1]
        assert rows_of(body.filter(pa.array([k == "insert" for k in kinds]))) == snaps[commit.version]


# ---- diffs over vacuumed files -----------------------------------------------------------------


def compacted(uri: str) -> lf.Table:
    """v1 part a, v2 and v3 part b, v4 compacts part b (a's single file stays), then vacuum."""
    t = lf.Table.create(uri, SCHEMA, partition_by=["part"])
    t.append(batch([1, 2], "a"))
    t.append(batch([3], "b"))
    t.append(batch([4], "b"))
    assert t.compact().files_removed == 2
    # Commit times are monotonic, so a burst of commits may run a few ms ahead of the
    # clock; vacuum counts a tombstone from its commit's time, so let that time pass.
    time.sleep(0.05)
    assert len(t.vacuum(retention=dt.timedelta(0), enforce_retention=False).files) == 2
    return t


def test_diff_over_a_compaction_reads_only_files_of_its_two_ends(table_uri, backend):
    t = compacted(table_uri)
    d = t.diff(1, 4)
    assert sorted(d.added["id"].to_pylist()) == [3, 4] and d.removed.num_rows == 0
    assert (d.summary.files_read, d.summary.files_skipped) == (1, 2)  # the compacted file
    assert sorted(t.diff(4, 1).removed["id"].to_pylist()) == [3, 4]
    latest = sql_scan(table_uri) if backend == "local" else t.to_arrow()
    assert rows_of(t.diff(-1, 4).added) == rows_of(latest.select(["id", "part"]))
    assert sorted(t.diff(0, 4).added["id"].to_pylist()) == [1, 2, 3, 4]
    assert t.diff(3, 4).summary.files_read == 0  # the compaction alone is no change
    t.append(batch([5], "b"))
    assert t.diff(4, 5).added["id"].to_pylist() == [5]
    assert sorted(t.diff(1, 5).added["id"].to_pylist()) == [3, 4, 5]


def test_diff_with_compaction_and_data_change_reads_no_compacted_file(table_uri):
    # A delete after the compaction rewrites its file: the range's rows live in that file only.
    t = compacted(table_uri)
    t.delete(pc.field("id") == 3)
    d = t.diff(1, 5)
    assert d.added["id"].to_pylist() == [4] and d.removed.num_rows == 0
    (rewritten,) = [f for f in t.snapshot().files if f.partition_values == {"part": "b"}]
    assert (d.summary.files_read, d.summary.bytes_read) == (1, rewritten.size)


@pytest.mark.parametrize(("lo", "hi", "message"), [
    (2, 4, r"part=b/.*removed in version 4.*vacuumed.*versions before 4"),
    (4, 2, r"part=b/.*removed in version 4.*vacuumed.*versions before 4"),
    (2, 3, r"part=b/.*added in version 3.*vacuumed.*version 3 "),
])
def test_diff_needing_vacuumed_files_is_version_not_found(table_uri, lo, hi, message):
    t = compacted(table_uri)  # the files of versions 2 and 3 were compacted away, then vacuumed
    with pytest.raises(lf.VersionNotFoundError, match=message) as e:
        t.diff(lo, hi)
    assert "Traceback" not in str(e.value)


def test_changes_of_vacuumed_commits_are_version_not_found(table_uri):
    t = compacted(table_uri)
    feed = t.changes(1, 4)
    with pytest.raises(lf.VersionNotFoundError, match=r"part=b/.*added in version 2.*vacuumed"):
        list(feed)
    assert [c.rows.num_rows for c in t.changes(3, 4)] == [0]


def test_cli_diff_over_vacuumed_files_is_a_typed_error(tmp_path, capsys):
    uri = str(tmp_path / "t")
    compacted(uri)
    code = main(["diff", uri, "2", "4"])
    err = capsys.readouterr().err
    assert code == 1
    assert "vacuumed" in err and "Traceback" not in err and "FileNotFoundError" not in err
