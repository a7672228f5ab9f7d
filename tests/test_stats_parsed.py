"""Typed statistics in checkpoints (`add.stats_parsed`, `delta.checkpoint.writeStatsAsStruct`).

Checkpoints deltalake writes with `stats_parsed` prune without their JSON `stats`
(written with `delta.checkpoint.writeStatsAsJson=false`, so only the typed
statistics can prune): a filter that matches one file's range keeps only that
file, and every read equals a read without pruning. Checkpoints lakeflow writes
with the property carry `stats_parsed` that deltalake 1.6 reads (its SQL scan is
the oracle), and prune when lakeflow reads them back.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from test_type_widening import FILTERS, expected, widened_table

import lakeflow as lf
from lakeflow.testing import assert_table_equal, copy_table

from helpers import sql_scan

STRUCT_ONLY = {"delta.checkpoint.writeStatsAsStruct": "true", "delta.checkpoint.writeStatsAsJson": "false"}
UTC = dt.timezone.utc
D = decimal.Decimal


def value(kind: str, i: int) -> pa.Scalar:
    """The `i`-th value of a column of `kind` (increasing in `i`)."""
    day = dt.date(2024, 1, 1) + dt.timedelta(days=i)
    moment = dt.datetime(2024, 1, 1, 0, 0, 0, 123456) + dt.timedelta(hours=i)
    return {
        "int": pa.scalar(i * 10, pa.int32()),
        "string": pa.scalar(f"s{i:03d}", pa.string()),
        "date": pa.scalar(day, pa.date32()),
        "ts": pa.scalar(moment.replace(tzinfo=UTC), pa.timestamp("us", "UTC")),
        "ntz": pa.scalar(moment, pa.timestamp("us")),
        "decimal": pa.scalar(D(i) + D("0.25"), pa.decimal128(10, 2)),
    }[kind]


KINDS = ["int", "string", "date", "ts", "ntz", "decimal"]
FILES = 6


def file_rows(kind: str, i: int) -> pa.Table:
    """File `i`: the values `i` and `i` + 0.5 steps apart (two rows, one range per file)."""
    v = value(kind, i)
    return pa.table({"id": pa.array([i, i], pa.int64()), "v": pa.array([v, v], v.type),
                     "part": ["a" if i % 2 else "b"] * 2})


def deltalake_table(root: Path, kind: str, config: dict[str, str], partitioned: bool = False) -> str:
    """FILES one-file commits by deltalake, checkpointed by deltalake."""
    uri = str(root / f"dl-{kind}")
    for i in range(FILES):
        write_deltalake(uri, file_rows(kind, i), mode="append", configuration=config,
                        partition_by=["part"] if partitioned else None)
    DeltaTable(uri).create_checkpoint()
    return uri


def unpruned(t: lf.Table, where: pc.Expression) -> pa.Table:
    """The rows a read without pruning gives: every row, filtered after."""
    return t.to_arrow().filter(where)


def checkpoint_add_type(uri: str) -> pa.StructType:
    last = json.loads((Path(uri) / "_delta_log" / "_last_checkpoint").read_text())
    path = Path(uri) / "_delta_log" / f"{last['version']:020d}.checkpoint.parquet"
    add: pa.StructType = pq.read_schema(path).field("add").type
    return add


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("partitioned", [False, True])
def test_deltalake_stats_parsed_prune_without_json_stats(tmp_path, kind, partitioned):
    uri = deltalake_table(tmp_path, kind, STRUCT_ONLY, partitioned)
    assert checkpoint_add_type(uri).get_field_index("stats") < 0  # only typed statistics
    t = lf.Table(uri)
    target = value(kind, 3)
    # Timestamp statistics are truncated to milliseconds: file 3 may hold a later value.
    later = 3 if kind in ("ts", "ntz") else 2
    for where, kept, matching in [
            (pc.field("v") == target, 1, 1), (pc.field("v") > target, later, 2), (pc.field("v") <= target, 4, 4),
            ((pc.field("v") == target) & (pc.field("part") == "a"), 1, 1),
            (pc.field("v").isin(pa.array([value(kind, 1), value(kind, 4)])), 2, 2)]:
        assert len(t.snapshot().files_matching(where)) == kept, where
        got = t.to_arrow(filter=where)
        assert_table_equal(got, unpruned(t, where))
        assert got.num_rows == 2 * matching


def test_timestamp_statistics_truncated_to_milliseconds_keep_their_file(tmp_path):
    uri = deltalake_table(tmp_path, "ts", STRUCT_ONLY)
    t = lf.Table(uri)
    exact = value("ts", 2)  # .123456: its statistics say .123
    for where in [pc.field("v") == exact, pc.field("v") >= exact]:
        assert_table_equal(t.to_arrow(filter=where), unpruned(t, where))
        assert t.to_arrow(filter=where).num_rows >= 2


def test_files_committed_after_the_checkpoint_prune_by_their_json_stats(tmp_path, table_uri):
    src = deltalake_table(tmp_path, "int", STRUCT_ONLY)
    copy_table(Path(src), table_uri)
    t = lf.Table(table_uri)
    t.append(pa.table({"id": pa.array([100, 101], pa.int64()), "v": pa.array([30, 1000], pa.int32()),
                       "part": ["c", "c"]}))
    for where, files in [(pc.field("v") == 30, 2), (pc.field("v") == 1000, 1), (pc.field("v") < 0, 0)]:
        assert len(t.snapshot().files_matching(where)) == files, where
        assert_table_equal(t.to_arrow(filter=where), unpruned(t, where))


@pytest.mark.parametrize("kind", KINDS)
def test_lakeflow_checkpoints_with_stats_parsed_read_by_deltalake(tmp_path, kind):
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, file_rows(kind, 0).schema, partition_by=["part"], properties=STRUCT_ONLY)
    for i in range(FILES):
        t.append(file_rows(kind, i))
    t.checkpoint()
    add = checkpoint_add_type(uri)
    assert add.get_field_index("stats") < 0
    assert {"stats_parsed", "partitionValues_parsed"} <= set(add.names)
    assert_table_equal(sql_scan(uri), t.to_arrow())
    target = value(kind, 3)
    where = pc.field("v") == target
    kept = FILES if kind == "decimal" else 1  # lakeflow's writes collect no decimal min/max
    assert len(lf.Table(uri).snapshot().files_matching(where)) == kept
    assert_table_equal(lf.Table(uri).to_arrow(filter=where), unpruned(t, where))
    t.append(file_rows(kind, 3))  # a commit after the checkpoint: deltalake replays it on top
    assert_table_equal(sql_scan(uri), t.to_arrow())


def test_lakeflow_checkpoints_keep_json_stats_by_default(tmp_path):
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, file_rows("int", 0).schema)
    t.append(file_rows("int", 0))
    t.checkpoint()
    assert checkpoint_add_type(uri).get_field_index("stats_parsed") < 0
    t.set_properties({"delta.checkpoint.writeStatsAsStruct": "true"})
    t.append(file_rows("int", 1))
    t.checkpoint()
    add = checkpoint_add_type(uri)
    assert "stats" in add.names and "stats_parsed" in add.names
    assert_table_equal(sql_scan(uri), t.to_arrow())


@pytest.mark.parametrize("mode", ["name", "id"])
def test_column_mapped_stats_parsed_prune_by_physical_names(tmp_path, mode):
    uri = deltalake_table(tmp_path, "int", {**STRUCT_ONLY, "delta.columnMapping.mode": mode}, partitioned=True)
    dl = lf.Table(uri)
    lf_uri = str(tmp_path / "lf")
    t = lf.Table.create(lf_uri, file_rows("int", 0).schema, partition_by=["part"],
                        properties={**STRUCT_ONLY, "delta.columnMapping.mode": mode})
    for i in range(FILES):
        t.append(file_rows("int", i))
    t.checkpoint()
    assert_table_equal(sql_scan(lf_uri), t.to_arrow())
    for table in (dl, lf.Table(lf_uri)):
        where = pc.field("v") == 30
        assert len(table.snapshot().files_matching(where)) == 1
        assert_table_equal(table.to_arrow(filter=where), unpruned(table, where))


@pytest.mark.parametrize("where", FILTERS, ids=str)
def test_widened_columns_never_prune_from_old_typed_statistics(tmp_path, where):
    log = widened_table(tmp_path)
    log.metadata["configuration"] = {**log.metadata["configuration"], **STRUCT_ONLY}
    log.commit({"metaData": log.metadata})
    t = lf.Table(str(tmp_path))
    t.checkpoint()
    assert "stats_parsed" in checkpoint_add_type(str(tmp_path)).names
    want = expected(3).filter(where)
    got = lf.Table(str(tmp_path)).to_arrow(filter=where)
    assert want.num_rows >= 1
    assert_table_equal(got, want)


@pytest.mark.parametrize("kind", ["int", "string", "date", "ts", "ntz", "decimal"])
def test_typed_partition_values_of_lakeflow_checkpoints_read_by_deltalake(tmp_path, kind):
    uri = str(tmp_path / "t")
    rows = pa.concat_tables([file_rows(kind, i) for i in range(3)])
    t = lf.Table.create(uri, rows.schema, partition_by=["v"], properties=STRUCT_ONLY)
    t.append(rows)
    t.checkpoint()
    assert "partitionValues_parsed" in checkpoint_add_type(uri).names
    assert_table_equal(sql_scan(uri), t.to_arrow())
    where = pc.field("v") == value(kind, 1)
    assert len(lf.Table(uri).snapshot().files_matching(where)) == 1
    assert_table_equal(sql_scan(uri, query="SELECT * FROM t WHERE id = 1"), t.to_arrow(filter=where))


@pytest.mark.parametrize("kind", ["int", "string", "date", "ts", "ntz"])
def test_statistics_of_checkpoints_without_json_survive_lakeflow_checkpoints(tmp_path, kind):
    uri = deltalake_table(tmp_path, kind, STRUCT_ONLY)
    t = lf.Table(uri)
    t.append(file_rows(kind, FILES))
    t.checkpoint()  # from the typed statistics only: none may be lost
    assert checkpoint_add_type(uri).get_field_index("stats") < 0
    fresh = lf.Table(uri)
    where = pc.field("v") == value(kind, 3)
    assert len(fresh.snapshot().files_matching(where)) == 1
    assert_table_equal(fresh.to_arrow(filter=where), unpruned(fresh, where))
    assert fresh.snapshot().num_rows == 2 * (FILES + 1)
    assert_table_equal(sql_scan(uri), fresh.to_arrow())
