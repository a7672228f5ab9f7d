"""Reading deletion vectors, column mapping and v2 checkpoints, on tables crafted here byte
by byte and checked against deltalake's SQL scan (the oracle that also made the corpus'
expected rows); writes to such tables are refused before anything is written."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyroaring
import pytest
from crafted_log import Log, assert_same_rows, every_read, field, oracle, remove, rows_of
from hypothesis import given
from hypothesis import strategies as st

import lakeflow as lf
import lakeflow.log_reader as table_mod
from lakeflow.deletion_vectors import DeletionVector, decode_bitmap_array, z85_decode
from lakeflow.testing import assert_table_equal, copy_table

CORPUS = Path(__file__).parent / "data" / "conformance"
Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
MAGIC = struct.pack("<I", 1681511377)


# ---- crafting tables by hand -------------------------------------------------------------


def z85(data: bytes) -> str:
    data += b"\0" * (-len(data) % 4)
    out = []
    for i in range(0, len(data), 4):
        v, chars = int.from_bytes(data[i:i + 4], "big"), []
        for _ in range(5):
            v, r = divmod(v, 85)
            chars.append(Z85[r])
        out.append("".join(reversed(chars)))
    return "".join(out)


def bitmap(rows, run=False) -> bytes:
    """Delta's RoaringBitmapArray: magic, then pyroaring's portable 64-bit serialization."""
    b = pyroaring.BitMap64(rows)
    if run:
        b.run_optimize()
    return MAGIC + b.serialize()


def inline_dv(rows) -> dict:
    data = bitmap(rows)
    return {"storageType": "i", "pathOrInlineDv": z85(data), "sizeInBytes": len(data),
            "cardinality": len(rows)}


def dv_file(root: Path, row_sets, prefix="") -> list[dict]:
    """One DV file holding a vector per row set; their descriptors."""
    u = uuid.uuid4()
    data, out = bytearray(b"\x01"), []
    for rows in row_sets:
        bm = bitmap(rows, run=True)
        out.append({"storageType": "u", "pathOrInlineDv": prefix + z85(u.bytes), "offset": len(data),
                    "sizeInBytes": len(bm), "cardinality": len(rows)})
        data += struct.pack(">I", len(bm)) + bm + struct.pack(">I", zlib.crc32(bm))
    (root / prefix).mkdir(parents=True, exist_ok=True)
    (root / prefix / f"deletion_vector_{u}.bin").write_bytes(bytes(data))
    return out


def with_dv(add: dict, dv) -> dict:
    return {"add": {**add, "deletionVector": dv}}


# ---- deletion vectors: decoding ----------------------------------------------------------


def test_descriptor_examples_from_the_protocol():
    inline = DeletionVector.parse({"storageType": "i", "sizeInBytes": 40, "cardinality": 6,
                                   "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L"},
                                  "test")
    assert inline.read(storage=None).tolist() == [3, 4, 7, 11, 18, 29]  # inline: no storage needed
    assert inline.unique_id == "iwi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L"
    on_disk = DeletionVector.parse({"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^",
                                    "offset": 4, "sizeInBytes": 40, "cardinality": 6}, "test")
    assert on_disk.file_path == "ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin"
    assert on_disk.unique_id == "uab^-aqEH.-t@S}K{vb[*k^@4"
    assert z85_decode("HelloWorld") == bytes.fromhex("864FD26FB559F75B")  # the Z85 spec's example


@given(st.lists(st.one_of(st.integers(0, 200),  # array containers
                          st.integers(0, 2**64 - 1),  # many buckets (keys)
                          st.integers(2**32, 2**32 + 70_000)), max_size=300),
       st.integers(0, 3), st.booleans())
def test_bitmap_decoding_matches_pyroaring(values, dense_block, run):
    values = set(values)
    values |= set(range(dense_block * 65536, dense_block * 65536 + 5000, 1 + dense_block % 2))  # bitmap
    values |= set(range(300_000, 300_000 + 7 * dense_block))  # runs
    assert decode_bitmap_array(bitmap(values, run)).tolist() == sorted(values)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b"\0\0\0\0" + b[4:], "magic"),
    (lambda b: b[:-1], "not a valid Roaring bitmap"),
    (lambda b: b + b"\0", "unexpected bytes"),
])
def test_damaged_bitmaps_are_corrupt_log(damage, match):
    with pytest.raises(lf.CorruptLogError, match=match):
        decode_bitmap_array(damage(bitmap([1, 2, 70_000])))


def dv_table(tmp_path: Path, dv) -> Path:
    log = Log(tmp_path, [field("id", "long")], {"minReaderVersion": 3, "minWriterVersion": 7,
                                                "readerFeatures": ["deletionVectors"],
                                                "writerFeatures": ["deletionVectors"]})
    add = log.data("a.parquet", pa.table({"id": pa.array(range(10), pa.int64())}))
    log.commit(with_dv(add, dv))
    return tmp_path


@pytest.mark.parametrize("change, match", [
    ({"cardinality": 3}, "holds 2 rows but the log says 3"),
    ({"storageType": "p", "pathOrInlineDv": "s3://bucket/dv.bin"}, "absolute path"),
    ({"storageType": "x"}, "unknown storageType"),
    ({"pathOrInlineDv": "!!!"}, "not Z85"),
    ({"sizeInBytes": None}, "invalid deletion vector"),
])
def test_damaged_inline_deletion_vectors_are_refused(tmp_path, change, match):
    root = dv_table(tmp_path, {**inline_dv([0, 9]), **change})
    with pytest.raises(lf.CorruptLogError, match=match):
        lf.Table(str(root)).snapshot().to_arrow()


@pytest.mark.parametrize("damage, match", [
    (lambda b: b"\x02" + b[1:], "format version"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC-32"),
    (lambda b: b[:-3], "ends before"),
])
def test_damaged_deletion_vector_files_are_refused(tmp_path, damage, match):
    root = tmp_path / "t"
    root.mkdir()
    (dv,) = dv_file(root, [[0, 9]])
    dv_table(root, dv)
    (path,) = root.glob("deletion_vector_*.bin")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(lf.CorruptLogError, match=match):
        lf.Table(str(root)).snapshot().to_arrow()


# ---- deletion vectors: tables --------------------------------------------------------------


@pytest.fixture
def dv_history(tmp_path) -> Path:
    """v1 adds a (ids 0-9) and b (ids 100-5099); v2 inline DV on a; v3 a's DV grows and b gets
    a dense DV (both in one DV file under the prefix 'ab'); v4 a's DV shrinks (rows restored);
    v5 c is added with a DV at once; v6 b is removed."""
    root = tmp_path / "dv"
    log = Log(root, [field("id", "long"), field("part", "string")],
              {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["deletionVectors"],
               "writerFeatures": ["deletionVectors"]}, {"delta.enableDeletionVectors": "true"},
              partition_columns=["part"])

    def data(name, ids, part):
        return log.data(f"part={part}/{name}.parquet", pa.table({"id": pa.array(ids, pa.int64())}),
                        {"part": part}, {"minValues": {"id": min(ids)}, "maxValues": {"id": max(ids)},
                                         "nullCount": {"id": 0}})

    a, b = data("a", list(range(10)), "x"), data("b", list(range(100, 5100)), "y")
    log.commit({"add": a}, {"add": b})
    dv1 = inline_dv([0, 9])
    log.commit(remove(a), with_dv(a, dv1))
    dv2, dense = dv_file(root, [[0, 3, 4, 9], list(range(4500))], prefix="ab")
    log.commit(remove(a, dv1), with_dv(a, dv2), remove(b), with_dv(b, dense))
    dv3 = inline_dv([0, 3])
    log.commit(remove(a, dv2), with_dv(a, dv3))
    c = data("c", [7, 7, 8], "x")
    log.commit(with_dv(c, inline_dv([1])))
    log.commit(remove(b, dense))
    return root


def test_deletion_vectors_read_like_deltalake_at_every_version(dv_history):
    t = lf.Table(str(dv_history))
    assert t.version == 6
    for v in range(7):
        snap, expected = t.snapshot(version=v), oracle(dv_history, v)
        for got in every_read(snap):
            assert_same_rows(got, expected)
        assert snap.num_rows == expected.num_rows
        assert sum(f.num_records for f in snap.files) == expected.num_rows
        assert snap.to_arrow(columns=[]).num_rows == expected.num_rows
        assert_same_rows(snap.to_arrow(columns=["part"]), expected.select(["part"]))
        kept = snap.to_arrow(filter=pc.field("id") < 10)
        assert_same_rows(kept, expected.filter(pc.field("id") < 10))
    snap = t.snapshot(version=3)
    assert [f.path for f in snap.files_matching(pc.field("part") == "x")] == ["part=x/a.parquet"]
    assert snap.to_arrow(filter=pc.field("id") >= 5000)["id"].to_pylist() == list(range(5000, 5100))


def test_diff_on_deletion_vectors_equals_the_change_of_snapshots(dv_history):
    t = lf.Table(str(dv_history))
    empty = oracle(dv_history, 0).slice(0, 0)
    snaps = {v: oracle(dv_history, v) if v >= 0 else empty for v in range(-1, 7)}
    for lo in range(-1, 7):
        for hi in range(-1, 7):
            d = t.diff(lo, hi)
            moved = rows_of(snaps[lo]) + rows_of(d.added.select(snaps[lo].column_names))
            moved.subtract(rows_of(d.removed.select(snaps[lo].column_names)))
            assert +moved == rows_of(snaps[hi]), (lo, hi)
    grown = t.diff(2, 3)  # a: dv {0, 9} -> {0, 3, 4, 9}; b: 4500 rows deleted
    assert sorted(grown.removed.filter(pc.field("part") == "x")["id"].to_pylist()) == [3, 4]
    assert grown.removed.num_rows == 4502 and grown.added.num_rows == 0
    assert grown.summary.files_read == 2
    restored = t.diff(3, 4)
    assert sorted(restored.added["id"].to_pylist()) == [4, 9] and restored.removed.num_rows == 0
    by_commit = {c.version: c.rows for c in t.changes(1, 4)}
    assert sorted(by_commit[2]["id"].to_pylist()) == [0, 9]
    assert set(by_commit[2]["_change_type"].to_pylist()) == {"delete"}
    assert by_commit[4].select(["id", "_change_type"]).sort_by("id").to_pylist() == [
        {"id": 4, "_change_type": "insert"}, {"id": 9, "_change_type": "insert"}]


def test_diff_over_a_vacuumed_deletion_vector_file_is_version_not_found(dv_history):
    (dv_file_path,) = (dv_history / "ab").glob("deletion_vector_*.bin")
    dv_file_path.unlink()
    t = lf.Table(str(dv_history))
    with pytest.raises(lf.VersionNotFoundError, match=r"ab/deletion_vector_.*added in version 3.*vacuumed"):
        t.diff(2, 3)
    with pytest.raises(lf.VersionNotFoundError, match=r"ab/deletion_vector_.*vacuumed"):
        list(t.changes(2, 3))
    assert sorted(t.diff(4, 5).added["id"].to_pylist()) == [7, 8]  # needs no vanished file


# ---- column mapping ------------------------------------------------------------------------


CM_FIELDS = [
    field("Id", "long", "col-id", 1),
    field("Part", "string", "col-part", 2),
    field("Address", {"type": "struct", "fields": [
        field("Zip Code", "string", "col-zip", 4),
        field("geo", {"type": "struct", "fields": [field("lat", "double", "col-lat", 6)]}, "col-geo", 5)]},
        "col-addr", 3),
    field("Tags", {"type": "array", "containsNull": True, "elementType": {
        "type": "struct", "fields": [field("Tag Name", "string", "col-tn", 8)]}}, "col-tags", 7),
    field("Props", {"type": "map", "keyType": "string", "valueContainsNull": True, "valueType": {
        "type": "struct", "fields": [field("Val", "long", "col-val", 10)]}}, "col-props", 9),
]


def physical_file(ids, name=lambda s: s, with_note=False) -> pa.Table:
    """Data as Spark stores it with column mapping: physical names and Parquet field ids."""
    def f(n, t, fid):
        return pa.field(name(n), t, metadata={"PARQUET:field_id": str(fid)})

    schema = pa.schema([
        f("col-id", pa.int64(), 1),
        f("col-addr", pa.struct([f("col-zip", pa.string(), 4),
                                 f("col-geo", pa.struct([f("col-lat", pa.float64(), 6)]), 5)]), 3),
        f("col-tags", pa.list_(pa.field("element", pa.struct([f("col-tn", pa.string(), 8)]))), 7),
        f("col-props", pa.map_(pa.string(), pa.struct([f("col-val", pa.int64(), 10)])), 9),
        *([f("col-note", pa.string(), 11)] if with_note else []),
    ])
    rows = [{name("col-id"): i,
             name("col-addr"): {name("col-zip"): f"{8000 + i}", name("col-geo"): {name("col-lat"): i / 2}},
             name("col-tags"): [{name("col-tn"): f"t{i}"}],
             name("col-props"): [("k", {name("col-val"): i * 10})],
             name("col-note"): f"note {i}"} if i % 3 else {name("col-id"): i} for i in ids]
    return pa.Table.from_pylist(rows, schema=schema)


def cm_table(root: Path, mode="name", name=lambda s: s, protocol=None) -> Log:
    protocol = protocol or ({"minReaderVersion": 2, "minWriterVersion": 5} if mode == "name" else
                            {"minReaderVersion": 3, "minWriterVersion": 7,
                             "readerFeatures": ["columnMapping"], "writerFeatures": ["columnMapping"]})
    log = Log(root, CM_FIELDS, protocol, {"delta.columnMapping.mode": mode,
                                          "delta.columnMapping.maxColumnId": "10"}, ["Part"])
    adds = [log.data(f"{p}/{p}.parquet", physical_file(ids, name), {"col-part": part},
                     {"minValues": {"col-id": min(ids)}, "maxValues": {"col-id": max(ids)},
                      "nullCount": {"col-id": 0}})
            for p, part, ids in (("aa", "P 1", [1, 2, 3]), ("bb", "P 2", [4, 5, 6]))]
    log.commit(*({"add": a} for a in adds))
    return log


@pytest.fixture
def cm_history(tmp_path) -> Path:
    """v1 two partitions; v2 adds column "Note" (col-note) and a file with it; v3 removes aa."""
    root = tmp_path / "cm"
    log = cm_table(root)
    log.metadata["schemaString"] = json.dumps({"type": "struct", "fields": [
        *CM_FIELDS, field("Note", "string", "col-note", 11)]})
    c = log.data("cc/c.parquet", physical_file([7, 8], with_note=True), {"col-part": "P 1"})
    log.commit({"metaData": log.metadata}, {"add": c})
    first = json.loads((root / "_delta_log" / f"{1:020d}.json").read_text().splitlines()[1])["add"]
    log.commit(remove(first))
    return root


def test_column_mapping_reads_like_deltalake_with_nested_fields_and_evolution(cm_history):
    t = lf.Table(str(cm_history))
    for v in range(4):
        snap, expected = t.snapshot(version=v), oracle(cm_history, v)
        assert snap.schema.names == expected.column_names
        for got in every_read(snap):
            assert_same_rows(got, expected)
    latest = t.snapshot()
    assert latest.schema.names == ["Id", "Part", "Address", "Tags", "Props", "Note"]
    assert {f.path: f.partition_values for f in latest.files} == {
        "bb/bb.parquet": {"Part": "P 2"}, "cc/c.parquet": {"Part": "P 1"}}
    assert latest.to_arrow(columns=["Note", "Id"], filter=pc.field("Id") > 4).sort_by("Id").to_pylist() == [
        {"Note": None, "Id": 5}, {"Note": None, "Id": 6}, {"Note": "note 7", "Id": 7}, {"Note": "note 8", "Id": 8}]


def test_column_mapping_filters_use_logical_names_and_prune(cm_history):
    snap = lf.Table(str(cm_history)).snapshot(version=1)
    assert [f.path for f in snap.files_matching(pc.field("Part") == "P 2")] == ["bb/bb.parquet"]
    assert [f.path for f in snap.files_matching(pc.field("Id") <= 3)] == ["aa/aa.parquet"]  # stats
    assert snap.files_matching(pc.field("Id") > 100) == []
    hit = snap.to_arrow(filter=(pc.field(("Address", "Zip Code")) == "8005") & (pc.field("Part") == "P 2"))
    assert hit.to_pylist() == [{"Id": 5, "Part": "P 2", "Address": {"Zip Code": "8005", "geo": {"lat": 2.5}},
                                "Tags": [{"Tag Name": "t5"}], "Props": [("k", {"Val": 50})]}]
    lazy = snap.to_polars().filter(pl_col("Part") == "P 1").select("Id").collect()
    assert sorted(lazy["Id"].to_list()) == [1, 2, 3]
    with pytest.raises(lf.SchemaMismatchError):
        snap.to_arrow(filter=pc.field("col-id") > 1)  # physical names are not columns


def pl_col(name):
    import polars as pl

    return pl.col(name)


def test_diff_with_column_mapping_equals_the_change_of_snapshots(cm_history):
    t = lf.Table(str(cm_history))
    snaps = {v: oracle(cm_history, v) for v in range(4)}
    for lo in range(4):
        for hi in range(4):
            d = t.diff(lo, hi)
            moved = rows_of(_widen(snaps[lo], d.schema)) + rows_of(d.added)
            moved.subtract(rows_of(d.removed))
            assert +moved == rows_of(_widen(snaps[hi], d.schema)), (lo, hi)
    (commit,) = list(t.changes(2, 3))
    assert sorted(commit.rows["Id"].to_pylist()) == [1, 2, 3]
    assert set(commit.rows["_change_type"].to_pylist()) == {"delete"}


def _widen(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`'s columns: those it lacks are null."""
    return pa.table({f.name: table[f.name] if f.name in table.column_names else pa.nulls(len(table), f.type)
                     for f in schema})


