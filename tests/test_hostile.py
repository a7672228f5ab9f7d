"""Hostile tables: damaged data files and log fields give a typed error naming the file or field.

Each case damages a one-file table the way an adversarial run did, then runs every
operation that reads what was damaged (scans, row counts, merge, delete, diff,
changes, a view refresh): each must raise the typed error, name the culprit, and
write nothing to the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_bad_input import assert_refused

import lakeflow as lf
from lakeflow.log import commit_path
from lakeflow.testing import Fault, FaultyFileSystem

from helpers import rewrite_commit

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("part", pa.string())])
ROWS = pa.table({"id": [1, 2], "name": ["a", "b"], "part": ["a", "a"]}, schema=SCHEMA)

Operation = Callable[[str, Any], object]
OPERATIONS: dict[str, Operation] = {
    "to_arrow": lambda uri, opts: lf.Table(uri, opts).to_arrow(),
    "num_rows": lambda uri, opts: lf.Table(uri, opts).snapshot().num_rows,
    "merge": lambda uri, opts: lf.Table(uri, opts).merge(ROWS.slice(0, 1), on=["id"]),
    "delete": lambda uri, opts: lf.Table(uri, opts).delete(pc.field("id") == 1),
    "diff": lambda uri, opts: lf.Table(uri, opts).diff(0).to_arrow(),
    "changes": lambda uri, opts: list(lf.Table(uri, opts).changes(0)),
    "view refresh": lambda uri, opts: lf.View(f"{uri}-view", source=lf.Table(uri, opts)).refresh(),
}
STATS_READERS = ["to_arrow", "num_rows", "merge", "delete"]  # diffs do not use statistics


@pytest.fixture
def table(table_uri) -> lf.Table:
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"])
    t.append(ROWS)
    lf.View.create(f"{table_uri}-view", t, group_by=["part"], aggregates={"n": "count"})
    return t


def data_file(t: lf.Table) -> str:
    return t.snapshot().files[0].path


def rewrite(t: lf.Table, version: int, kind: str, change: Callable[[dict], None]) -> None:
    """Rewrite the `kind` actions of commit `version` in place."""

    def one(action: dict) -> None:
        if kind in action:
            change(action[kind])

    rewrite_commit(t.storage, version, one)


def without_stats(t: lf.Table) -> None:
    """Drop the add's stats, so a row count must read the data file's Parquet footer."""
    rewrite(t, 1, "add", lambda add: add.pop("stats"))


def assert_each_refused(t: lf.Table, operations: list[str], error: type[Exception], named: str,
                        options: Any = None) -> None:
    """Each operation raises `error` with `named` in its message, and writes nothing."""
    for name in operations:
        assert_refused(t.uri, error, lambda op=OPERATIONS[name]: op(t.uri, options), match=re.escape(named))


# ---- data files ----------------------------------------------------------------------------


def test_missing_data_file(table):
    without_stats(table)
    path = data_file(table)
    table.storage.delete(path)
    assert_each_refused(table, list(OPERATIONS), lf.DataFileNotFoundError, path)


def test_data_file_that_is_not_parquet(table):
    without_stats(table)
    path = data_file(table)
    table.storage.write(path, b"this is not a Parquet file" * 10)
    assert_each_refused(table, list(OPERATIONS), lf.CorruptLogError, path)


def test_data_file_the_store_cannot_open(table, backend, tmp_path):
    without_stats(table)
    path = data_file(table)
    options = None
    if backend == "local":  # a directory where the file should be: open() fails with EISDIR
        table.storage.delete(path)
        (tmp_path / "table" / path).mkdir()
    else:
        inner, _ = fsspec.core.url_to_fs(table.uri)
        options = {"filesystem": FaultyFileSystem(inner, [Fault("read", path=path, times=None)])}
    assert_each_refused(table, list(OPERATIONS), lf.StorageError, path, options)


def test_data_file_damaged_inside_among_several(table):
    """Pages damaged behind a valid footer: pyarrow's message names no file, the error still does."""
    before = {f.path for f in table.snapshot().files}
    n = 5000  # enough rows that the first half of the file is pages, not footer
    table.append(pa.table({"id": range(10, 10 + n), "name": ["x"] * n, "part": ["a"] * n}, schema=SCHEMA))
    path, = {f.path for f in table.snapshot().files} - before
    data = bytearray(table.storage.read(path))
    data[4:len(data) // 2] = bytes(b ^ 0x5A for b in data[4:len(data) // 2])
    table.storage.write(path, bytes(data))
    assert_each_refused(table, ["to_arrow", "diff", "changes", "view refresh"], lf.StorageError, path)


# ---- log fields ----------------------------------------------------------------------------


def deep(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def set_field(kind: str, key: str, value: Any) -> Callable[[lf.Table], None]:
    return lambda t: rewrite(t, 1 if kind != "metaData" else 0, kind,
                             lambda action: action.__setitem__(key, value))


def set_stats(stats: Any) -> Callable[[lf.Table], None]:
    return set_field("add", "stats", stats if isinstance(stats, str) else json.dumps(stats))


def set_path(change: Callable[[str], str]) -> Callable[[lf.Table], None]:
    def damage(add: dict) -> None:
        add["path"] = change(add["path"])
        add.pop("stats")  # so a row count opens the file too
    return lambda t: rewrite(t, 1, "add", damage)


def deep_commit_info(t: lf.Table) -> None:
    lines = t.storage.read(commit_path(1)).decode().splitlines()
    lines.insert(0, '{"commitInfo": {"note": ' + deep() + "}}")
    t.storage.write(commit_path(1), ("\n".join(lines) + "\n").encode())


LOG_CASES: dict[str, tuple[Callable[[lf.Table], None], type[Exception], str, list[str]]] = {
    # case: (damage, error, text the message must contain, operations that read it)
    "deep commitInfo": (deep_commit_info, lf.CorruptLogError, "00000000000000000001.json", list(OPERATIONS)),
    "deep schemaString": (set_field("metaData", "schemaString", deep()), lf.CorruptLogError,
                          "schemaString", list(OPERATIONS)),
    "deep stats": (set_stats(deep()), lf.CorruptLogError, "stats of data file part=a/", STATS_READERS),
    "numRecords lots": (set_stats({"numRecords": "lots"}), lf.CorruptLogError, "stats.numRecords",
                        STATS_READERS),
    "minValues a list": (set_stats({"numRecords": 2, "minValues": [1], "maxValues": [2],
                                    "nullCount": {"id": 0}}), lf.CorruptLogError, "stats.minValues",
                         STATS_READERS),
    "dataChange a string": (set_field("add", "dataChange", "false"), lf.CorruptLogError, "add.dataChange",
                            list(OPERATIONS)),
    "integer partition value": (set_field("add", "partitionValues", {"part": 5}), lf.CorruptLogError,
                                "add.partitionValues['part']", list(OPERATIONS)),
    "lone surrogate in path": (set_path(lambda p: p.replace(".parquet", "\udc80.parquet")),
                               lf.CorruptLogError, "\\udc80", list(OPERATIONS)),
    "trailing slash": (set_path(lambda p: p.rsplit("/", 1)[0] + "/"), lf.CorruptLogError,
                       "'part=a/', which names a directory", list(OPERATIONS)),
    "dot only": (set_path(lambda p: "."), lf.CorruptLogError, "'.', which names a directory", list(OPERATIONS)),
    "dot component": (set_path(lambda p: p.replace("part=a/", "part=a/./")), lf.CorruptLogError,
                      "names a directory", list(OPERATIONS)),
    # Decoded once (as the protocol says) it names a file that does not exist.
    "double percent-encoded": (set_path(lambda p: p.replace("part=a", "part%253Da")),
                               lf.DataFileNotFoundError, "'part%3Da/part-", list(OPERATIONS)),
    # Too long for a local file system (ENAMETOOLONG), absent on object stores.
    "very long": (set_path(lambda p: "x" * 5000 + ".parquet"), lf.StorageError, "'xxxxxxxx", list(OPERATIONS)),
}


@pytest.mark.parametrize("case", LOG_CASES)
def test_damaged_log_field(table, case):
    damage, error, named, operations = LOG_CASES[case]
    damage(table)
    assert_each_refused(table, operations, error, named)
