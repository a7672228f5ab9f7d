"""The variantType reader feature: tables that merely list it, variant columns read as the
Parquet Variant struct (checked against deltalake's SQL scan), and `variant_to_json` checked
against DuckDB's own Variant encoder and JSON rendering, plus hand-encoded edge cases."""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_reader_features import WRITES, Log, _files, assert_same_rows, every_read, field, oracle

import lakeflow as lf
from lakeflow.testing import copy_table
from lakeflow.variant import VARIANT_TYPE, decode_json

VARIANT_PROTOCOL = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["variantType"],
                    "writerFeatures": ["variantType"]}


# ---- tables that list the feature without a variant column ----------------------------------


def test_deltalake_deletion_vector_tables_read_at_every_version(tmp_path, table_uri):
    src = str(tmp_path / "src")
    rows = pa.table({"id": pa.array(range(6), pa.int64()), "s": [f"r{i}" for i in range(6)]})
    deltalake.write_deltalake(src, rows, configuration={"delta.enableDeletionVectors": "true"})
    deltalake.write_deltalake(src, rows.slice(2), mode="append")
    deltalake.DeltaTable(src).delete("id = 3")
    deltalake.DeltaTable(src).update({"s": "'changed'"}, predicate="id = 4")
    assert "variantType" in deltalake.DeltaTable(src).protocol().reader_features  # what the issue is about
    copy_table(Path(src), table_uri)
    t = lf.Table(table_uri)
    assert t.version == 3
    for v in range(4):
        snap, expected = t.snapshot(version=v), oracle(src, v)
        for got in every_read(snap):
            assert_same_rows(got, expected)
        assert_same_rows(snap.to_arrow(filter=pc.field("id") >= 4), expected.filter(pc.field("id") >= 4))
    assert_same_rows(t.diff(-1).added, oracle(src, 3))


def test_a_table_listing_variant_type_without_variant_columns_is_written(tmp_path):
    log = Log(tmp_path, [field("id", "long")], VARIANT_PROTOCOL)
    log.commit({"add": log.data("a.parquet", pa.table({"id": pa.array([1, 2], pa.int64())}))})
    t = lf.Table(str(tmp_path))
    t.append(pa.table({"id": pa.array([3], pa.int64())}))
    t.delete(pc.field("id") == 1)
    assert sorted(oracle(tmp_path, 3)["id"].to_pylist()) == [2, 3]


# ---- decoding: DuckDB encodes, lakeflow decodes ---------------------------------------------


def duck_variant(sql_value: str) -> tuple[bytes, bytes, str]:
    """DuckDB's Parquet Variant encoding of a SQL value, and its JSON text of it."""
    (text, enc), = duckdb.sql(
        f"select ({sql_value})::VARIANT::JSON, "
        f"variant_to_parquet_variant(({sql_value})::VARIANT)::STRUCT(metadata BLOB, value BLOB)").fetchall()
    return enc["metadata"], enc["value"], text


# Values whose JSON DuckDB renders as lakeflow does (compared as parsed JSON).
SAME_JSON = [
    "NULL::INTEGER", "true", "false", "127::TINYINT", "(-128)::TINYINT", "-5::SMALLINT", "2000000000::INTEGER",
    "(-2**62)::BIGINT::HUGEINT::BIGINT", "9223372036854775807::BIGINT", "2.5::DOUBLE", "-1e300::DOUBLE",
    "1e-7::DOUBLE", "12.34::DECIMAL(9,2)", "-0.001::DECIMAL(18,3)", "12345678901234567890123.5::DECIMAL(38,1)",
    "'x'", "repeat('y', 70)", "'quote \" and \\ and ü 😈'", "DATE '2024-01-02'", "DATE '1900-02-28'",
    "TIMESTAMP '2024-01-02 03:04:05.123456'", "TIMESTAMP_NS '2024-01-02 03:04:05.123456789'",
    "TIME '01:02:03.5'", "'12345678-1234-5678-1234-567812345678'::UUID",
    "{'a': 1, 'b': [1::VARIANT, 'x'::VARIANT, NULL::VARIANT]}",
    "'{\"z\": [1, 2.5, \"x\", null, true, {\"c\": 1e300, \"a\": {}}], \"a\": [], \"m\": {\"k\": [[[]]]}}'::JSON",
    "[]::INTEGER[]", "{'k': {'l': {'m': [{'n': 1}]}}}",
    "(select map_from_entries(list({'key': 'k' || i::VARCHAR, 'value': i}))::JSON from range(300) t(i))",
]