def test_column_mapping_id_mode_resolves_columns_by_parquet_field_id(tmp_path):
    # Physical names in the files differ from the schema's: only the field ids match.
    cm_table(tmp_path, mode="id", name=lambda s: f"renamed-{s}")
    snap = lf.Table(str(tmp_path)).snapshot()
    got = snap.to_arrow(filter=pc.field("Id") == 2)
    assert got.to_pylist() == [{"Id": 2, "Part": "P 1", "Address": {"Zip Code": "8002", "geo": {"lat": 1.0}},
                                "Tags": [{"Tag Name": "t2"}], "Props": [("k", {"Val": 20})]}]
    assert snap.num_rows == 6 and snap.to_arrow()["Address"].null_count == 2  # ids 3 and 6


def test_column_mapping_id_mode_with_physical_names_reads_like_deltalake(tmp_path):
    cm_table(tmp_path, mode="id")
    assert_same_rows(lf.Table(str(tmp_path)).snapshot().to_arrow(), oracle(tmp_path, 1))


# Iceberg-compat tables declare columnMapping as a writer feature only.
WRITER_ONLY = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": [],
               "writerFeatures": ["columnMapping"]}


@pytest.mark.parametrize("mode", ["name", "id"])
def test_column_mapping_declared_only_as_a_writer_feature_reads_like_deltalake(tmp_path, table_uri, mode):
    source = tmp_path / "source"
    cm_table(source, mode=mode, protocol=WRITER_ONLY)
    copy_table(source, table_uri)
    snap = lf.Table(table_uri).snapshot()
    expected = oracle(source, 1)
    assert sorted(expected["Id"].to_pylist()) == [1, 2, 3, 4, 5, 6]
    for got in every_read(snap):
        assert_same_rows(got, expected)
    assert [f.path for f in snap.files_matching(pc.field("Part") == "P 2")] == ["bb/bb.parquet"]
    assert_same_rows(lf.Table(table_uri).diff(-1).added, expected)


