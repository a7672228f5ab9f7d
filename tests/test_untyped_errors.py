"""Inputs that used to escape as raw Python or Arrow errors: each is now read, written or refused typed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_reader_features import Z85, bitmap, dv_table, inline_dv

import lakeflow as lf
from lakeflow.log import checkpoint_path, commit_path
from lakeflow.storage import arrow_file, open_storage
from lakeflow.testing import assert_table_equal

from helpers import rewrite_commit
from helpers import sql_scan as oracle

UTC = dt.timezone.utc


# ---- a null schemaString -------------------------------------------------------------------


def _null_schema(action: dict[str, Any]) -> None:
    if "metaData" in action:
        action["metaData"]["schemaString"] = None


def test_null_schema_string_in_a_commit_is_corrupt_log(table_uri: str) -> None:
    lf.Table.create(table_uri, pa.schema([("id", pa.int64())]))
    rewrite_commit(open_storage(table_uri), 0, _null_schema)
    with pytest.raises(lf.CorruptLogError, match="schemaString must be a string"):
        lf.Table(table_uri).to_arrow()


def test_null_schema_string_in_a_checkpoint_is_corrupt_log(table_uri: str) -> None:
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1, 2]}))
    t.checkpoint()
    storage = open_storage(table_uri)
    checkpoint = pq.ParquetFile(arrow_file(storage.read(checkpoint_path(1)))).read()
    rows = checkpoint.to_pylist()
    for row in rows:
        if row["metaData"] is not None:
            row["metaData"]["schemaString"] = None
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=checkpoint.schema), sink)
    storage.write(checkpoint_path(1), sink.getvalue().to_pybytes())
    t.append(pa.table({"id": [3]}))
    # The commits are still there: the checkpoint is only a cache, and reading falls back.
    with pytest.warns(UserWarning, match="schemaString must be a string"):
        assert sorted(lf.Table(table_uri).to_arrow()["id"].to_pylist()) == [1, 2, 3]
    for version in (0, 1):  # once the log was cleaned up, the checkpoint is all there is
        storage.delete(commit_path(version))
    with pytest.raises(lf.CorruptLogError, match=r"checkpoint .*schemaString must be a string"):
        lf.Table(table_uri)


# ---- void (null-typed) columns -------------------------------------------------------------


def _void_table(uri: str, void_type: Any) -> lf.Table:
    """A table whose column `v` a foreign writer (Spark) declared void."""
    lf.Table.create(uri, pa.schema([("id", pa.int64()), ("v", pa.string())]))

    def to_void(action: dict[str, Any]) -> None:
        if "metaData" in action:
            schema = json.loads(action["metaData"]["schemaString"])
            schema["fields"][1]["type"] = void_type
            action["metaData"]["schemaString"] = json.dumps(schema)

    rewrite_commit(open_storage(uri), 0, to_void)
    return lf.Table(uri)


def test_appends_to_void_columns_omit_them_from_data_files(table_uri: str, backend: str) -> None:
    t = _void_table(table_uri, "void")
    t.append(pa.table({"id": [1, 2]}))
    t.append(pa.table({"id": [3], "v": pa.nulls(1)}))
    expected = pa.table({"id": [1, 2, 3], "v": pa.nulls(3)})
    assert_table_equal(lf.Table(table_uri).to_arrow(), expected)
    fs, root = open_storage(table_uri).arrow_fs()
    for f in lf.Table(table_uri).snapshot().files:  # the protocol: writers omit void columns
        with fs.open_input_file(f"{root}/{f.path}") as fh:
            assert pq.ParquetFile(fh).schema_arrow.names == ["id"]
    if backend == "local":
        assert_table_equal(oracle(table_uri), expected)


@pytest.mark.parametrize("void_type", [
    {"type": "struct", "fields": [{"name": "a", "type": "void", "nullable": True, "metadata": {}},
                                  {"name": "b", "type": "long", "nullable": True, "metadata": {}}]},
    {"type": "array", "elementType": "void", "containsNull": True},
])
def test_nested_void_columns_are_refused_before_writing(table_uri: str, void_type: Any) -> None:
    t = _void_table(table_uri, void_type)
    with pytest.raises(lf.SchemaMismatchError, match=r"\['v'\].*void"):
        t.append(pa.table({"id": [1]}))
    assert lf.Table(table_uri).version == 0


# ---- timestamps beyond Python's years 1-9999 ------------------------------------------------

_MICROS_PER_YEAR = 365_2425 * 864 * 10**4  # mean Gregorian year in microseconds
_EXTREME = pa.table({
    "id": [1, 2, 3],
    "ts": pa.array([-11_969 * _MICROS_PER_YEAR, 0, 253_402_300_799_999_999], pa.timestamp("us", "UTC")),
    "ntz": pa.array([-11_969 * _MICROS_PER_YEAR, 0, 8_030 * _MICROS_PER_YEAR], pa.timestamp("us")),
    "day": pa.array([-4_371_000, 0, 2_932_896], pa.date32()),  # about -9999-01-01 .. 9999-12-31
})


def test_stats_of_extreme_timestamps_on_write(table_uri: str, backend: str) -> None:
    t = lf.Table.create(table_uri, _EXTREME.schema)
    t.append(_EXTREME)
    assert t.to_arrow().sort_by("id").equals(_EXTREME)  # (Python datetimes cannot hold them)
    after = pc.field("ts") > pa.scalar(dt.datetime(9999, 12, 31, tzinfo=UTC), pa.timestamp("us", "UTC"))
    assert t.to_arrow(filter=after)["id"].to_pylist() == [3]
    assert t.to_arrow(filter=pc.field("ntz") < pa.scalar(0, pa.timestamp("us")))["id"].to_pylist() == [1]
    if backend == "local":
        assert oracle(table_uri).sort_by("id").cast(_EXTREME.schema).equals(_EXTREME)


@pytest.mark.parametrize("low, high", [
    ("-9999-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z"),
    ("0000-01-01T00:00:00.000Z", "+10000-01-01T00:00:00.000Z"),
    ("9999-12-31T23:59:59.999-05:00", "9999-12-31T23:59:59.999-05:00"),
])
def test_foreign_stats_of_extreme_timestamps_on_read(table_uri: str, low: str, high: str) -> None:
    """Bounds that do not parse, or overflow when widened, are no bounds: the file is read."""
    t = lf.Table.create(table_uri, _EXTREME.schema)
    t.append(_EXTREME.slice(1, 1))  # id 2 at the epoch; its stats now claim the extremes

    def extreme_stats(action: dict[str, Any]) -> None:
        if "add" in action:
            stats = json.loads(action["add"]["stats"])
            for column in ("ts", "ntz"):
                stats["minValues"][column], stats["maxValues"][column] = low, high
            action["add"]["stats"] = json.dumps(stats)

    rewrite_commit(open_storage(table_uri), 1, extreme_stats)
    reopened = lf.Table(table_uri)
    for column in ("ts", "ntz"):
        typ = _EXTREME.schema.field(column).type
        keep = pc.field(column) >= pa.scalar(0, typ)
        assert reopened.to_arrow(filter=keep)["id"].to_pylist() == [2]
        assert len(reopened.snapshot().files_matching(keep)) == 1


# ---- a filter whose types do not fit ----------------------------------------------------------


@pytest.mark.parametrize("rows", [0, 2])
@pytest.mark.parametrize("bad", [
    pc.field("id") == "x",
    pc.field("id") > pa.scalar("3"),
    pc.field("id").isin(["a"]),
])
def test_filter_of_mismatched_types_is_invalid_argument(table_uri: str, rows: int, bad: pc.Expression) -> None:
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64()), ("p", pa.string())]), partition_by=["p"])
    if rows:
        t.append(pa.table({"id": [1, 2], "p": ["a", "b"]}))
    with pytest.raises(lf.InvalidArgumentError, match=r"id: int64.*string"):
        t.to_arrow(filter=bad)
    with pytest.raises(lf.InvalidArgumentError, match=r"id: int64"):
        t.snapshot().files_matching(bad)


def test_filter_on_a_partition_column_of_another_type_is_invalid_argument(table_uri: str) -> None:
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64()), ("p", pa.string())]), partition_by=["p"])
    t.append(pa.table({"id": [1], "p": ["a"]}))
    with pytest.raises(lf.InvalidArgumentError, match=r"p: string.*int8"):
        t.to_arrow(filter=pc.field("p") == 3)


# ---- an inline deletion vector whose padded last Z85 group exceeds 32 bits ---------------------


def _z85_group(value: int) -> str:
    chars = []
    for _ in range(5):
        value, digit = divmod(value, 85)
        chars.append(Z85[digit])
    return "".join(reversed(chars))


def test_inline_deletion_vector_with_overflowing_padding(tmp_path) -> None:
    dv = inline_dv([1])
    data = bitmap([1])
    assert len(data) % 4 == 2  # the last group holds 2 bytes and 2 of padding
    last = int.from_bytes(data[-2:] + b"\0\0", "big") + 2**32  # Delta's decoder keeps the low 32 bits
    assert last < 85**5
    dv["pathOrInlineDv"] = dv["pathOrInlineDv"][:-5] + _z85_group(last)
    root = str(dv_table(tmp_path, dv))
    assert sorted(lf.Table(root).to_arrow()["id"].to_pylist()) == [0, *range(2, 10)]


@pytest.mark.parametrize("text, instant", [
    ("9999-12-31T23:59:59-05:00", "10000-01-01T04:59:59"),
    ("9999-12-31 23:59:59.999999-01:00", "10000-01-01T00:59:59.999999"),
    ("0001-01-01 00:00:00+01:00", "0000-12-31T23:00:00"),
])
def test_timestamp_partition_values_a_zone_shift_moves_past_python_datetime(text: str, instant: str) -> None:
    """Valid instants a zone shift moves outside Python's datetime (OverflowError before) read in Arrow."""
    import numpy as np

    from lakeflow.partitions import parse_partition_value

    typ = pa.timestamp("us", tz="UTC")
    expected = pa.scalar(int(np.datetime64(instant, "us").astype("int64")), pa.int64()).cast(typ)
    assert parse_partition_value(text, typ, "ts").equals(expected)


def test_a_missing_deletion_vector_file_is_data_file_not_found(table_uri: str) -> None:
    """A DV file deleted outside the log is named, typed like a missing data file."""
    from pathlib import Path

    from lakeflow.testing import copy_table

    copy_table(Path(__file__).parent / "data" / "conformance" / "tables" / "table-with-dv-small", table_uri)
    t = lf.Table(table_uri)
    dv = next(i.name for i in t.storage.list_dir("") if i.name.endswith(".bin"))
    t.storage.delete(dv)
    with pytest.raises(lf.DataFileNotFoundError, match=dv):
        lf.Table(table_uri).to_arrow()