@pytest.mark.parametrize("sql", SAME_JSON)
def test_decoding_matches_duckdb(sql):
    metadata, value, text = duck_variant(sql)
    assert json.loads(decode_json(metadata, value)) == json.loads(text)


@pytest.mark.parametrize("sql, expected", [
    ("0.1::FLOAT", "0.1"),  # the float32's shortest text, not 0.10000000149011612
    ("3.0::FLOAT", "3.0"),
    ("-16777217::FLOAT", "-16777216.0"),
    ("'nan'::DOUBLE", '"NaN"'), ("'-inf'::DOUBLE", '"-Infinity"'), ("'inf'::FLOAT", '"Infinity"'),
    ("TIMESTAMPTZ '2024-01-02 03:04:05.5+00'", '"2024-01-02 03:04:05.5+00:00"'),
    ("TIMESTAMPTZ '1969-12-31 23:59:59.999999+00'", '"1969-12-31 23:59:59.999999+00:00"'),
    ("TIMESTAMP '2024-01-02 00:00:00'", '"2024-01-02 00:00:00"'),
    ("DATE '-0044-03-15'", '"-0044-03-15"'),
    ("'\\xAA\\x01'::BLOB", '"qgE="'),  # base64
])
def test_decoding_renders_types_json_lacks(sql, expected):
    metadata, value, _ = duck_variant(sql)
    assert decode_json(metadata, value) == expected


# ---- decoding: encodings DuckDB does not produce --------------------------------------------


def metadata(keys, offset_size=1, sorted_strings=False) -> bytes:
    data = [k.encode() for k in keys]
    offsets = [0]
    for d in data:
        offsets.append(offsets[-1] + len(d))
    header = 1 | (sorted_strings << 4) | ((offset_size - 1) << 6)
    return bytes([header]) + b"".join(n.to_bytes(offset_size, "little") for n in [len(keys), *offsets]) + b"".join(data)


def container(kind, items, ids=None, offset_size=1, id_size=1, large=False) -> bytes:
    """An object (kind 2, with field `ids`) or array (kind 3) of encoded `items`."""
    offsets, pos = [], 0
    for item in items:
        offsets.append(pos)
        pos += len(item)
    offsets.append(pos)
    info = (offset_size - 1) | ((id_size - 1) << 2 | large << 4 if kind == 2 else large << 2)
    out = bytes([kind | info << 2]) + len(items).to_bytes(4 if large else 1, "little")
    out += b"".join(i.to_bytes(id_size, "little") for i in ids or [])
    return out + b"".join(o.to_bytes(offset_size, "little") for o in offsets) + b"".join(items)


def primitive(type_id: int, data: bytes = b"") -> bytes:
    return bytes([type_id << 2]) + data


def long_string(text: str) -> bytes:
    raw = text.encode()
    return primitive(16, struct.pack("<I", len(raw)) + raw)


