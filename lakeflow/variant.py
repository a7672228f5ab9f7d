"""Delta `variant` columns: the Parquet Variant binary encoding, decoded to JSON text.

A variant column reads as a struct of two binaries, `metadata` (a dictionary of the
object keys) and `value` (the encoded value), as the Parquet Variant spec
(apache/parquet-format, VariantEncoding.md) stores it and deltalake returns it.
`variant_to_json` turns such a column into JSON strings.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import struct
import uuid
from collections.abc import Callable

import pyarrow as pa

from lakeflow.civil import civil_from_days
from lakeflow.errors import CorruptLogError, InvalidArgumentError, UnsupportedFeatureError

# How Delta's `variant` type reads from an unshredded file. deltalake declares both
# binaries non-null; here they are nullable, so pyarrow can build and cast all-null
# columns of it (a struct row that is null has null children).
VARIANT_TYPE = pa.struct([pa.field("metadata", pa.binary()), pa.field("value", pa.binary())])
# Deeper values are refused rather than exhausting Python's stack.
MAX_DEPTH = 256
_MICROS_PER_DAY = 86_400_000_000


class _Malformed(Exception):
    """A variant's bytes break the encoding; turned into CorruptLogError naming the row."""


def _uint(data: bytes, pos: int, size: int, end: int) -> int:
    if pos + size > end:
        raise _Malformed(f"ends at byte {end}, reading {size} byte(s) at {pos}")
    return int.from_bytes(data[pos:pos + size], "little")


def _take(data: bytes, pos: int, size: int, end: int) -> bytes:
    if size < 0 or pos + size > end:
        raise _Malformed(f"ends at byte {end}, reading {size} byte(s) at {pos}")
    return data[pos:pos + size]


def metadata_keys(metadata: bytes) -> list[str]:
    """The dictionary of a variant `metadata` binary: the strings field ids index.

    Raises:
        CorruptLogError: the bytes are not a valid variant metadata.
        UnsupportedFeatureError: the metadata has a version other than 1.
    """
    try:
        return _keys(metadata)
    except (_Malformed, UnicodeDecodeError) as e:
        raise CorruptLogError(f"a variant metadata value is malformed: {e}") from None


def _keys(metadata: bytes) -> list[str]:
    end = len(metadata)
    header = _uint(metadata, 0, 1, end)
    if header & 0x0F != 1:
        raise UnsupportedFeatureError(
            f"variant metadata version {header & 0x0F} is not supported (only version 1)")
    size = (header >> 6) + 1
    count = _uint(metadata, 1, size, end)
    offsets = [_uint(metadata, 1 + size * (i + 1), size, end) for i in range(count + 1)]
    base = 1 + size * (count + 2)
    if offsets[0] != 0 or any(a > b for a, b in itertools.pairwise(offsets)) \
            or base + offsets[-1] > end:
        raise _Malformed("dictionary offsets are out of order or past the end")
    return [metadata[base + a:base + b].decode("utf-8")
            for a, b in itertools.pairwise(offsets)]


def _civil(days: int) -> str:
    """The proleptic Gregorian date `days` after 1970-01-01, any year, as ISO text."""
    year, month, day = civil_from_days(days)
    text = f"{year:04d}" if 0 <= year <= 9999 else f"{year:+05d}"
    return f"{text}-{month:02d}-{day:02d}"


def _clock(units: int, per_second: int) -> str:
    """`units` since midnight as HH:MM:SS, with the fraction of a second when not zero."""
    seconds, frac = divmod(units, per_second)
    minutes, s = divmod(seconds, 60)
    text = f"{minutes // 60:02d}:{minutes % 60:02d}:{s:02d}"
    if frac:
        text += "." + f"{frac:0{len(str(per_second)) - 1}d}".rstrip("0")
    return text


def _timestamp(units: int, per_second: int, utc: bool) -> str:
    per_day = per_second * 86_400
    days, rest = divmod(units, per_day)
    return f"{_civil(days)} {_clock(rest, per_second)}" + ("+00:00" if utc else "")


def _number(x: float) -> str:
    # JSON has no NaN or infinities: they become strings.
    if math.isnan(x):
        return '"NaN"'
    if math.isinf(x):
        return '"Infinity"' if x > 0 else '"-Infinity"'
    return repr(x)


def _float32(raw: bytes) -> str:
    """The shortest decimal that reads back as the float32 `raw`."""
    (x,) = struct.unpack("<f", raw)
    if math.isnan(x) or math.isinf(x):
        return _number(x)
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if struct.pack("<f", float(text)) == raw:
            return repr(float(text))
    return repr(x)


def _decimal(data: bytes, pos: int, size: int, end: int) -> str:
    scale = _uint(data, pos, 1, end)
    if scale > 38:
        raise _Malformed(f"decimal scale {scale} is above 38")
    unscaled = int.from_bytes(_take(data, pos + 1, size, end), "little", signed=True)
    digits = str(abs(unscaled)).rjust(scale + 1, "0")  # exact: no decimal context rounds it
    text = f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits
    return "-" + text if unscaled < 0 else text