@pytest.mark.parametrize("protocol", [{"minReaderVersion": 1, "minWriterVersion": 2},
                                      {"minReaderVersion": 2, "minWriterVersion": 5}])
def test_column_mapping_mode_is_decided_by_the_configuration(tmp_path, protocol):
    # Whatever the protocol lists, the files of a table with a mode hold physical names.
    # (deltalake refuses the reader-version-1 table: "Partition column col-part not found".)
    cm_table(tmp_path, protocol=protocol)
    got = lf.Table(str(tmp_path)).to_arrow()
    assert sorted(zip(got["Id"].to_pylist(), got["Part"].to_pylist(), strict=True)) == [
        (1, "P 1"), (2, "P 1"), (3, "P 1"), (4, "P 2"), (5, "P 2"), (6, "P 2")]
    assert got["Address"].null_count == 2  # ids 3 and 6 have no address


@pytest.mark.parametrize("protocol", [{"minReaderVersion": 1, "minWriterVersion": 2}, WRITER_ONLY])
def test_column_mapping_mode_without_physical_names_is_a_corrupt_log(tmp_path, protocol):
    log = Log(tmp_path, [field("a", "long")], protocol, {"delta.columnMapping.mode": "name"})
    log.commit({"add": log.data("f.parquet", pa.table({"a": pa.array([1], pa.int64())}))})
    with pytest.raises(lf.CorruptLogError, match="physicalName"):
        lf.Table(str(tmp_path)).to_arrow()


