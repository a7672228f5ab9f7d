"""Delta schema JSON <-> Arrow schema, and the casts lakeflow allows on write."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pyarrow as pa

from lakeflow.errors import SchemaMismatchError, UnsupportedFeatureError

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
        if t == "variant":
            raise UnsupportedFeatureError("the Delta 'variant' type (feature variantType) is not supported yet")
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
