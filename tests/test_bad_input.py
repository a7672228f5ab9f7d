"""Bad input is refused with a typed error before anything is written; awkward but
valid input round-trips; a damaged log is refused, never half-read.

Every refusal test checks the exact set of files under the table root before
and after: a refused call writes nothing, not even an orphan data file.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import fsspec
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.log import commit_path
from lakeflow.testing import assert_table_equal

from helpers import stored_files as files

UTC = dt.timezone.utc
SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string()),
                    ("ts", pa.timestamp("us", tz="UTC")), ("part", pa.string())])


def assert_refused(uri: str, error: type[Exception], call, match: str | None = None) -> None:
    """`call` raises `error` and leaves the files under `uri` exactly as they were."""
    before = files(uri)
    with pytest.raises(error, match=match):
        call()
    assert files(uri) == before


@pytest.fixture
def table(table_uri) -> lf.Table:
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["part"])
    t.append(good([1]))
    return t


def good(ids, part="a") -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "name": [f"n{i}" for i in ids],
                     "ts": pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC)] * len(ids),
                                    pa.timestamp("us", tz="UTC")),
                     "part": [part] * len(ids)})


def with_column(data: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return data.set_column(data.schema.get_field_index(name), name, values)


def invalid_utf8() -> pa.Array:
    """A string array whose bytes are not UTF-8 (pyarrow builds it without checking)."""
    return pa.Array.from_buffers(pa.string(), 1, [None, pa.array([0, 2], pa.int32()).buffers()[1],
                                                  pa.py_buffer(b"\xff\xfe")])


BAD_APPENDS = {
    # (error, build the bad append from a good one-row batch)
    "missing non-nullable column": (lf.SchemaMismatchError, lambda d: d.drop_columns(["id"])),
    "unknown column": (lf.SchemaMismatchError, lambda d: d.append_column("extra", pa.array([1]))),
    "column differs only by case": (lf.SchemaMismatchError, lambda d: d.rename_columns(["ID", "name", "ts", "part"])),
    "duplicate column": (lf.SchemaMismatchError, lambda d: pa.Table.from_arrays(
        [*d.columns, d.column("id")], names=[*d.column_names, "id"])),
    "string into integer": (lf.SchemaMismatchError, lambda d: with_column(d, "id", pa.array(["1"]))),
    "narrowing float into integer": (lf.SchemaMismatchError, lambda d: with_column(d, "id", pa.array([1.5]))),
    "uint64 into int64": (lf.SchemaMismatchError, lambda d: with_column(d, "id", pa.array([1], pa.uint64()))),
    "binary into string": (lf.SchemaMismatchError, lambda d: with_column(d, "name", pa.array([b"x"]))),
    "null in non-nullable column": (lf.SchemaMismatchError, lambda d: with_column(
        d, "id", pa.array([None], pa.int64()))),
    "all-null column without a type": (lf.SchemaMismatchError, lambda d: with_column(d, "id", pa.nulls(1))),
    "timestamp without time zone": (lf.SchemaMismatchError, lambda d: with_column(
        d, "ts", pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")))),
    "nanoseconds that microseconds cannot hold": (lf.SchemaMismatchError, lambda d: with_column(
        d, "ts", pa.array([1], pa.timestamp("ns", tz="UTC")))),
    "string that is not UTF-8": (lf.SchemaMismatchError, lambda d: with_column(d, "name", invalid_utf8())),
    "partition value longer than a file name": (lf.SchemaMismatchError, lambda d: with_column(
        d, "part", pa.array(["x" * 300]))),
    "not a table at all": (lf.InvalidArgumentError, lambda d: 42),
    "None": (lf.InvalidArgumentError, lambda d: None),
}


@pytest.mark.parametrize("case", BAD_APPENDS)
def test_bad_append_is_refused_before_writing(table, case):
    error, build = BAD_APPENDS[case]
    data = build(good([2]))
    assert_refused(table.uri, error, lambda: table.append(data))
    assert table.snapshot().num_rows == 1 and lf.Table(table.uri).version == 1


BAD_APPEND_ARGUMENTS = {
    "txn_version without app_id": {"txn_version": 1},
    "app_id without txn_version": {"app_id": "job"},
    "negative txn_version": {"app_id": "job", "txn_version": -1},
    "boolean txn_version": {"app_id": "job", "txn_version": True},
    "empty app_id": {"app_id": "", "txn_version": 1},
    "app_id that is not UTF-8": {"app_id": "job\udcff", "txn_version": 1},
    "metadata that is not JSON": {"metadata": {"when": dt.datetime(2024, 1, 1)}},
    "metadata that is not UTF-8": {"metadata": {"note": "caf\udce9"}},
    "metadata with a reserved key": {"metadata": {"operation": "DROP"}},
    "metadata key txnId": {"metadata": {"txnId": "mine"}},
    "unknown schema_mode": {"schema_mode": "overwrite"},
}


@pytest.mark.parametrize("case", BAD_APPEND_ARGUMENTS)
def test_bad_append_arguments_are_refused_before_writing(table, case):
    kwargs = BAD_APPEND_ARGUMENTS[case]
    assert_refused(table.uri, lf.InvalidArgumentError, lambda: table.append(good([2]), **kwargs))


BAD_CREATES = {
    "empty schema": (lf.SchemaMismatchError, lambda uri: lf.Table.create(uri, pa.schema([]))),
    "not a schema": (lf.SchemaMismatchError, lambda uri: lf.Table.create(uri, "id int")),
    "empty column name": (lf.SchemaMismatchError, lambda uri: lf.Table.create(uri, pa.schema([("", pa.int64())]))),
    "column name that is not UTF-8": (lf.SchemaMismatchError, lambda uri: lf.Table.create(
        uri, [("caf\udce9", pa.int64())])),
    "names equal but for case": (lf.SchemaMismatchError, lambda uri: lf.Table.create(
        uri, pa.schema([("a", pa.int64()), ("A", pa.int64())]))),
    "type Delta cannot store": (lf.SchemaMismatchError, lambda uri: lf.Table.create(
        uri, pa.schema([("d", pa.duration("s"))]))),
    "unknown partition column": (lf.SchemaMismatchError, lambda uri: lf.Table.create(
        uri, SCHEMA, partition_by=["nope"])),
    "every column a partition": (lf.SchemaMismatchError, lambda uri: lf.Table.create(
        uri, pa.schema([("p", pa.string())]), partition_by=["p"])),
    "non-string property": (lf.InvalidArgumentError, lambda uri: lf.Table.create(
        uri, SCHEMA, properties={"delta.checkpointInterval": 10})),
    "storage_options not a mapping": (lf.InvalidArgumentError, lambda uri: lf.Table.create(
        uri, SCHEMA, storage_options=["key"])),
}


@pytest.mark.parametrize("case", BAD_CREATES)
def test_bad_create_is_refused_before_writing(table_uri, case):
    error, create = BAD_CREATES[case]
    assert_refused(table_uri, error, lambda: create(table_uri))
    with pytest.raises(lf.TableNotFoundError):
        lf.Table(table_uri)


@pytest.mark.parametrize("uri", ["", "   ", None, 42, "memory://"])
def test_bad_uris(uri):
    with pytest.raises(lf.InvalidArgumentError):
        lf.Table(uri)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_partition_values_are_refused(table_uri, value):
    t = lf.Table.create(table_uri, pa.schema([("x", pa.float64()), ("v", pa.int64())]), partition_by=["x"])
    data = pa.table({"x": [1.0, value], "v": [1, 2]})  # the good partition is not written either
    assert_refused(table_uri, lf.SchemaMismatchError, lambda: t.append(data), match="partition")


@pytest.mark.parametrize("version", [-1, 2, 10**20])
def test_missing_versions(table, version):
    with pytest.raises(lf.VersionNotFoundError):
        table.snapshot(version=version)


@pytest.mark.parametrize("version, as_of", [("1", None), (1.0, None), (None, dt.datetime(2024, 1, 1)),
                                            (None, "yesterday"), (None, dt.date(2024, 1, 1))])
def test_bad_version_arguments(table, version, as_of):
    with pytest.raises(lf.InvalidArgumentError):
        table.snapshot(version=version, as_of=as_of)


def test_instant_before_the_first_commit(table):
    with pytest.raises(lf.VersionNotFoundError, match="first commit"):
        table.snapshot(as_of="1970-01-01T00:00:00Z")


def test_table_uri_that_is_a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a table")
    with pytest.raises(lf.TableNotFoundError):
        lf.Table(str(path))
    for target in (path, path / "below"):
        with pytest.raises(lf.StorageError, match="Not a directory"):
            lf.Table.create(str(target), SCHEMA)
    assert path.read_text() == "not a table"


AWKWARD_PARTITION_VALUES = ["a/b", "x=y", "..", "../..", "%", "%2F", "50%", "ü ñ 漢字 🦆",
                            "a b", "#?&", "C:\\temp", ".hidden", "=", "/"]


def test_awkward_partition_values_round_trip(table_uri):
    """Values with '/', '=', '..', '%' and unicode are data, not paths: lakeflow and deltalake read them back."""
    from deltalake import DeltaTable

    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64()), ("p", pa.string())]), partition_by=["p"])
    data = pa.table({"id": range(len(AWKWARD_PARTITION_VALUES)), "p": AWKWARD_PARTITION_VALUES})
    t.append(data)
    assert_table_equal(lf.Table(table_uri).to_arrow(), data)
    assert len(t.snapshot().files) == len(AWKWARD_PARTITION_VALUES)
    fs, root = fsspec.core.url_to_fs(table_uri)
    assert all(f.startswith(root.rstrip("/") + "/") for f in fs.find(root))  # nothing escaped the root
    if not table_uri.startswith("memory://"):  # deltalake cannot see this process's memory store
        assert_table_equal(DeltaTable(table_uri).to_pyarrow_table(), data, check_types=False)


def test_huge_column_name_round_trips(table_uri):
    name = "c" * 10_000
    t = lf.Table.create(table_uri, pa.schema([(name, pa.int64())]))
    t.append(pa.table({name: [1]}))
    assert lf.Table(table_uri).to_arrow().column_names == [name]


# ---- a damaged log is refused, never half-read --------------------------------------------


def write_commit(t: lf.Table, version: int, lines: list[dict] | bytes) -> None:
    data = lines if isinstance(lines, bytes) else "".join(json.dumps(x) + "\n" for x in lines).encode()
    t.storage.write(commit_path(version), data)


def add(path: str) -> dict:
    return {"add": {"path": path, "partitionValues": {"part": "a"}, "size": 1,
                    "modificationTime": 0, "dataChange": True}}


ESCAPING_PATHS = ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "s3://other-bucket/x.parquet",
                  "..%2F..%2Fetc%2Fpasswd", "%2E%2E/%2E%2E/etc/passwd", "part=a/../../x.parquet",
                  "..\\..\\windows\\win.ini", "C:/Windows/win.ini", "x%00.parquet"]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
@pytest.mark.parametrize("action", ["add", "remove"])
def test_log_paths_outside_the_table_are_refused(table, path, action):
    body = add(path)["add"] if action == "add" else {"path": path, "deletionTimestamp": 0, "dataChange": True}
    write_commit(table, 2, [{"commitInfo": {}}, {action: body}])
    for open_it in (lambda: lf.Table(table.uri), table.refresh):
        assert_refused(table.uri, lf.CorruptLogError, open_it, match="not a relative path inside")


@pytest.mark.parametrize("content", [
    b'{"commitInfo":{}}\n{"add":{"path":"part=a/x.parq',  # truncated mid-entry
    b"this is not json\n",
    b"[1, 2, 3]\n",
    b'{"add": {"partitionValues": {}}}\n',  # an add without a path
    b'{"commitInfo":{"note":"caf\xe9"}}\n',  # not UTF-8
], ids=["truncated", "not-json", "not-an-object", "missing-field", "not-utf8"])
def test_damaged_commit_is_refused(table, content):
    write_commit(table, 2, content)
    for open_it in (lambda: lf.Table(table.uri), table.refresh):
        assert_refused(table.uri, lf.CorruptLogError, open_it)
    assert table.state.version == 1  # the handle kept its state


def test_gap_in_versions_is_refused(table):
    table.append(good([2]))
    table.append(good([3]))
    table.storage.delete(commit_path(2))
    # A handle opens (the versions before the gap read); the latest is refused.
    assert_refused(table.uri, lf.CorruptLogError, lambda: lf.Table(table.uri).to_arrow(), match="gap")


@pytest.mark.parametrize("pointer", [b'{"version": 2, "size": 5}', b'{"version": 99}', b"garbage",
                                     b'{"version": 2, "parts": 3}'],
                         ids=["missing-checkpoint", "beyond-the-log", "not-json", "missing-parts"])
def test_last_checkpoint_pointing_nowhere_falls_back_to_listing(table, pointer):
    table.append(good([2]))
    table.append(good([3]))
    table.storage.write("_delta_log/_last_checkpoint", pointer)
    fresh = lf.Table(table.uri)
    assert fresh.version == 3
    assert sorted(fresh.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert fresh.snapshot(version=2).num_rows == 2