@pytest.mark.parametrize("write", ["append", "merge", "delete"])
def test_a_column_mapping_mode_on_a_protocol_without_the_feature_is_never_written(tmp_path, write):
    # Readers that honour the protocol read display names, lakeflow would write physical ones.
    cm_table(tmp_path, protocol={"minReaderVersion": 1, "minWriterVersion": 2})
    before = _files(tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match="does not support the columnMapping feature"):
        WRITES[write](lf.Table(str(tmp_path)))
    assert _files(tmp_path) == before


def test_unknown_column_mapping_mode_is_refused(tmp_path):
    Log(tmp_path, [field("a", "long", "col-a", 1)], {"minReaderVersion": 2, "minWriterVersion": 5},
        {"delta.columnMapping.mode": "guess"})
    with pytest.raises(lf.UnsupportedFeatureError, match="guess"):
        lf.Table(str(tmp_path))


# ---- v2 checkpoints ------------------------------------------------------------------------

V2_PROTOCOL = {"minReaderVersion": 3, "minWriterVersion": 7,
               "readerFeatures": ["v2Checkpoint", "deletionVectors"],
               "writerFeatures": ["v2Checkpoint", "deletionVectors"]}
_MAP = pa.map_(pa.string(), pa.string())
_DV = pa.struct([("storageType", pa.string()), ("pathOrInlineDv", pa.string()), ("offset", pa.int32()),
                 ("sizeInBytes", pa.int32()), ("cardinality", pa.int64())])
