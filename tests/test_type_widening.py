"""The typeWidening reader feature: files written before a column was widened read as the
current type, and their statistics (in the old type) never prune a row a filter matches.
deltalake 1.6 cannot widen a column, so the tables are written by hand (PROTOCOL.md, Type
Widening); the expected rows are the old files' values cast to the new types."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import struct
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_reader_features import Log, assert_same_rows, every_read, field

import lakeflow as lf
from lakeflow.testing import copy_table

D = decimal.Decimal
F32 = struct.unpack("<f", struct.pack("<f", 0.7))[0]  # 0.7f as a double: 0.699999988079071


def changed(name, typ, *changes, path=None) -> dict:
    """A field whose type went through `changes` (from, to) pairs."""
    f = field(name, typ)
    f["metadata"]["delta.typeChanges"] = [
        {"fromType": a, "toType": b, **({"fieldPath": path} if path else {})} for a, b in changes]
    return f


OLD_FIELDS = [field("b", "byte"), field("f", "float"), field("d", "date"), field("dec", "decimal(5,2)"),
              field("i2d", "integer"), field("i2dec", "short"),
              field("s", {"type": "struct", "fields": [field("x", "short")]}),
              field("arr", {"type": "array", "elementType": "integer", "containsNull": True})]
NEW_FIELDS = [changed("b", "long", ("byte", "short"), ("short", "integer"), ("integer", "long")),
              changed("f", "double", ("float", "double")),
              changed("d", "timestamp_ntz", ("date", "timestamp_ntz")),
              changed("dec", "decimal(10,4)", ("decimal(5,2)", "decimal(10,4)")),
              changed("i2d", "double", ("integer", "double")),
              changed("i2dec", "decimal(12,2)", ("short", "decimal(12,2)")),
              field("s", {"type": "struct", "fields": [changed("x", "long", ("short", "long"))]}),
              changed("arr", {"type": "array", "elementType": "long", "containsNull": True},
                      ("integer", "long"), path="element")]
OLD_SCHEMA = pa.schema([("b", pa.int8()), ("f", pa.float32()), ("d", pa.date32()), ("dec", pa.decimal128(5, 2)),
                        ("i2d", pa.int32()), ("i2dec", pa.int16()), ("s", pa.struct([("x", pa.int16())])),
                        ("arr", pa.list_(pa.field("element", pa.int32())))])
NEW_SCHEMA = pa.schema([("b", pa.int64()), ("f", pa.float64()), ("d", pa.timestamp("us")),
                        ("dec", pa.decimal128(10, 4)), ("i2d", pa.float64()), ("i2dec", pa.decimal128(12, 2)),
                        ("s", pa.struct([("x", pa.int64())])), ("arr", pa.list_(pa.field("element", pa.int64())))])
OLD_ROWS = [{"b": -128, "f": F32, "d": dt.date(2024, 1, 2), "dec": D("1.25"), "i2d": 7, "i2dec": -3,
             "s": {"x": 300}, "arr": [1, 2]},
            {"b": 127, "f": 3.5, "d": dt.date(2024, 1, 5), "dec": D("-999.99"), "i2d": -2**31, "i2dec": 32767,
             "s": {"x": -1}, "arr": None}]
NEW_ROWS = [{"b": 2**40, "f": 0.1, "d": dt.datetime(2024, 1, 3, 12, 30), "dec": D("123456.1234"), "i2d": 0.5,
             "i2dec": D("1234567890.12"), "s": {"x": 2**40}, "arr": [2**40]}]
WIDENING = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["typeWidening"],
            "writerFeatures": ["typeWidening"]}
# What Spark writes as float statistics: the float32's shortest text (0.7 for 0.7f, which
# is less than 0.7).
OLD_STATS = {"minValues": {"b": -128, "f": 0.7, "d": "2024-01-02", "dec": -999.99, "i2d": -2**31, "i2dec": -3},
             "maxValues": {"b": 127, "f": 3.5, "d": "2024-01-05", "dec": 1.25, "i2d": 7, "i2dec": 32767},
             "nullCount": {"b": 0, "f": 0, "d": 0, "dec": 0, "i2d": 0, "i2dec": 0}}
NEW_STATS = {"minValues": {"b": 2**40, "f": 0.1, "d": "2024-01-03T12:30:00.000", "dec": 123456.1234},
             "maxValues": {"b": 2**40, "f": 0.1, "d": "2024-01-03T12:30:00.000", "dec": 123456.1234},
             "nullCount": {"b": 0, "f": 0, "d": 0, "dec": 0}}


def widened_table(root: Path, protocol=WIDENING) -> Log:
    """v1: a file in the old types; v2: every column widened; v3: a file in the new types."""
    log = Log(root, OLD_FIELDS, protocol, {"delta.enableTypeWidening": "true"})
    log.commit({"add": log.data("old.parquet", pa.Table.from_pylist(OLD_ROWS, OLD_SCHEMA), stats=OLD_STATS)})
    log.metadata["schemaString"] = json.dumps({"type": "struct", "fields": NEW_FIELDS})
    log.commit({"metaData": log.metadata})
    log.commit({"add": log.data("new.parquet", pa.Table.from_pylist(NEW_ROWS, NEW_SCHEMA), stats=NEW_STATS)})
    return log


def expected(version: int) -> pa.Table:
    old = pa.Table.from_pylist(OLD_ROWS, OLD_SCHEMA) if version >= 1 else OLD_SCHEMA.empty_table()
    if version < 2:
        return old
    new = pa.Table.from_pylist(NEW_ROWS, NEW_SCHEMA) if version >= 3 else NEW_SCHEMA.empty_table()
    return pa.concat_tables([old.cast(NEW_SCHEMA), new])


@pytest.mark.parametrize("feature", ["typeWidening", "typeWidening-preview"])
def test_files_from_before_a_widening_read_as_the_new_type(tmp_path, table_uri, feature):
    protocol = {**WIDENING, "readerFeatures": [feature], "writerFeatures": [feature]}
    widened_table(tmp_path / "src", protocol)
    copy_table(tmp_path / "src", table_uri)
    t = lf.Table(table_uri)
    for v in range(4):
        snap = t.snapshot(version=v)
        assert snap.schema == expected(v).schema == snap.to_arrow().schema
        for got in every_read(snap):
            assert_same_rows(got, expected(v))
    assert t.to_arrow().filter(pc.field("f") == F32)["b"].to_pylist() == [-128]
    added = t.diff(1, 3).added
    assert added.schema == NEW_SCHEMA and added["b"].to_pylist() == [2**40]
    assert_same_rows(t.diff(-1).added, expected(3))


FILTERS = [
    pc.field("f") == F32,  # the old file's 0.7f: its stats say 0.7, which is more
    pc.field("f") < 0.7, pc.field("f") <= F32, pc.field("f") > 3.4999999, pc.field("f") == 0.1,
    pc.field("b") < -100, pc.field("b") > 2**35, pc.field("b") == 127,
    pc.field("d") == pa.scalar(dt.datetime(2024, 1, 2), pa.timestamp("us")),
    pc.field("d") > pa.scalar(dt.datetime(2024, 1, 4, 23, 59), pa.timestamp("us")),
    pc.field("dec") == pa.scalar(D("1.2500"), pa.decimal128(10, 4)),
    pc.field("dec") < pa.scalar(D("-999.9899"), pa.decimal128(10, 4)),
    pc.field("i2d") == -2.0**31, pc.field("i2dec") == pa.scalar(D("32767.00"), pa.decimal128(12, 2)),
    pc.field(("s", "x")) > 299,
]


@pytest.mark.parametrize("where", FILTERS, ids=str)
def test_filters_on_widened_columns_never_lose_a_row(tmp_path, where):
    widened_table(tmp_path)
    snap = lf.Table(str(tmp_path)).snapshot()
    want = expected(3).filter(where)
    assert want.num_rows >= 1
    assert_same_rows(snap.to_arrow(filter=where), want)
    assert_same_rows(snap.to_pyarrow_dataset().to_table(filter=where), want)
    assert_same_rows(snap.to_polars().collect().to_arrow().filter(where), want)


def test_old_statistics_still_prune_what_they_can(tmp_path):
    widened_table(tmp_path)
    snap = lf.Table(str(tmp_path)).snapshot()
    assert [f.path for f in snap.files_matching(pc.field("b") > 2**35)] == ["new.parquet"]
    assert [f.path for f in snap.files_matching(pc.field("b") < 0)] == ["old.parquet"]
    assert [f.path for f in snap.files_matching(pc.field("f") > 1.0)] == ["old.parquet"]
    assert snap.files_matching(pc.field("f") > 3.5001) == []


@pytest.mark.parametrize("change", [("long", "integer"), ("string", "long"), ("double", "float"),
                                    ("decimal(10,2)", "decimal(10,3)"), ("long", "decimal(19,0)"),
                                    ("timestamp_ntz", "date"), ("date", "timestamp")])
def test_type_changes_that_are_no_widening_are_refused_by_name(tmp_path, change):
    log = Log(tmp_path, [changed("c", change[1], change)], WIDENING)
    log.commit({"add": log.data("a.parquet", pa.table({"c": pa.array([1], pa.int64())}))})
    with pytest.raises(lf.UnsupportedFeatureError, match=re.escape(f"column 'c' changed type from '{change[0]}'")):
        lf.Table(str(tmp_path)).to_arrow()


def test_an_unsupported_change_of_a_nested_element_is_refused(tmp_path):
    typ = {"type": "array", "elementType": "integer", "containsNull": True}
    Log(tmp_path, [changed("c", typ, ("long", "integer"), path="element")], WIDENING)
    with pytest.raises(lf.UnsupportedFeatureError, match=r"'c\.element'"):
        lf.Table(str(tmp_path))


def test_widened_tables_are_written_keeping_their_type_changes(tmp_path, table_uri):
    # lakeflow never changes a column's type; it writes the current types and keeps the
    # schema's delta.typeChanges (the feature's writer rules).
    widened_table(tmp_path / "src")
    copy_table(tmp_path / "src", table_uri)
    t = lf.Table(table_uri)
    row = {**NEW_ROWS[0], "b": 5, "f": 1.5, "s": {"x": 1}}
    t.append(pa.Table.from_pylist([row], NEW_SCHEMA))
    t.delete(pc.field("b") == 127)  # rewrites the old file in the new types
    merged = {**row, "b": 2**40, "f": 9.0}  # replaces the new file's row
    t.merge(pa.Table.from_pylist([merged], NEW_SCHEMA), on="b")
    t.compact()
    t.checkpoint()
    time.sleep(0.05)
    t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    fresh = lf.Table(table_uri)
    assert json.loads(fresh.state.metadata.schema_string)["fields"] == NEW_FIELDS
    old_row = pa.Table.from_pylist(OLD_ROWS[:1], OLD_SCHEMA).cast(NEW_SCHEMA)
    want = pa.concat_tables([old_row, pa.Table.from_pylist([row, merged], NEW_SCHEMA)])
    got = fresh.to_arrow()
    assert got.schema == NEW_SCHEMA
    assert_same_rows(got, want)


# ---- decimal statistics beyond a float's digits ----------------------------------------------


@pytest.mark.parametrize("typ, text", [("decimal(38,3)", "1234567890123456789.123"),
                                       ("decimal(38,19)", "0.1000000000000000001"),
                                       ("decimal(38,19)", "-0.1000000000000000001"),
                                       ("decimal(5,2)", "-999.99"), ("decimal(5,2)", "999.99"),
                                       ("decimal(38,0)", "99999999999999999999999999999999999999")])
@pytest.mark.parametrize("widened", [False, True])
def test_decimal_statistics_never_prune_their_own_value(tmp_path, typ, text, widened):
    # JSON reads 1234567890123456789.123 as a float (1234567890123456768): taken as the
    # file's min and max, it excluded the row holding the written value.
    # (deltalake 1.6 returns no row for d = 1234567890123456789.123.)
    precision, scale = map(int, typ[len("decimal("):-1].split(","))
    value = D(text)
    wide = f"decimal(38,{scale})"
    fields = [changed("d", wide, (typ, wide))] if widened else [field("d", typ)]
    log = Log(tmp_path, fields, WIDENING)
    add = log.data("a.parquet", pa.table({"d": pa.array([value], pa.decimal128(precision, scale))}))
    bounds = f'"minValues":{{"d":{text}}},"maxValues":{{"d":{text}}}'
    add["stats"] = f'{{"numRecords":1,{bounds},"nullCount":{{"d":0}}}}'
    log.commit({"add": add})
    snap = lf.Table(str(tmp_path)).snapshot()
    typ_now = snap.schema.field("d").type
    for where in (pc.field("d") == pa.scalar(value, typ_now), pc.field("d") >= pa.scalar(value, typ_now),
                  pc.field("d") <= pa.scalar(value, typ_now)):
        assert snap.to_arrow(filter=where)["d"].to_pylist() == [value]
    with decimal.localcontext(decimal.Context(prec=80)):
        far = (abs(value) * D("1.001")).quantize(D(1).scaleb(-scale))
    if far < D(10) ** (precision - scale):  # the stats still prune a value well past it
        assert snap.files_matching(pc.field("d") > pa.scalar(far, typ_now)) == []


@pytest.mark.parametrize("value", [0.7, -0.7, 3.4028234663852886e38, 1e-45, 16777217.0, math.inf, -math.inf])
def test_float_statistics_as_spark_prints_them_never_prune_the_float(tmp_path, value):
    # Spark prints a float statistic as the float's shortest decimal ("0.7"), below
    # or above the float's exact value (0.7f is 0.699999988...): neither may prune it.
    exact = struct.unpack("<f", struct.pack("<f", value))[0]
    shortest = "Infinity" if exact == math.inf else "-Infinity" if exact == -math.inf else \
        next(t for t in (f"{exact:.{d}g}" for d in range(1, 10)) if _same_float32(float(t), exact))
    log = Log(tmp_path, [field("f", "float")], {"minReaderVersion": 1, "minWriterVersion": 2})
    add = log.data("a.parquet", pa.table({"f": pa.array([exact], pa.float32())}))
    add["stats"] = f'{{"numRecords":1,"minValues":{{"f":{shortest}}},"maxValues":{{"f":{shortest}}},' \
        '"nullCount":{"f":0}}'
    log.commit({"add": add})
    snap = lf.Table(str(tmp_path)).snapshot()
    for where in (pc.field("f") == pa.scalar(exact, pa.float32()), pc.field("f") == exact,
                  pc.field("f") <= exact, pc.field("f") >= exact):
        assert snap.to_arrow(filter=where)["f"].to_pylist() == [exact], where
    if math.isfinite(exact):
        assert snap.files_matching(pc.field("f") > abs(exact) * 1.001 + 1e-30) == []


def _same_float32(a: float, b: float) -> bool:
    try:
        return struct.pack("<f", a) == struct.pack("<f", b)
    except OverflowError:  # beyond the float range
        return False


def test_widened_partition_columns_read_and_prune(tmp_path):
    # Partition values are text: an old file's "2024-01-02" reads as midnight in the new type.
    old = [field("id", "long"), field("p", "byte"), field("day", "date")]
    log = Log(tmp_path, old, WIDENING, partition_columns=["p", "day"])
    a = log.data("p=1/day=2024-01-02/a.parquet", pa.table({"id": pa.array([1], pa.int64())}),
                 {"p": "1", "day": "2024-01-02"})
    log.commit({"add": a})
    log.metadata["schemaString"] = json.dumps({"type": "struct", "fields": [
        field("id", "long"), changed("p", "integer", ("byte", "integer")),
        changed("day", "timestamp_ntz", ("date", "timestamp_ntz"))]})
    log.commit({"metaData": log.metadata})
    b = log.data("p=300/b.parquet", pa.table({"id": pa.array([2], pa.int64())}),
                 {"p": "300", "day": "2024-01-03 10:00:00"})
    log.commit({"add": b})
    snap = lf.Table(str(tmp_path)).snapshot()
    assert snap.to_arrow().sort_by("id").to_pylist() == [
        {"id": 1, "p": 1, "day": dt.datetime(2024, 1, 2)}, {"id": 2, "p": 300, "day": dt.datetime(2024, 1, 3, 10)}]
    midnight = pa.scalar(dt.datetime(2024, 1, 2), pa.timestamp("us"))
    assert [f.path for f in snap.files_matching(pc.field("day") == midnight)] == [a["path"]]
    assert [f.path for f in snap.files_matching(pc.field("p") > 255)] == [b["path"]]
    assert lf.Table(str(tmp_path)).snapshot(version=1).schema.field("p").type == pa.int8()
