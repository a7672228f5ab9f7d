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