SIDECAR_SCHEMA = pa.schema([
    ("add", pa.struct([("path", pa.string()), ("partitionValues", _MAP), ("size", pa.int64()),
                       ("modificationTime", pa.int64()), ("dataChange", pa.bool_()),
                       ("stats", pa.string()), ("deletionVector", _DV)])),
    ("remove", pa.struct([("path", pa.string()), ("deletionTimestamp", pa.int64()),
                          ("dataChange", pa.bool_())])),
])
V2_SCHEMA = pa.schema([
    ("checkpointMetadata", pa.struct([("version", pa.int64()), ("tags", _MAP)])),
    ("protocol", pa.struct([("minReaderVersion", pa.int32()), ("minWriterVersion", pa.int32()),
                            ("readerFeatures", pa.list_(pa.string())),
                            ("writerFeatures", pa.list_(pa.string()))])),
    ("metaData", pa.struct([("id", pa.string()), ("schemaString", pa.string()),
                            ("partitionColumns", pa.list_(pa.string())), ("configuration", _MAP),
                            ("format", pa.struct([("provider", pa.string()), ("options", _MAP)])),
                            ("createdTime", pa.int64())])),
    ("sidecar", pa.struct([("path", pa.string()), ("sizeInBytes", pa.int64()),
                           ("modificationTime", pa.int64())])),
])


