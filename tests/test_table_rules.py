"""Rules a Delta writer must keep: invariants, CHECK constraints, generated columns,
append-only tables and identity columns (writer versions 2-7, legacy and table-features form).

Tables are made by deltalake where it can, by hand-written logs where it cannot. Each
write lakeflow makes is also made by deltalake on a copy of the same table: where
deltalake refuses, lakeflow refuses (and writes nothing); where it computes values,
lakeflow computes the same ones (read back by deltalake's SQL scan).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.schema import Field, PrimitiveType, Schema

import lakeflow as lf
from lakeflow.log import writer_features
from lakeflow.storage import open_storage
from lakeflow.testing import assert_table_equal, copy_table

from helpers import run_threads
from helpers import sql_scan as _sql_rows

INVARIANT = json.dumps({"expression": {"expression": "dummy < 3"}})


# ---- helpers -----------------------------------------------------------------------------

def _files(uri: str) -> dict[str, bytes]:
    """Every file under the table root (relative path -> bytes), on any backend."""
    fs, root = open_storage(uri).arrow_fs()
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(root):].lstrip("/")] = f.read()
    return out


def _local_copy(uri: str, dst: Path) -> Path:
    for rel, data in _files(uri).items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(data)
    return dst


def _refused_by_deltalake(path: Path, data: pa.Table) -> bool:
    try:
        write_deltalake(str(path), data, mode="append")
    except Exception:  # deltalake's own error types vary by check
        return True
    return False


def _setup(src: Path, uri: str, tmp_path: Path) -> tuple[lf.Table, Path]:
    """Place `src` at `uri` for lakeflow and copy it for deltalake; return both."""
    copy_table(src, uri)
    twin = tmp_path / "deltalake-twin"
    shutil.copytree(src, twin)
    return lf.Table(uri), twin


def _assert_nothing_written(uri: str, before: dict[str, bytes]) -> None:
    after = _files(uri)
    assert sorted(after) == sorted(before), f"new files: {sorted(set(after) - set(before))}"


def _log(path: Path, schema_fields: list[dict[str, Any]], protocol: dict[str, Any],
         configuration: dict[str, str] | None = None) -> Path:
    """Write a one-commit Delta log by hand (for features deltalake cannot create)."""
    (path / "_delta_log").mkdir(parents=True)
    metadata = {"id": "00000000-0000-0000-0000-000000000001", "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps({"type": "struct", "fields": schema_fields}),
                "partitionColumns": [], "configuration": configuration or {}, "createdTime": 0}
    lines = [{"commitInfo": {"timestamp": 0, "operation": "CREATE TABLE"}},
             {"protocol": protocol}, {"metaData": metadata}]
    (path / "_delta_log" / f"{0:020d}.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _field(name: str, kind: str, **metadata: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "nullable": True, "metadata": metadata}


ID_DUMMY = pa.schema([("id", pa.int64()), ("dummy", pa.int32())])
ID_V = pa.schema([("id", pa.int64()), ("v", pa.int64())])
GEN = pa.schema([("id", pa.int64()), ("c1", pa.int32()), ("c2", pa.int32())])


def _rows(schema: pa.Schema, *rows: tuple[Any, ...]) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema)


def _invariant_table(src: Path) -> Path:
    DeltaTable.create(str(src), Schema([
        Field("id", PrimitiveType("long"), True),
        Field("dummy", PrimitiveType("integer"), True, metadata={"delta.invariants": INVARIANT})]))
    write_deltalake(str(src), _rows(ID_DUMMY, (1, 1)), mode="append")
    return src


def _check_table(src: Path) -> Path:
    write_deltalake(str(src), _rows(ID_V, (1, 1), (2, 2)))
    DeltaTable(str(src)).alter.add_constraint({"v_positive": "v > 0"})
    return src


def _generated_table(src: Path) -> Path:
    DeltaTable.create(str(src), Schema([
        Field("id", PrimitiveType("long"), True),
        Field("c1", PrimitiveType("integer"), True),
        Field("c2", PrimitiveType("integer"), True, metadata={"delta.generationExpression": "c1 + 1"})]))
    write_deltalake(str(src), _rows(GEN.remove(2), (1, 10), (2, 20)), mode="append")
    return src


# ---- column invariants (writer version 2) ------------------------------------------------

@pytest.mark.parametrize("bad", [5, None], ids=["false", "null"])
def test_invariant_violation_is_refused_like_deltalake(table_uri, tmp_path, bad):
    t, twin = _setup(_invariant_table(tmp_path / "src"), table_uri, tmp_path)
    assert t.snapshot().protocol.min_writer_version == 2
    before = _files(table_uri)
    data = _rows(ID_DUMMY, (2, 2), (3, bad))
    with pytest.raises(lf.ConstraintViolationError) as e:
        t.append(data)
    assert "dummy < 3" in str(e.value) and "'id': 3" in str(e.value)
    assert _refused_by_deltalake(twin, data)
    _assert_nothing_written(table_uri, before)
    assert lf.Table(table_uri).version == t.version == 1


def test_rows_that_keep_the_invariant_are_written(table_uri, tmp_path):
    t, twin = _setup(_invariant_table(tmp_path / "src"), table_uri, tmp_path)
    data = _rows(ID_DUMMY, (2, 2), (3, -7))
    t.append(data)
    write_deltalake(str(twin), data, mode="append")
    assert_table_equal(_sql_rows(_local_copy(table_uri, tmp_path / "out")), _sql_rows(twin))


# ---- CHECK constraints (writer version 3) ------------------------------------------------

@pytest.mark.parametrize("bad", [-1, None], ids=["false", "null"])
def test_check_constraint_violation_is_refused_like_deltalake(table_uri, tmp_path, bad):
    t, twin = _setup(_check_table(tmp_path / "src"), table_uri, tmp_path)
    assert t.snapshot().protocol.min_writer_version == 3
    before = _files(table_uri)
    data = _rows(ID_V, (3, 3), (4, bad))
    with pytest.raises(lf.ConstraintViolationError) as e:
        t.append(data)
    assert "v_positive" in str(e.value) and "v > 0" in str(e.value) and "'id': 4" in str(e.value)
    assert _refused_by_deltalake(twin, data)
    _assert_nothing_written(table_uri, before)


def test_merge_checks_inserted_and_updated_rows(table_uri, tmp_path):
    t, _ = _setup(_check_table(tmp_path / "src"), table_uri, tmp_path)
    before = _files(table_uri)
    for source in (_rows(ID_V, (9, -9)), _rows(ID_V, (1, -1))):  # an insert, an update
        with pytest.raises(lf.ConstraintViolationError, match="v_positive"):
            t.merge(source, on="id")
    with pytest.raises(lf.ConstraintViolationError, match="v_positive"):
        t.merge(pa.table({"id": pa.array([2], pa.int64())}), on="id",
                when_matched={"v": -pl.col("target.v")})
    _assert_nothing_written(table_uri, before)
    t.merge(_rows(ID_V, (1, 10), (5, 50)), on="id")
    assert_table_equal(_sql_rows(_local_copy(table_uri, tmp_path / "out")),
                       _rows(ID_V, (1, 10), (2, 2), (5, 50)))


def test_check_constraint_on_dates_compares_with_a_string_literal(table_uri, tmp_path):
    # The protocol's own example: Spark casts the string literal to a date.
    schema = pa.schema([("id", pa.int64()), ("birthDate", pa.date32())])
    src = tmp_path / "src"
    write_deltalake(str(src), pa.Table.from_pylist([{"id": 1, "birthDate": pa.scalar(0, pa.date32()).as_py()}], schema))
    DeltaTable(str(src)).alter.add_constraint({"birthDateCheck": "birthDate > '1900-01-01'"})
    t, twin = _setup(src, table_uri, tmp_path)
    old = pa.Table.from_pylist([{"id": 2, "birthDate": pa.scalar(-30000, pa.date32()).as_py()}], schema)
    with pytest.raises(lf.ConstraintViolationError, match="birthDateCheck"):
        t.append(old)
    assert _refused_by_deltalake(twin, old)
    t.append(pa.Table.from_pylist([{"id": 3, "birthDate": pa.scalar(100, pa.date32()).as_py()}], schema))
    assert t.to_arrow().num_rows == 2


# ---- generated columns (writer version 4) ------------------------------------------------

def test_generated_column_is_computed_when_omitted_like_deltalake(table_uri, tmp_path):
    t, twin = _setup(_generated_table(tmp_path / "src"), table_uri, tmp_path)
    assert t.snapshot().protocol.min_writer_version == 4
    for data in (_rows(GEN.remove(2), (3, 30), (4, None)), _rows(GEN, (5, 50, 51))):
        t.append(data)
        write_deltalake(str(twin), data, mode="append")
    ours = _sql_rows(_local_copy(table_uri, tmp_path / "out"))
    assert_table_equal(ours, _sql_rows(twin))
    assert sorted(ours.to_pylist(), key=lambda r: r["id"])[2] == {"id": 3, "c1": 30, "c2": 31}


@pytest.mark.parametrize("bad", [99, None], ids=["other-value", "null"])
def test_generated_column_with_another_value_is_refused_like_deltalake(table_uri, tmp_path, bad):
    t, twin = _setup(_generated_table(tmp_path / "src"), table_uri, tmp_path)
    before = _files(table_uri)
    data = _rows(GEN, (3, 10, 11), (4, 10, bad))
    with pytest.raises(lf.ConstraintViolationError) as e:
        t.append(data)
    assert "c2" in str(e.value) and "c1 + 1" in str(e.value) and "'id': 4" in str(e.value)
    assert _refused_by_deltalake(twin, data)
    _assert_nothing_written(table_uri, before)


def test_merge_computes_generated_columns_of_inserted_and_updated_rows(table_uri, tmp_path):
    t, _ = _setup(_generated_table(tmp_path / "src"), table_uri, tmp_path)
    t.merge(_rows(GEN.remove(2), (1, 100), (3, 300)), on="id")
    assert_table_equal(_sql_rows(_local_copy(table_uri, tmp_path / "out")),
                       _rows(GEN, (1, 100, 101), (2, 20, 21), (3, 300, 301)))
    before = _files(table_uri)
    with pytest.raises(lf.ConstraintViolationError, match="c1 \\+ 1"):
        t.merge(_rows(GEN, (2, 7, 5)), on="id")  # deltalake refuses this update too
    _assert_nothing_written(table_uri, before)


# ---- append-only tables (writer version 2) -----------------------------------------------

def _append_only_table(src: Path) -> Path:
    write_deltalake(str(src), _rows(ID_V, (1, 1), (2, 2)), configuration={"delta.appendOnly": "true"})
    write_deltalake(str(src), _rows(ID_V, (3, 3)), mode="append")
    return src


def test_append_only_refuses_deletes_and_updating_merges_like_deltalake(table_uri, tmp_path):
    t, twin = _setup(_append_only_table(tmp_path / "src"), table_uri, tmp_path)
    before = _files(table_uri)
    with pytest.raises(lf.AppendOnlyError, match=r"delta\.appendOnly"):
        t.delete(pc.field("id") == 1)
    with pytest.raises(lf.AppendOnlyError):
        t.delete(pc.field("id") == 100)  # deltalake refuses a delete matching nothing too
    with pytest.raises(Exception, match="append-only"):
        DeltaTable(str(twin)).delete("id = 100")
    with pytest.raises(Exception, match="append-only"):
        DeltaTable(str(twin)).delete("id = 1")
    with pytest.raises(lf.AppendOnlyError):
        t.merge(_rows(ID_V, (1, 10), (4, 4)), on="id")
    with pytest.raises(lf.AppendOnlyError):
        t.merge(_rows(ID_V, (2, 2)), on="id", when_matched="delete")
    with pytest.raises(lf.AppendOnlyError):
        t.merge(_rows(ID_V, (4, 4)), on="id", when_not_matched_by_source="delete")
    with pytest.raises(Exception, match="append-only"):
        (DeltaTable(str(twin)).merge(_rows(ID_V, (1, 10)), "t.id = s.id", "s", "t")
         .when_matched_update_all().execute())
    _assert_nothing_written(table_uri, before)


def test_append_only_allows_appends_inserting_merges_and_compaction(table_uri, tmp_path):
    t, twin = _setup(_append_only_table(tmp_path / "src"), table_uri, tmp_path)
    t.append(_rows(ID_V, (4, 4)))
    t.merge(_rows(ID_V, (2, 2), (5, 5)), on="id")  # the matched row is unchanged: no remove
    assert t.compact().files_removed >= 2
    write_deltalake(str(twin), _rows(ID_V, (4, 4), (5, 5)), mode="append")
    DeltaTable(str(twin)).optimize.compact()
    assert_table_equal(_sql_rows(_local_copy(table_uri, tmp_path / "out")), _sql_rows(twin))


def test_append_only_is_kept_by_hand_made_transactions(table_uri, tmp_path):
    t, _ = _setup(_append_only_table(tmp_path / "src"), table_uri, tmp_path)
    add = t.snapshot().files[0].add
    with pytest.raises(lf.AppendOnlyError):
        t.transaction("DELETE").add(add.remove(0)).commit()
    assert lf.Table(table_uri).version == 1


# ---- both protocol forms: legacy writer versions and table features ----------------------

RULES_FIELDS = [_field("id", "long"),
                _field("dummy", "integer", **{"delta.invariants": INVARIANT}),
                _field("c1", "integer"),
                _field("c2", "integer", **{"delta.generationExpression": "c1 * 2"})]
RULES_SCHEMA = pa.schema([("id", pa.int64()), ("dummy", pa.int32()), ("c1", pa.int32()),
                          ("c2", pa.int32())])
RULES_CONFIG = {"delta.constraints.id_small": "id < 100"}


@pytest.mark.parametrize("protocol", [
    {"minReaderVersion": 1, "minWriterVersion": 4},
    {"minReaderVersion": 1, "minWriterVersion": 7,
     "writerFeatures": ["invariants", "checkConstraints", "generatedColumns"]},
    {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": [],
     "writerFeatures": ["invariants", "checkConstraints", "generatedColumns", "appendOnly"]},
], ids=["writer-4", "features", "reader-3-features"])
def test_rules_hold_in_both_protocol_forms(table_uri, tmp_path, protocol):
    src = _log(tmp_path / "src", RULES_FIELDS, protocol, RULES_CONFIG)
    t, twin = _setup(src, table_uri, tmp_path)
    before = _files(table_uri)
    bad = [_rows(RULES_SCHEMA, (1, 5, 1, 2)), _rows(RULES_SCHEMA, (100, 1, 1, 2)),
           _rows(RULES_SCHEMA, (1, 1, 1, 3))]
    for data in bad:
        with pytest.raises(lf.ConstraintViolationError):
            t.append(data)
        assert _refused_by_deltalake(twin, data)
    _assert_nothing_written(table_uri, before)
    good = _rows(RULES_SCHEMA.remove(3), (1, 1, 4), (2, 2, None))
    t.append(good)
    write_deltalake(str(twin), good, mode="append")
    assert_table_equal(_sql_rows(_local_copy(table_uri, tmp_path / "out")), _sql_rows(twin))


@pytest.mark.parametrize("expression", ["date_format(ts, 'yyyy') = '2024'", "ID > 0", "id DIV 2 > 0",
                                        "sum(id) > 0", "id + 1"])
def test_expressions_polars_sql_cannot_evaluate_are_refused_before_writing(table_uri, tmp_path,
                                                                           expression):
    protocol = {"minReaderVersion": 1, "minWriterVersion": 3}
    src = _log(tmp_path / "src", [_field("id", "long"), _field("ts", "timestamp")], protocol,
               {"delta.constraints.in_2024": expression})
    t, _ = _setup(src, table_uri, tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match="in_2024") as e:
        t.append({"id": pa.array([1, 2], pa.int64()), "ts": pa.array([0, 0], pa.timestamp("us", "UTC"))})
    assert expression in str(e.value)
    assert _files(table_uri).keys() == {f"_delta_log/{0:020d}.json"}


def test_invariants_of_nested_fields_are_enforced(table_uri, tmp_path):
    nested = {"type": "struct", "fields": [
        _field("x", "integer", **{"delta.invariants": json.dumps({"expression": {"expression": "s.x < 3"}})})]}
    src = _log(tmp_path / "src", [_field("id", "long"), {"name": "s", "type": nested, "nullable": True,
                                                         "metadata": {}}],
               {"minReaderVersion": 1, "minWriterVersion": 2})
    t, twin = _setup(src, table_uri, tmp_path)
    schema = pa.schema([("id", pa.int64()), ("s", pa.struct([("x", pa.int32())]))])
    bad = pa.Table.from_pylist([{"id": 1, "s": {"x": 1}}, {"id": 2, "s": {"x": 7}}], schema)
    with pytest.raises(lf.ConstraintViolationError, match=r"s\.x < 3"):
        t.append(bad)
    assert _refused_by_deltalake(twin, bad)
    t.append(bad.slice(0, 1))
    assert t.to_arrow().num_rows == 1


@pytest.mark.parametrize("expression", ["concat(name, '!') = 'a!'", "round(x) = 3"])
def test_functions_whose_polars_semantics_differ_from_spark_are_refused(table_uri, tmp_path,
                                                                        expression):
    src = _log(tmp_path / "src", [_field("name", "string"), _field("x", "double")],
               {"minReaderVersion": 1, "minWriterVersion": 3}, {"delta.constraints.c": expression})
    t, _ = _setup(src, table_uri, tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match="Spark"):
        t.append({"name": ["a"], "x": [2.5]})


# ---- identity columns (writer version 6, identityColumns) and features still refused -----

IDENTITY_FEATURES = {"minReaderVersion": 1, "minWriterVersion": 7, "writerFeatures": ["identityColumns"]}
ID_ROWS = pa.schema([("id", pa.int64()), ("v", pa.int64())])


def _identity_table(src: Path, protocol: dict[str, Any] = IDENTITY_FEATURES, **identity: Any) -> Path:
    meta = {"delta.identity.start": 1, "delta.identity.step": 1,
            "delta.identity.allowExplicitInsert": False}
    meta.update({f"delta.identity.{k}": v for k, v in identity.items()})
    return _log(src, [{"name": "id", "type": "long", "nullable": True, "metadata": meta},
                      _field("v", "long")], protocol)


def _values(n: int, start: int = 0) -> dict[str, pa.Array]:
    return {"v": pa.array(range(start, start + n), pa.int64())}


def _high_water_mark(uri: str, tmp_path: Path) -> Any:
    out = _local_copy(uri, tmp_path / f"mark-{lf.Table(uri).version}")
    field = next(f for f in DeltaTable(str(out)).schema().fields if f.name == "id")
    return field.metadata.get("delta.identity.highWaterMark")


@pytest.mark.parametrize(("identity", "expected"), [
    ({}, [1, 2, 3, 4, 5]),
    ({"start": 10, "step": 5}, [10, 15, 20, 25, 30]),
    ({"start": 1, "step": 3, "highWaterMark": 5}, [7, 10, 13, 16, 19]),  # on the step grid
    ({"start": -1, "step": -1, "highWaterMark": -7}, [-8, -9, -10, -11, -12]),
], ids=["default", "start-step", "after-mark", "negative-step"])
def test_identity_values_are_generated_past_the_high_water_mark(table_uri, tmp_path, identity,
                                                                expected):
    t, _ = _setup(_identity_table(tmp_path / "src", **identity), table_uri, tmp_path)
    t.append(_values(3))
    assert _high_water_mark(table_uri, tmp_path) == expected[2]
    t.append(_values(2, start=3))
    assert _high_water_mark(table_uri, tmp_path) == expected[4]
    rows = _sql_rows(_local_copy(table_uri, tmp_path / "out"))
    assert sorted(zip(rows.column("v").to_pylist(), rows.column("id").to_pylist(), strict=True)) == \
        list(enumerate(expected))


def test_identity_values_given_explicitly_are_refused_unless_allowed(table_uri, tmp_path):
    t, _ = _setup(_identity_table(tmp_path / "src"), table_uri, tmp_path)
    before = _files(table_uri)
    with pytest.raises(lf.ConstraintViolationError, match="allowExplicitInsert"):
        t.append(_rows(ID_ROWS, (100, 1)))
    _assert_nothing_written(table_uri, before)


def test_explicit_identity_values_move_the_high_water_mark(table_uri, tmp_path):
    t, _ = _setup(_identity_table(tmp_path / "src", allowExplicitInsert=True), table_uri, tmp_path)
    t.append(_rows(ID_ROWS, (100, 1)))
    assert _high_water_mark(table_uri, tmp_path) == 100
    t.append(_values(1, start=2))  # generated past the explicit value: never a duplicate
    assert sorted(t.to_arrow().column("id").to_pylist()) == [100, 101]


def test_merge_generates_identity_values_for_inserts_only(table_uri, tmp_path):
    src = _log(tmp_path / "src", [
        {"name": "id", "type": "long", "nullable": True,
         "metadata": {"delta.identity.start": 1, "delta.identity.step": 1,
                      "delta.identity.allowExplicitInsert": False}},
        _field("k", "string"), _field("v", "long")], IDENTITY_FEATURES)
    t, _ = _setup(src, table_uri, tmp_path)
    t.append({"k": ["a", "b"], "v": pa.array([1, 2], pa.int64())})
    t.merge({"k": ["b", "c"], "v": pa.array([20, 30], pa.int64())}, on="k",
            when_matched={"v": pl.col("source.v")})
    rows = _sql_rows(_local_copy(table_uri, tmp_path / "out"))
    assert sorted(zip(rows.column("k").to_pylist(), rows.column("id").to_pylist(),
                      rows.column("v").to_pylist(), strict=True)) == [("a", 1, 1), ("b", 2, 20),
                                                                     ("c", 3, 30)]
    assert _high_water_mark(table_uri, tmp_path) == 3


def test_identity_columns_on_writer_version_6_are_written(table_uri, tmp_path):
    # Writer version 6 implies column mapping (version 5) too, which lakeflow writes.
    src = _identity_table(tmp_path / "src", {"minReaderVersion": 1, "minWriterVersion": 6})
    t, _ = _setup(src, table_uri, tmp_path)
    t.append(_values(3))
    assert sorted(t.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert _high_water_mark(table_uri, tmp_path) == 3


def test_column_defaults_stay_refused(table_uri, tmp_path):
    src = _log(tmp_path / "src", [_field("id", "long"), _field("v", "long", CURRENT_DEFAULT="42")],
               {"minReaderVersion": 1, "minWriterVersion": 7, "writerFeatures": ["allowColumnDefaults"]})
    t, _ = _setup(src, table_uri, tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match="allowColumnDefaults"):
        t.append({"id": pa.array([1], pa.int64())})


# ---- rules survive schema evolution ------------------------------------------------------

def test_schema_evolution_keeps_the_rules(table_uri, tmp_path):
    t, _ = _setup(_invariant_table(tmp_path / "src"), table_uri, tmp_path)
    t.append(pa.table({"id": pa.array([2], pa.int64()), "dummy": pa.array([2], pa.int32()),
                       "extra": ["x"]}), schema_mode="merge")
    out = _local_copy(table_uri, tmp_path / "out")
    fields = {f.name: f for f in DeltaTable(str(out)).schema().fields}
    assert fields["dummy"].metadata == {"delta.invariants": INVARIANT}
    with pytest.raises(lf.ConstraintViolationError):
        lf.Table(table_uri).append(_rows(ID_DUMMY, (3, 9)))
    assert _refused_by_deltalake(out, _rows(ID_DUMMY, (3, 9)))



# ---- lakeflow's own tables: constraints at create, protocols that keep every feature -----

def test_constraints_declared_at_create_are_enforced_by_both(local_uri, tmp_path):
    t = lf.Table.create(local_uri, ID_V, properties={"delta.constraints.v_positive": "v > 0",
                                                     "delta.enableChangeDataFeed": "false"})
    assert "checkConstraints" in writer_features(t.snapshot().protocol)
    with pytest.raises(lf.ConstraintViolationError):
        t.append(_rows(ID_V, (1, -1)))
    assert _refused_by_deltalake(Path(local_uri), _rows(ID_V, (1, -1)))
    with pytest.raises(lf.UnsupportedFeatureError, match="bad"):
        lf.Table.create(str(tmp_path / "other"), ID_V,
                        properties={"delta.constraints.bad": "v DIV 2 > 0"})
    assert not (tmp_path / "other").exists()


def test_schema_evolution_to_table_features_keeps_every_legacy_feature(table_uri, tmp_path):
    t, _ = _setup(_generated_table(tmp_path / "src"), table_uri, tmp_path)
    assert t.snapshot().protocol.min_writer_version == 4
    t.append(pa.table({"id": pa.array([3], pa.int64()), "c1": pa.array([30], pa.int32()),
                       "at": pa.array([0], pa.timestamp("us"))}), schema_mode="merge")
    protocol = lf.Table(table_uri).snapshot().protocol
    assert protocol.min_writer_version == 7
    assert {"generatedColumns", "checkConstraints", "invariants", "appendOnly",
            "timestampNtz"} <= writer_features(protocol)
    out = _local_copy(table_uri, tmp_path / "out")
    bad = pa.table({"id": pa.array([4], pa.int64()), "c1": pa.array([1], pa.int32()),
                    "c2": pa.array([5], pa.int32()), "at": pa.array([0], pa.timestamp("us"))})
    assert _refused_by_deltalake(out, bad)
    assert sorted(_sql_rows(out).column("c2").to_pylist()) == [11, 21, 31]


def test_concurrent_appends_never_share_identity_values(table_uri, tmp_path):

    copy_table(_identity_table(tmp_path / "src"), table_uri)
    committed: list[int] = []

    def writer(n: int) -> None:
        t = lf.Table(table_uri)
        for i in range(4):
            try:
                t.append(_values(3, start=100 * n + 10 * i))
                committed.append(3)
            except lf.CommitConflictError:
                pass  # the other writer moved the high-water mark first

    run_threads(writer, [(n,) for n in range(2)])
    ids = lf.Table(table_uri).to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(1, sum(committed) + 1))
    assert _high_water_mark(table_uri, tmp_path) == sum(committed)