@pytest.mark.parametrize("value, expected", [
    (primitive(0), None), (primitive(1), True), (primitive(2), False),
    (primitive(3, b"\xff"), -1), (primitive(4, struct.pack("<h", -300)), -300),
    (primitive(5, struct.pack("<i", -2**31)), -2**31), (primitive(6, struct.pack("<q", 2**63 - 1)), 2**63 - 1),
    (primitive(7, struct.pack("<d", 0.1)), 0.1), (primitive(14, struct.pack("<f", 1.5)), 1.5),
    (primitive(8, b"\x02" + struct.pack("<i", -1234)), -12.34),
    (primitive(9, b"\x00" + struct.pack("<q", 10**18)), 10**18),
    (primitive(10, b"\x26" + (10**38 - 1).to_bytes(16, "little", signed=True)), 1.0),  # 0.999... (38 nines)
    (primitive(11, struct.pack("<i", -1)), "1969-12-31"),
    (primitive(12, struct.pack("<q", -1)), "1969-12-31 23:59:59.999999+00:00"),
    (primitive(13, struct.pack("<q", 86_400_000_000 * 366)), "1971-01-02 00:00:00"),
    (primitive(17, struct.pack("<q", 3_723_000_001)), "01:02:03.000001"),
    (primitive(18, struct.pack("<q", 1)), "1970-01-01 00:00:00.000000001+00:00"),
    (primitive(19, struct.pack("<q", 10**9 * 61)), "1970-01-01 00:01:01"),
    (primitive(15, struct.pack("<I", 3) + b"\x00\xff\x10"), "AP8Q"),
    (primitive(20, uuid.UUID(int=1).bytes), "00000000-0000-0000-0000-000000000001"),
    (long_string("ab"), "ab"), (bytes([1 | 3 << 2]) + "ü!".encode(), "ü!"),
])
def test_every_primitive_type_decodes(value, expected):
    assert json.loads(decode_json(metadata([]), value)) == expected


def test_exact_decimal_digits_are_kept():
    value = primitive(10, b"\x05" + (-(10**37) - 1).to_bytes(16, "little", signed=True))
    assert decode_json(metadata([]), value) == "-100000000000000000000000000000000.00001"
    assert decode_json(metadata([]), primitive(8, b"\x02" + struct.pack("<i", 100))) == "1.00"
    nines = primitive(10, b"\x26" + (10**38 - 1).to_bytes(16, "little", signed=True))
    assert decode_json(metadata([]), nines) == "0." + "9" * 38


@pytest.mark.parametrize("offset_size, id_size, large", [(1, 1, False), (2, 2, True), (3, 3, False), (4, 4, True)])
def test_objects_and_arrays_of_every_offset_and_id_width(offset_size, id_size, large):
    keys = ["zeta", "alpha", "mid"]  # unsorted dictionary: ids index it as written
    inner = container(3, [primitive(5, struct.pack("<i", 7)), long_string("s"), primitive(0)],
                      offset_size=offset_size, large=large)
    # Field ids in key order (alpha, mid, zeta); the values themselves in another order.
    values = [inner, primitive(1), container(2, [], ids=[], offset_size=offset_size)]
    items = [values[2], values[0], values[1]]  # stored: {} then [..] then true
    offsets = [len(items[0]) + len(items[1]), 0, len(items[0]), sum(map(len, items))]
    head = bytes([2 | ((offset_size - 1) | (id_size - 1) << 2 | large << 4) << 2])
    obj = head + (3).to_bytes(4 if large else 1, "little")
    obj += b"".join(i.to_bytes(id_size, "little") for i in [1, 2, 0])
    obj += b"".join(o.to_bytes(offset_size, "little") for o in offsets) + b"".join(items)
    text = decode_json(metadata(keys, offset_size=offset_size), obj)
    assert text == '{"alpha":true,"mid":{},"zeta":[7,"s",null]}'


def test_deep_nesting_and_wide_arrays():
    value = primitive(3, b"\x01")
    for _ in range(100):
        value = container(3, [value], offset_size=4)
    assert json.loads(decode_json(metadata([]), value)) == json.loads("[" * 100 + "1" + "]" * 100)
    wide = container(3, [long_string(str(i)) for i in range(1000)], offset_size=2, large=True)
    assert json.loads(decode_json(metadata([]), wide)) == [str(i) for i in range(1000)]


