"""Reads that used to be silently wrong or untyped: binary partition values, column mapping
declared only as a writer feature, diffs across a change of partitioning, and diffs over
vacuumed files. Checked against deltalake's SQL scan where deltalake can read the table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import deltalake
import fsspec
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.partitions import parse_partition_value

DEVIL = "😈".encode()  # the Delta acceptance tests' binary partition value: F0 9F 98 88


def sql_scan(uri: str, version: int | None = None) -> pa.Table:
    """The oracle: deltalake's SQL scan, with plain Arrow types."""
    t = pa.table(deltalake.QueryBuilder().register("t", deltalake.DeltaTable(uri, version=version))
                 .execute("select * from t").read_all())
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


def copy_to(source: Path, uri: str) -> None:
    """Copy a local table directory to `uri` (any backend)."""
    fs, root = fsspec.core.url_to_fs(uri)
    for path in source.rglob("*"):
        if path.is_file():
            fs.makedirs(f"{root}/{path.parent.relative_to(source).as_posix()}", exist_ok=True)
            fs.pipe_file(f"{root}/{path.relative_to(source).as_posix()}", path.read_bytes())


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
    copy_to(source, table_uri)
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
