"""Delta schema JSON <-> Arrow schema, and the casts lakeflow allows on write."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pyarrow as pa

from lakeflow.errors import SchemaMismatchError, UnsupportedFeatureError
from lakeflow.variant import VARIANT_TYPE

_PRIMITIVE_TO_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "short": pa.int16(),
    "byte": pa.int8(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "timestamp_ntz": pa.timestamp("us"),
    "void": pa.null(),
}
_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(-?\d+)\s*\)")


def _type_to_arrow(t: Any) -> pa.DataType:
    if isinstance(t, str):
        if t in _PRIMITIVE_TO_ARROW:
            return _PRIMITIVE_TO_ARROW[t]
        m = _DECIMAL.fullmatch(t)
        if m:
            return pa.decimal128(int(m.group(1)), int(m.group(2)))
        if t == "variant":  # unshredded: the Parquet Variant struct (lakeflow.variant)
            return VARIANT_TYPE
        raise UnsupportedFeatureError(f"unknown Delta data type {t!r}")
    kind = t.get("type")
    if kind == "struct":
        return pa.struct([_field_to_arrow(f) for f in t["fields"]])
    if kind == "array":
        return pa.list_(pa.field("element", _type_to_arrow(t["elementType"]),
                                 nullable=bool(t.get("containsNull", True))))
    if kind == "map":
        return pa.map_(_type_to_arrow(t["keyType"]),
                       pa.field("value", _type_to_arrow(t["valueType"]),
                                nullable=bool(t.get("valueContainsNull", True))))
    raise UnsupportedFeatureError(f"unknown Delta data type {t!r}")


def _field_to_arrow(f: dict[str, Any]) -> pa.Field:
    return pa.field(f["name"], _type_to_arrow(f["type"]), nullable=bool(f.get("nullable", True)))


@functools.lru_cache(maxsize=256)
def delta_to_arrow(schema_string: str) -> pa.Schema:
    """Convert a Delta `schemaString` to an Arrow schema (cached: schemas rarely change)."""
    parsed = json.loads(schema_string)
    return pa.schema([_field_to_arrow(f) for f in parsed.get("fields", [])])


def delta_fields(schema_string: str) -> list[dict[str, Any]]:
    """The top-level fields of a Delta `schemaString`, as decoded JSON."""
    fields: list[dict[str, Any]] = json.loads(schema_string).get("fields", [])
    return fields


def _type_to_delta(t: pa.DataType, name: str) -> Any:
    if pa.types.is_dictionary(t):
        return _type_to_delta(t.value_type, name)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t) \
            or pa.types.is_fixed_size_binary(t):
        return "binary"
    simple = {pa.int64(): "long", pa.int32(): "integer", pa.int16(): "short", pa.int8(): "byte",
              pa.uint8(): "short", pa.uint16(): "integer", pa.uint32(): "long",
              pa.float32(): "float", pa.float64(): "double", pa.bool_(): "boolean",
              pa.date32(): "date", pa.date64(): "date"}
    if t in simple:
        return simple[t]
    if pa.types.is_timestamp(t):
        return "timestamp" if t.tz is not None else "timestamp_ntz"
    if pa.types.is_decimal(t):
        if t.precision > 38:
            raise SchemaMismatchError(f"column {name!r}: Delta decimals have at most 38 digits")
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_struct(t):
        return {"type": "struct", "fields": [_field_to_delta(t.field(i), f"{name}.")
                                             for i in range(t.num_fields)]}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) \
            or pa.types.is_fixed_size_list(t):
        return {"type": "array", "elementType": _type_to_delta(t.value_type, name),
                "containsNull": t.value_field.nullable}
    if pa.types.is_map(t):
        return {"type": "map", "keyType": _type_to_delta(t.key_type, name),
                "valueType": _type_to_delta(t.item_type, name),
                "valueContainsNull": t.item_field.nullable}
    if pa.types.is_null(t):
        raise SchemaMismatchError(
            f"column {name!r} has Arrow type null (all values missing, no type); cast it to "
            "the intended type before writing"
        )
    raise SchemaMismatchError(
        f"column {name!r} has Arrow type {t}, which Delta cannot store; cast it to a "
        "Delta type (e.g. uint64 -> int64 or decimal, time -> string, duration -> int64)"
    )


def _field_to_delta(f: pa.Field, prefix: str = "") -> dict[str, Any]:
    return {"name": f.name, "type": _type_to_delta(f.type, prefix + f.name),
            "nullable": f.nullable, "metadata": {}}


def arrow_to_delta(schema: pa.Schema) -> str:
    """Convert an Arrow schema to a Delta `schemaString`.

    Raises:
        SchemaMismatchError: a column has a type Delta cannot store, or names clash.
    """
    seen: dict[str, str] = {}
    for name in schema.names:
        if not isinstance(name, str) or not name:
            raise SchemaMismatchError("column names must be non-empty strings")
        low = name.lower()
        if low in seen:
            raise SchemaMismatchError(
                f"columns {seen[low]!r} and {name!r} differ only by case; Delta column "
                "names must be unique regardless of case"
            )
        seen[low] = name
    return json.dumps({"type": "struct", "fields": [_field_to_delta(f) for f in schema]},
                      separators=(",", ":"))


def extend_schema_string(schema_string: str, schema: pa.Schema) -> str:
    """The `schemaString` of `schema`, an evolution of `schema_string` that adds columns.

    The existing fields are kept as they are, with their metadata (invariants,
    generation expressions, column mapping); only the new ones are converted.

    Raises:
        SchemaMismatchError: a new column has a type Delta cannot store.
    """
    old = delta_fields(schema_string)
    new = json.loads(arrow_to_delta(schema))["fields"]
    return json.dumps({"type": "struct", "fields": old + new[len(old):]}, separators=(",", ":"))


def canonical(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema lakeflow reads back for data written with `schema`."""
    return delta_to_arrow(arrow_to_delta(schema))