def _signed(fmt: str) -> Callable[[bytes, int, int], str]:
    size = struct.calcsize(fmt)
    return lambda data, pos, end: str(struct.unpack(fmt, _take(data, pos, size, end))[0])


def _fixed(size: int, text: Callable[[int], str]) -> Callable[[bytes, int, int], str]:
    return lambda data, pos, end: text(int.from_bytes(_take(data, pos, size, end), "little", signed=True))


def _sized(text: Callable[[bytes], str]) -> Callable[[bytes, int, int], str]:
    return lambda data, pos, end: text(_take(data, pos + 4, _uint(data, pos, 4, end), end))


# Primitive type id -> JSON text of its value_data (the bytes after the header byte).
_PRIMITIVES: dict[int, Callable[[bytes, int, int], str]] = {
    0: lambda data, pos, end: "null",
    1: lambda data, pos, end: "true",
    2: lambda data, pos, end: "false",
    3: _signed("<b"), 4: _signed("<h"), 5: _signed("<i"), 6: _signed("<q"),
    7: lambda data, pos, end: _number(struct.unpack("<d", _take(data, pos, 8, end))[0]),
    8: lambda data, pos, end: _decimal(data, pos, 4, end),
    9: lambda data, pos, end: _decimal(data, pos, 8, end),
    10: lambda data, pos, end: _decimal(data, pos, 16, end),
    11: _fixed(4, lambda d: f'"{_civil(d)}"'),
    12: _fixed(8, lambda u: f'"{_timestamp(u, 1_000_000, True)}"'),
    13: _fixed(8, lambda u: f'"{_timestamp(u, 1_000_000, False)}"'),
    14: lambda data, pos, end: _float32(_take(data, pos, 4, end)),
    15: _sized(lambda b: f'"{base64.b64encode(b).decode()}"'),
    16: _sized(lambda b: json.dumps(b.decode("utf-8"), ensure_ascii=False)),
    17: _fixed(8, lambda u: f'"{_clock(u, 1_000_000)}"'),
    18: _fixed(8, lambda u: f'"{_timestamp(u, 1_000_000_000, True)}"'),
    19: _fixed(8, lambda u: f'"{_timestamp(u, 1_000_000_000, False)}"'),
    20: lambda data, pos, end: f'"{uuid.UUID(bytes=_take(data, pos, 16, end))}"',
}


def _json(data: bytes, pos: int, end: int, keys: list[str], depth: int) -> str:
    """The JSON text of the variant value encoded at `data[pos:end]`."""
    if depth > MAX_DEPTH:
        raise UnsupportedFeatureError(f"a variant value nests deeper than {MAX_DEPTH} levels")
    header = _uint(data, pos, 1, end)
    basic, info = header & 3, header >> 2
    if basic == 0:
        decode = _PRIMITIVES.get(info)
        if decode is None:
            raise UnsupportedFeatureError(
                f"variant primitive type {info} is not in the Parquet Variant spec lakeflow knows")
        return decode(data, pos + 1, end)
    if basic == 1:  # short string: the length is in the header
        return json.dumps(_take(data, pos + 1, info, end).decode("utf-8"), ensure_ascii=False)
    large = (info >> (4 if basic == 2 else 2)) & 1
    id_size = ((info >> 2) & 3) + 1 if basic == 2 else 0
    offset_size = (info & 3) + 1
    count_size = 4 if large else 1
    count = _uint(data, pos + 1, count_size, end)
    ids_at = pos + 1 + count_size
    offsets_at = ids_at + count * id_size
    fields_at = offsets_at + (count + 1) * offset_size
    offsets = [_uint(data, offsets_at + i * offset_size, offset_size, end) for i in range(count + 1)]
    fields_end = fields_at + offsets[-1]
    if fields_end > end or any(o >= offsets[-1] for o in offsets[:-1]):
        raise _Malformed("a field offset points past the end of the value")
    items = []
    for i in range(count):  # a loop, not a comprehension: one stack frame per level
        items.append(_json(data, fields_at + offsets[i], fields_end, keys, depth + 1))
    if basic == 3:
        return "[" + ",".join(items) + "]"
    names = []
    for i in range(count):
        key_id = _uint(data, ids_at + i * id_size, id_size, end)
        if key_id >= len(keys):
            raise _Malformed(f"field id {key_id} is not in the metadata's {len(keys)} keys")
        names.append(keys[key_id])
    if len(set(names)) != len(names):
        raise _Malformed("an object has two fields of the same name")
    return "{" + ",".join(f"{json.dumps(n, ensure_ascii=False)}:{v}"
                          for n, v in zip(names, items, strict=True)) + "}"