@pytest.mark.parametrize("meta, value, error, match", [
    (metadata(["a"]), container(2, [primitive(1)], ids=[1]), lf.CorruptLogError, "field id 1"),
    (metadata(["a", "a"]), container(2, [primitive(1), primitive(2)], ids=[0, 1]), lf.CorruptLogError,
     "same name"),
    (metadata([]), primitive(6, b"\x01\x02"), lf.CorruptLogError, "ends at byte"),
    (metadata([]), container(3, [primitive(1)])[:-1], lf.CorruptLogError, "past the end"),
    (metadata([]), primitive(16, struct.pack("<I", 99) + b"ab"), lf.CorruptLogError, "ends at byte"),
    (metadata([]), bytes([1 | 2 << 2]) + b"\xff\xfe", lf.CorruptLogError, "malformed"),
    (metadata([]), primitive(9, b"\x40" + bytes(8)), lf.CorruptLogError, "scale 64"),
    (b"\x02\x00\x00", primitive(1), lf.UnsupportedFeatureError, "version 2"),
    (b"\x01\x05\x00", primitive(1), lf.CorruptLogError, "metadata"),
    (metadata([]), primitive(40), lf.UnsupportedFeatureError, "primitive type 40"),
])
def test_malformed_variants_are_refused_typed(meta, value, error, match):
    with pytest.raises(error, match=match):
        decode_json(meta, value)


def test_nesting_past_the_limit_is_refused_typed():
    value = primitive(0)
    for _ in range(600):
        value = container(3, [value], offset_size=4)
    with pytest.raises(lf.UnsupportedFeatureError, match="nests deeper"):
        decode_json(metadata([]), value)


# ---- tables with variant columns ------------------------------------------------------------

SQL_VALUES = ["{'a': 1, 'b': [1::VARIANT, 'x'::VARIANT]}", "'hello'", "NULL::INTEGER", "12.5::DECIMAL(9,2)",
              "DATE '2024-01-02'", "[{'k': true}]"]


def variant_column(values) -> pa.Array:
    """A variant column holding DuckDB's encoding of each SQL value (None: a null row)."""
    rows = [None if v is None else dict(zip(("metadata", "value"), duck_variant(v)[:2], strict=True))
            for v in values]
    return pa.array(rows, VARIANT_TYPE)


def variant_table(root: Path) -> Log:
    """v1: a file of variants (one row null); v2: a second file, a nested variant in a struct."""
    fields = [field("id", "long"), field("v", "variant"),
              field("s", {"type": "struct", "fields": [field("inner", "variant")]})]
    log = Log(root, fields, VARIANT_PROTOCOL)
    first = [*SQL_VALUES, None]
    inner = pa.array([{"inner": r} for r in variant_column(first).to_pylist()],
                     pa.struct([pa.field("inner", VARIANT_TYPE)]))
    a = log.data("a.parquet", pa.table({"id": pa.array(range(len(first)), pa.int64()),
                                        "v": variant_column(first), "s": inner}))
    log.commit({"add": a})
    b = log.data("b.parquet", pa.table({"id": pa.array([100], pa.int64()), "v": variant_column(["[1, 2]"])}))
    log.commit({"add": b})
    return log


def test_variant_columns_read_like_deltalake(tmp_path, table_uri):
    src = tmp_path / "src"
    variant_table(src)
    copy_table(src, table_uri)
    t = lf.Table(table_uri)
    assert t.schema.field("v").type == VARIANT_TYPE
    for v in range(3):
        snap, expected = t.snapshot(version=v), oracle(src, v)
        for got in every_read(snap):
            assert_same_rows(got, expected)
    got = t.to_arrow(filter=pc.field("id") < 100).sort_by("id")
    texts = lf.variant_to_json(got["v"]).to_pylist()
    assert [None if s is None else json.loads(s) for s in texts] == [
        *(json.loads(duck_variant(v)[2]) for v in SQL_VALUES), None]
    inner = lf.variant_to_json(pc.struct_field(got["s"], "inner")).to_pylist()
    assert inner[:-1] == texts[:-1] and inner[-1] is None
    assert lf.variant_to_json(t.to_arrow(filter=pc.field("id") == 100)["v"]).to_pylist() == ["[1,2]"]
    assert_same_rows(t.diff(0, 2).added, oracle(src, 2))
    latest = oracle(src, 2)
    added = t.diff(1, 2).added.select(latest.column_names).to_pylist()
    assert added == [r for r in latest.to_pylist() if r["id"] == 100]