def v2_table(root: Path, kind: str) -> tuple[Path, pa.Table]:
    """Three commits, a v2 checkpoint (of `kind`) at version 2 whose file actions sit in two
    sidecars, then commit 3; commits 0-2 are deleted, so only the checkpoint gives the state.
    Returns the checkpoint's name and the rows of version 3."""
    log = Log(root, [field("id", "long")], V2_PROTOCOL, {"delta.checkpointPolicy": "v2"})
    adds = [log.data(f"f{i}.parquet", pa.table({"id": pa.array(range(i * 10, i * 10 + 5), pa.int64())}))
            for i in range(3)]
    log.commit({"add": adds[0]}, {"add": adds[1]})
    log.commit(remove(adds[0]), {"add": adds[2]}, with_dv(adds[1], inline_dv([0, 4])))
    sidecars = []
    for rows in ([{"add": {**adds[1], "partitionValues": [], "deletionVector": inline_dv([0, 4])}}],
                 [{"add": {**adds[2], "partitionValues": []}},
                  {"remove": {"path": adds[0]["path"], "deletionTimestamp": 0, "dataChange": True}}]):
        name = f"{uuid.uuid4()}.parquet"
        (root / "_delta_log" / "_sidecars").mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), root / "_delta_log" / "_sidecars" / name)
        size = (root / "_delta_log" / "_sidecars" / name).stat().st_size
        sidecars.append({"path": name, "sizeInBytes": size, "modificationTime": 0})
    meta = {**log.metadata, "configuration": list(log.metadata["configuration"].items())}
    head = [{"checkpointMetadata": {"version": 2, "tags": []}}, {"protocol": V2_PROTOCOL}, {"metaData": meta},
            *({"sidecar": s} for s in sidecars)]
    name = {"json": f"{2:020d}.checkpoint.{uuid.uuid4()}.json",
            "uuid-parquet": f"{2:020d}.checkpoint.{uuid.uuid4()}.parquet",
            "classic": f"{2:020d}.checkpoint.parquet"}[kind]
    if kind == "json":
        for row in head:
            for body in row.values():
                for key in ("tags", "configuration"):
                    if isinstance(body.get(key), list):
                        body[key] = dict(body[key])
        (root / "_delta_log" / name).write_text("\n".join(json.dumps(r) for r in head) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(head, schema=V2_SCHEMA), root / "_delta_log" / name)
    log.commit({"add": log.data("f3.parquet", pa.table({"id": pa.array([99], pa.int64())}))})
    expected = oracle(root, 3)
    for v in range(3):
        (root / "_delta_log" / f"{v:020d}.json").unlink()
    return root / "_delta_log" / name, expected