def decode_json(metadata: bytes, value: bytes, keys: list[str] | None = None) -> str:
    """The JSON text of one variant (its `metadata` and `value` binaries).

    Args:
        metadata: the variant's metadata binary.
        value: its value binary.
        keys: `metadata_keys(metadata)`, when the caller has decoded them already.

    Raises:
        CorruptLogError: the bytes break the Parquet Variant encoding.
        UnsupportedFeatureError: a metadata version or primitive type the spec does
            not define (yet), or nesting deeper than `MAX_DEPTH`.
    """
    keys = metadata_keys(metadata) if keys is None else keys
    try:
        return _json(value, 0, len(value), keys, 0)
    except (_Malformed, UnicodeDecodeError, struct.error) as e:
        raise CorruptLogError(f"a variant value is malformed: {e}") from None


def _check_variant_type(typ: pa.DataType) -> None:
    names = [typ.field(i).name for i in range(typ.num_fields)] if pa.types.is_struct(typ) else []
    if "typed_value" in names:
        raise UnsupportedFeatureError(
            "the column holds shredded variants (a typed_value field, feature variantShredding), "
            "which lakeflow cannot decode yet; read it with Spark or Databricks")
    binary = (pa.binary(), pa.large_binary(), pa.binary_view())
    if sorted(names) != ["metadata", "value"] or any(typ.field(n).type not in binary for n in names):
        raise InvalidArgumentError(
            f"variant_to_json needs a variant column (struct<metadata: binary, value: binary>), not {typ}")


def _chunk_to_json(chunk: pa.StructArray) -> pa.Array:
    rows = zip(chunk.is_valid().to_pylist(), chunk.field("metadata").to_pylist(),
               chunk.field("value").to_pylist(), strict=True)
    dictionaries: dict[bytes, list[str]] = {}  # rows of a file mostly share one metadata
    out: list[str | None] = []
    for i, (valid, m, v) in enumerate(rows):
        if not valid:
            out.append(None)
        elif m is None or v is None:
            raise CorruptLogError(f"variant row {i} has no {'metadata' if m is None else 'value'}")
        else:
            keys = dictionaries.get(m)
            if keys is None:
                keys = dictionaries[m] = metadata_keys(m)
            out.append(decode_json(m, v, keys))
    return pa.array(out, pa.string())


def variant_to_json(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Turn a variant column (as lakeflow reads it) into JSON strings, one per row.

    Objects keep their fields in key order; numbers keep their exact digits
    (decimals unrounded, floats and doubles at the shortest text that reads back);
    NaN and infinities become the strings "NaN", "Infinity", "-Infinity"; dates are
    "YYYY-MM-DD", timestamps "YYYY-MM-DD HH:MM:SS[.f]" (with "+00:00" when adjusted
    to UTC), times "HH:MM:SS[.f]", binaries base64 and UUIDs their canonical text.
    A null row stays null; a variant holding null becomes the text "null".

    Args:
        column: a struct column of `metadata` and `value` binaries, e.g.
            `snapshot.to_arrow()["payload"]`.

    Raises:
        InvalidArgumentError: `column` is not a variant column.
        UnsupportedFeatureError: the column holds shredded variants (`typed_value`).
        CorruptLogError: a value breaks the Parquet Variant encoding.
    """
    if not isinstance(column, pa.Array | pa.ChunkedArray):
        raise InvalidArgumentError(f"variant_to_json takes a pyarrow column, not {type(column).__name__}")
    _check_variant_type(column.type)
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([_chunk_to_json(c) for c in column.chunks], pa.string())
    return _chunk_to_json(column)


def _children(typ: pa.DataType) -> list[pa.DataType]:
    if pa.types.is_struct(typ):
        return [typ.field(i).type for i in range(typ.num_fields)]
    if pa.types.is_map(typ):
        return [typ.key_type, typ.item_type]
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ) \
            or pa.types.is_list_view(typ):
        return [typ.value_type]
    return []


def has_variant(schema: pa.Schema | pa.DataType) -> bool:
    """Whether a variant (`VARIANT_TYPE`) appears in `schema`, at any depth."""
    stack = list(schema.types) if isinstance(schema, pa.Schema) else [schema]
    while stack:
        typ = stack.pop()
        if typ.num_fields:  # only nested types (a variant among them) have children
            if typ == VARIANT_TYPE:
                return True
            stack += _children(typ)
    return False


def check_unshredded(file_type: pa.DataType, column: str, path: str) -> None:
    """Refuse a data file that stores the variants of `column` shredded.

    A shredded variant is a struct of `metadata` and `typed_value` (PROTOCOL.md,
    Variant Shredding); reading only its binaries would lose the shredded values.

    Raises:
        UnsupportedFeatureError: naming the column and the file.
    """
    stack = [file_type]
    while stack:
        typ = stack.pop()
        if pa.types.is_struct(typ) and typ.get_field_index("typed_value") >= 0 \
                and typ.get_field_index("metadata") >= 0:
            raise UnsupportedFeatureError(
                f"the data file {path!r} stores column {column!r} as shredded variants "
                "(a typed_value field, feature variantShredding), which lakeflow cannot read "
                "yet; read the table with Spark or Databricks")
        stack += _children(typ)