def test_shredded_variant_files_are_refused_by_name(tmp_path):
    log = Log(tmp_path, [field("id", "long"), field("v", "variant")], VARIANT_PROTOCOL)
    duckdb.sql(f"copy (select 1::BIGINT id, 'hi'::VARIANT v) to '{tmp_path / 'shredded.parquet'}'")
    assert "typed_value" in str(pq.read_schema(tmp_path / "shredded.parquet"))
    size = (tmp_path / "shredded.parquet").stat().st_size
    log.commit({"add": {"path": "shredded.parquet", "partitionValues": {}, "size": size,
                        "modificationTime": 0, "dataChange": True}})
    t = lf.Table(str(tmp_path))
    for read in (t.to_arrow, lambda: t.snapshot().to_polars().collect(), lambda: t.diff(-1)):
        with pytest.raises(lf.UnsupportedFeatureError, match=r"shredded.parquet.*column 'v'.*variantShredding"):
            read()
    assert t.to_arrow(columns=["id"])["id"].to_pylist() == [1]  # other columns still read
    shredded = pq.read_table(tmp_path / "shredded.parquet")["v"]
    with pytest.raises(lf.UnsupportedFeatureError, match="typed_value"):
        lf.variant_to_json(shredded)


def test_variant_to_json_refuses_what_is_not_a_variant_column():
    with pytest.raises(lf.InvalidArgumentError, match="variant column"):
        lf.variant_to_json(pa.array([1, 2]))
    with pytest.raises(lf.InvalidArgumentError, match="pyarrow column"):
        lf.variant_to_json([b"\x01\x00\x00"])  # type: ignore[arg-type]


@pytest.mark.parametrize("write", sorted(WRITES))
def test_tables_with_variant_columns_are_never_written(tmp_path, write):
    variant_table(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match="variant"):
        WRITES[write](lf.Table(str(tmp_path)))
    assert _files(tmp_path) == before


def test_variant_columns_under_column_mapping_read_like_deltalake(tmp_path):
    fields = [field("Id", "long", "col-id", 1), field("Payload", "variant", "col-payload", 2),
              field("Wrap", {"type": "struct", "fields": [field("Inner V", "variant", "col-inner", 4)]},
                    "col-wrap", 3)]
    protocol = {"minReaderVersion": 3, "minWriterVersion": 7,
                "readerFeatures": ["columnMapping", "variantType"], "writerFeatures": ["columnMapping", "variantType"]}
    log = Log(tmp_path, fields, protocol, {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "4"})
    values = variant_column(SQL_VALUES)
    wrap = pa.array([{"col-inner": r} for r in values.to_pylist()], pa.struct([pa.field("col-inner", VARIANT_TYPE)]))
    data = pa.table({"col-id": pa.array(range(len(SQL_VALUES)), pa.int64()), "col-payload": values, "col-wrap": wrap})
    log.commit({"add": log.data("a.parquet", data)})
    t = lf.Table(str(tmp_path))
    for got in every_read(t.snapshot()):
        assert_same_rows(got, oracle(tmp_path, 1))
    got = t.to_arrow().sort_by("Id")
    assert lf.variant_to_json(got["Payload"]).to_pylist() == \
        lf.variant_to_json(pc.struct_field(got["Wrap"], "Inner V")).to_pylist()
    assert_same_rows(t.diff(-1).added, oracle(tmp_path, 1))