@pytest.mark.parametrize("kind", ["json", "uuid-parquet", "classic"])
def test_v2_checkpoint_with_sidecars_found_by_listing(tmp_path, kind):
    _, expected = v2_table(tmp_path, kind)
    assert sorted(expected["id"].to_pylist()) == [11, 12, 13, 20, 21, 22, 23, 24, 99]
    t = lf.Table(str(tmp_path))
    assert t.version == 3
    assert_same_rows(t.to_arrow(), expected)
    assert_same_rows(t.snapshot(version=2).to_arrow(), expected.filter(pc.field("id") != 99))
    assert_same_rows(oracle(tmp_path, 3), expected)  # deltalake agrees without commits 0-2


def test_v2_checkpoint_found_through_last_checkpoint(tmp_path, monkeypatch):
    checkpoint, expected = v2_table(tmp_path, "json")
    (tmp_path / "_delta_log" / "_last_checkpoint").write_text(json.dumps(
        {"version": 2, "size": 5, "v2Checkpoint": {"path": checkpoint.name, "sizeInBytes": 1,
                                                   "modificationTime": 0}}))

    def no_listing(storage):
        raise AssertionError("listed the log although _last_checkpoint names the checkpoint")

    monkeypatch.setattr(table_mod, "list_log", no_listing)
    assert_same_rows(lf.Table(str(tmp_path)).to_arrow(), expected)