def uses_timestamp_ntz(schema: pa.Schema) -> bool:
    """Whether any column (at any depth) is a timestamp without time zone."""
    return '"timestamp_ntz"' in arrow_to_delta(schema)


# Type widening (PROTOCOL.md, Type Widening): the changes a reader must cast old files through.
_INTEGERS = ("byte", "short", "integer", "long")
TYPE_CHANGE_KEY = "delta.typeChanges"


def _decimal_of(t: str) -> tuple[int, int] | None:
    m = _DECIMAL.fullmatch(t)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_supported_widening(from_type: str, to_type: str) -> bool:
    """Whether Delta's type widening allows changing `from_type` to `to_type`."""
    if from_type in _INTEGERS and to_type in _INTEGERS:
        return _INTEGERS.index(from_type) < _INTEGERS.index(to_type)
    if to_type == "double":
        return from_type in ("float", "byte", "short", "integer")
    if (from_type, to_type) == ("date", "timestamp_ntz"):
        return True
    target = _decimal_of(to_type)
    if target is None:
        return False
    source = _decimal_of(from_type)
    if source is None and from_type in _INTEGERS:  # an integer is a decimal of scale 0
        source = (20 if from_type == "long" else 10, 0)
    if source is None:
        return False
    k1, k2 = target[0] - source[0], target[1] - source[1]
    return k1 >= k2 >= 0


def _type_changes(fields: list[dict[str, Any]], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every `delta.typeChanges` entry of `fields` and their nested fields, with the field's path."""
    out = []
    for f in fields:
        name = prefix + str(f.get("name"))
        changes = (f.get("metadata") or {}).get(TYPE_CHANGE_KEY) or []
        out += [(name, c) for c in changes if isinstance(c, dict)]
        stack = [f.get("type")]
        while stack:  # structs anywhere under the field: arrays' elements, maps' keys and values
            t = stack.pop()
            if isinstance(t, dict):
                if t.get("type") == "struct":
                    out += _type_changes(t.get("fields") or [], name + ".")
                else:
                    stack += [t.get("elementType"), t.get("keyType"), t.get("valueType")]
    return out


def check_type_changes(schema_string: str) -> None:
    """Refuse a schema that records a type change lakeflow cannot cast old files through.

    Raises:
        UnsupportedFeatureError: naming the column and the change.
    """
    for name, change in _type_changes(delta_fields(schema_string)):
        old, new = change.get("fromType"), change.get("toType")
        if not (isinstance(old, str) and isinstance(new, str) and is_supported_widening(old, new)):
            where = f"{name}.{change['fieldPath']}" if change.get("fieldPath") else name
            raise UnsupportedFeatureError(
                f"column {where!r} changed type from {old!r} to {new!r}, which is not a type "
                "widening lakeflow can read (PROTOCOL.md, Type Widening); read it with Spark"
            )


def widened_from(schema_string: str) -> dict[str, tuple[str, ...]]:
    """Top-level columns whose own type was widened: name -> the types it had before."""
    return {str(f["name"]): tuple(str(c.get("fromType")) for c in changes if not c.get("fieldPath"))
            for f in delta_fields(schema_string)
            if (changes := (f.get("metadata") or {}).get(TYPE_CHANGE_KEY))}


def _widens(old: pa.DataType, new: pa.DataType) -> bool:
    try:
        before, after = _type_to_delta(old, "?"), _type_to_delta(new, "?")
    except SchemaMismatchError:
        return False
    # Nested types are left to pyarrow's permissive unification.
    return isinstance(before, str) and isinstance(after, str) and is_supported_widening(before, after)


def widen_to_newest(schemas: list[pa.Schema]) -> list[pa.Schema]:
    """`schemas` (newest first), older columns in a type the newest widened taking the newest type.

    Rows of files from before a type widening then share one type with the newer rows.
    """
    if not schemas:
        return schemas
    newest = schemas[0]

    def widened(f: pa.Field) -> pa.Field:
        i = newest.get_field_index(f.name)
        if i < 0 or f.type == newest.field(i).type:
            return f
        return f.with_type(newest.field(i).type) if _widens(f.type, newest.field(i).type) else f

    return [newest, *(s if s.types == newest.types else pa.schema([widened(f) for f in s])
                      for s in schemas[1:])]
