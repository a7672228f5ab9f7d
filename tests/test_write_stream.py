"""Data files streamed to the store (`Storage.write_stream`) and their statistics from the footer."""

from __future__ import annotations

import datetime as dt
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lakeflow as lf
from lakeflow.errors import StorageError
from lakeflow.storage import open_storage
from lakeflow.write import file_stats

from helpers import sql_scan


def test_write_stream_writes_the_whole_file_and_returns_its_size(table_uri):
    storage = open_storage(table_uri)
    assert storage.write_stream("d/f.bin", lambda sink: sink.write(b"abc" * 1000)) == 3000
    assert storage.read("d/f.bin") == b"abc" * 1000
    assert storage.write_stream("d/f.bin", lambda sink: sink.write(b"new")) == 3  # replaces
    assert storage.read("d/f.bin") == b"new"
    assert [f.name for f in storage.list_dir("d")] == ["f.bin"]


def test_write_stream_that_fails_leaves_no_file_and_raises_the_data_error(table_uri):
    storage = open_storage(table_uri)

    def fill(sink: pa.NativeFile) -> None:
        sink.write(b"partial")
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):  # the data's error, not a StorageError
        storage.write_stream("d/f.bin", fill)
    assert not storage.exists("d/f.bin")
    assert storage.list_dir("d") == []
    if "://" not in table_uri:  # no temp file left beside it either
        assert os.listdir(os.path.join(table_uri, "d")) == []


def test_write_stream_sink_failure_is_a_storage_error(tmp_path):
    storage = open_storage(str(tmp_path / "t"))

    def fill(sink: pa.NativeFile) -> None:
        raise OSError("disk full")

    with pytest.raises(StorageError, match="disk full"):
        storage.write_stream("f.bin", fill)
    assert os.listdir(tmp_path / "t") == []


def _footer(table: pa.Table, row_group_size: int) -> pq.FileMetaData:
    footers: list[pq.FileMetaData] = []
    pq.write_table(table, io.BytesIO(), row_group_size=row_group_size, coerce_timestamps="us",
                   metadata_collector=footers)
    return footers[0]


def _odd_columns() -> pa.Table:
    n = 12
    return pa.table({
        "i": pa.array([None, 5, -3, 7] * 3, pa.int64()),
        "i8": pa.array([1, -128, 127, 0] * 3, pa.int8()),
        "s": pa.array(["b", "é", "a", "zz"] * 3),
        "long_max": pa.array(["a", "b" * 40, "c", None] * 3),  # max beyond the 32-char prefix
        "long_min": pa.array(["a" * 40, "b", "c", "d"] * 3),  # min is truncated, stays a bound
        "huge": pa.array(["x" * 5000 if i == 5 else "y" for i in range(n)]),  # no Parquet stats there
        "late_nulls": pa.array([None] * 8 + ["q", "p", None, "r"]),  # whole row groups of nulls
        "d": pa.array([dt.date(2020, 1, i + 1) for i in range(n)]),
        "far_d": pa.array([3_000_000 * (i % 3 - 1) for i in range(n)], pa.int32()).cast(pa.date32()),
        "f": pa.array([1.5, float("nan"), 2.0, None] * 3),
        "f_ok": pa.array([1.5, -2.0, 2.0, None] * 3),
        "ts": pa.array([dt.datetime(2021, 1, 1, i, tzinfo=dt.timezone.utc) for i in range(n)],
                       pa.timestamp("us", "UTC")),
        "ntz": pa.array([dt.datetime(2021, 1, 1, i) for i in range(n)], pa.timestamp("us")),
        "nulls": pa.nulls(n, pa.string()),
        "st": pa.array([{"x": i} for i in range(n)]),
        "b": pa.array([True, False] * 6),
    })


@pytest.mark.parametrize("row_group_size", [1, 4, 5, 100])
def test_footer_stats_are_the_computed_stats(row_group_size):
    table = _odd_columns()
    assert file_stats(table, _footer(table, row_group_size)) == file_stats(table)


def test_appended_files_have_the_computed_stats(table_uri, backend):
    table = _odd_columns()
    t = lf.Table.create(table_uri, table.schema)
    t.append(table)
    (f,) = t.snapshot().files
    assert f.add.stats is not None and json.loads(f.add.stats) == file_stats(table)
    assert t.to_arrow().drop_columns(["f"]).equals(table.drop_columns(["f"]))  # (NaN != NaN)
    if backend == "local":
        assert sql_scan(table_uri).num_rows == table.num_rows


def _ids(n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64()),
                     "name": pa.array([f"row-{i}" for i in range(n)], pa.string())})


def test_append_rolls_files_at_the_target_file_size(table_uri, backend):
    target = 40_000
    t = lf.Table.create(table_uri, _ids(0).schema, properties={"delta.targetFileSize": str(target)})
    rows = _ids(60_000)
    t.append(rows)
    files = sorted(t.snapshot().files, key=lambda f: json.loads(f.add.stats)["minValues"]["id"])
    assert len(files) > 3
    assert all(f.size <= 2 * target for f in files[1:-1])  # sized by the files before them
    # Each file holds a run of rows, with its own stats; together every row once.
    stats = [json.loads(f.add.stats) for f in files]
    assert sum(s["numRecords"] for s in stats) == rows.num_rows
    assert [s["minValues"]["id"] for s in stats[1:]] == [s["maxValues"]["id"] + 1 for s in stats[:-1]]
    assert t.to_arrow().sort_by("id").equals(rows)
    if backend == "local":
        assert sql_scan(table_uri).cast(rows.schema).sort_by("id").equals(rows)


def test_append_without_a_target_writes_one_file_per_partition(table_uri):
    t = lf.Table.create(table_uri, _ids(0).schema)
    t.append(_ids(60_000))
    assert len(t.snapshot().files) == 1