def test_v2_checkpoint_with_a_missing_sidecar_is_corrupt_log(tmp_path):
    v2_table(tmp_path, "json")
    next((tmp_path / "_delta_log" / "_sidecars").iterdir()).unlink()
    with pytest.raises(lf.CorruptLogError, match=r"sidecar .* which is missing"):
        lf.Table(str(tmp_path))  # the commits it summarised are gone too: no fallback


def test_corpus_v2_table_from_its_checkpoint_alone(tmp_path):
    root = tmp_path / "t"
    shutil.copytree(CORPUS / "tables" / "checkpoint-v2-table", root)
    for v in range(8):
        (root / "_delta_log" / f"{v:020d}.json").unlink()
    expected = pq.read_table(CORPUS / "expected" / "checkpoint-v2-table" / "v9.parquet")
    for last in (True, False):
        if not last:
            (root / "_delta_log" / "_last_checkpoint").unlink()
        t = lf.Table(str(root))
        assert t.version == 9
        assert_table_equal(t.to_arrow(), expected.cast(t.schema))
        assert t.snapshot(version=8).num_rows == 43


# ---- what stays refused --------------------------------------------------------------------


def test_unknown_reader_feature_is_refused(tmp_path):
    log = Log(tmp_path, [field("a", "long")], {"minReaderVersion": 3, "minWriterVersion": 7,
                                               "readerFeatures": ["deletionVectors", "variantShredding"],
                                               "writerFeatures": ["deletionVectors", "variantShredding"]})
    log.commit({"add": log.data("f.parquet", pa.table({"a": pa.array([1], pa.int64())}))})
    with pytest.raises(lf.UnsupportedFeatureError, match="variantShredding"):
        lf.Table(str(tmp_path))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


WRITES: dict[str, Any] = {
    "append": lambda t: t.append(t.to_arrow()),
    "merge": lambda t: t.merge(t.to_arrow(), on=t.schema.names[0]),
    "delete": lambda t: t.delete(pc.field(t.schema.names[0]).is_valid()),
    "compact": lambda t: t.compact(),
    "vacuum": lambda t: t.vacuum(retention=dt.timedelta(0), enforce_retention=False),
    "checkpoint": lambda t: t.checkpoint(),
    "cleanup_log": lambda t: t.cleanup_log(retention=dt.timedelta(0)),
}


# Deletion vectors: test_dv_writes.py; column mapping: test_column_mapping_writes.py.
@pytest.mark.parametrize("name", ["checkpoint-v2-table"])
@pytest.mark.parametrize("write", sorted(WRITES))
def test_tables_with_these_features_are_never_written(tmp_path, name, write):
    root = tmp_path / name
    shutil.copytree(CORPUS / "tables" / name, root)
    before = _files(root)
    t = lf.Table(str(root))
    with pytest.raises(lf.UnsupportedFeatureError, match=r"read-only|writer version"):
        WRITES[write](t)
    assert _files(root) == before


@pytest.mark.parametrize("name", ["table-with-dv-small", "table_with_column_mapping", "checkpoint-v2-table"])
def test_corpus_tables_read_on_every_backend(table_uri, name):
    copy_table(CORPUS / "tables" / name, table_uri)
    t = lf.Table(table_uri)
    expected = pq.read_table(CORPUS / "expected" / name / f"v{t.version}.parquet")
    assert_table_equal(t.to_arrow(), expected.cast(t.schema))
    assert_table_equal(t.diff(-1).added, expected.cast(t.schema))
