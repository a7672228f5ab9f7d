"""Vectorized file pruning: which files a filter may need, over a table of their stats.

A snapshot's per-file guarantees (see `lakeflow.snapshot`) prune exactly, but
building one expression per file and a dataset of every file costs seconds at
20,000 files. This module decides first, with array compute over one row per
file, which files *may* hold a row where the filter is true; only those get a
guarantee and a dataset fragment, so the exact pass runs on a few files.

The decision only ever keeps more than the exact pass: every leaf the module
does not understand (a column without usable stats, a widened or temporal or
decimal column, a literal of another type, an unknown function) may be true
and may be false in every file.

A filter is walked through its serialized form (the Arrow IPC file that
`pyarrow.compute.Expression` pickles to: the tree in prefix order in the
schema's key-value metadata, literals as columns). pyarrow's `Schema.metadata`
is a dict and drops repeated keys, so the flatbuffer is read here.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

# A float32 statistic printed as its shortest decimal is within 2**-24 (relative)
# of the value; floats are widened by this much, as `snapshot._float32_tolerant` does.
_FLOAT_SLACK = 2.0**-22
_FLOAT_TINY = 2.0**-149
_MAX_SET = 64  # is_in with more values than this is not pruned on (cost)

_FLIP = {"less": "greater", "less_equal": "greater_equal", "greater": "less",
         "greater_equal": "less_equal", "equal": "equal", "not_equal": "not_equal"}


@dataclass(frozen=True)
class Node:
    """One node of a filter: a call (with its arguments), a field or a literal."""

    kind: str  # "call", "field", "literal"
    name: str = ""  # function or field name
    args: tuple[Node, ...] = ()
    value: pa.Scalar | None = None  # a literal, or a call's options as a struct scalar


@dataclass(frozen=True)
class ColumnStats:
    """What the files say about one column, one entry per file (null: unknown).

    Attributes:
        lo: the smallest non-null value.
        hi: the largest non-null value.
        no_nulls: the file has no null in the column.
    """

    lo: pa.Array
    hi: pa.Array
    no_nulls: pa.Array


def _u32(b: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", b, at)[0])


def _field(b: bytes, table: int, index: int) -> int | None:
    """The position of field `index` of the flatbuffer table at `table` (None: absent)."""
    vtable = table - struct.unpack_from("<i", b, table)[0]
    if 4 + 2 * index >= struct.unpack_from("<H", b, vtable)[0]:
        return None
    off = struct.unpack_from("<H", b, vtable + 4 + 2 * index)[0]
    return table + off if off else None


def _string(b: bytes, at: int) -> str:
    start = at + _u32(b, at)
    return b[start + 4:start + 4 + _u32(b, start)].decode()


def _metadata_pairs(message: bytes) -> list[tuple[str, str]]:
    """The custom metadata of an IPC schema message, in order, repeated keys kept."""
    root = _u32(message, 0)
    header = _field(message, root, 2)  # Message.header: the Schema table
    if header is None:
        return []
    schema = header + _u32(message, header)
    pairs = _field(message, schema, 2)  # Schema.custom_metadata
    if pairs is None:
        return []
    vec = pairs + _u32(message, pairs)
    out = []
    for i in range(_u32(message, vec)):
        slot = vec + 4 + 4 * i
        kv = slot + _u32(message, slot)
        key, value = _field(message, kv, 0), _field(message, kv, 1)
        out.append((_string(message, key) if key else "", _string(message, value) if value else ""))
    return out


def parse_filter(expr: pc.Expression) -> Node | None:
    """The tree of `expr`, or None when it cannot be read (then nothing is pruned)."""
    try:
        _, (buffer,) = expr.__reduce__()
        batch = pa.ipc.open_file(buffer).get_batch(0)
        message = pa.ipc.read_message(pa.BufferReader(buffer.slice(8))).metadata.to_pybytes()
        tokens = _metadata_pairs(message)
        node, end = _build(tokens, 0, batch)
    except (pa.ArrowException, struct.error, ValueError, IndexError, UnicodeDecodeError):
        return None
    return node if end == len(tokens) else None


def _build(tokens: list[tuple[str, str]], at: int, batch: pa.RecordBatch) -> tuple[Node, int]:
    """The node whose tokens start at `at`, and the position after them."""
    key, value = tokens[at]
    if key == "literal":
        return Node("literal", value=batch.column(int(value))[0]), at + 1
    if key == "field_ref":
        return Node("field", name=value), at + 1
    if key != "call":
        raise ValueError(f"unsupported expression token {key}")
    args, options, at = [], None, at + 1
    while tokens[at][0] != "end":
        if tokens[at][0] == "options":
            options, at = batch.column(int(tokens[at][1]))[0], at + 1
            continue
        arg, at = _build(tokens, at, batch)
        args.append(arg)
    return Node("call", value, tuple(args), options), at + 1


Masks = tuple[pa.Array, pa.Array]  # (some row may be true, some row may be false), per file


def may_match(node: Node | None, stats: Mapping[str, ColumnStats], n: int) -> pa.Array:
    """Per file: whether some row may satisfy the filter `node` (True when unsure)."""
    if node is None:
        return pa.repeat(True, n)
    true, _ = _masks(node, stats, n)
    return true


def _masks(node: Node, stats: Mapping[str, ColumnStats], n: int) -> Masks:
    unsure = pa.repeat(True, n), pa.repeat(True, n)
    if node.kind == "literal" and node.value is not None and node.value.type == pa.bool_():
        v = node.value.as_py()
        return pa.repeat(v is True, n), pa.repeat(v is False, n)
    if node.kind != "call":
        return unsure
    if node.name in ("and_kleene", "and") and len(node.args) == 2:
        (ta, fa), (tb, fb) = (_masks(a, stats, n) for a in node.args)
        return pc.and_(ta, tb), pc.or_(fa, fb)
    if node.name in ("or_kleene", "or") and len(node.args) == 2:
        (ta, fa), (tb, fb) = (_masks(a, stats, n) for a in node.args)
        return pc.or_(ta, tb), pc.and_(fa, fb)
    if node.name == "invert" and len(node.args) == 1:
        t, f = _masks(node.args[0], stats, n)
        return f, t
    if node.name == "is_null" and len(node.args) == 1 and node.args[0].kind == "field":
        col = stats.get(node.args[0].name)
        if col is None or not _nan_free(col):  # nan_is_null may count NaN
            return unsure
        return pc.invert(col.no_nulls.fill_null(False)), pa.repeat(True, n)
    if node.name == "is_in" and len(node.args) == 1:
        return _is_in(node, stats, n), unsure[1]
    if node.name in _FLIP and len(node.args) == 2:
        return _compare(node, stats, n)
    return unsure


def _nan_free(col: ColumnStats) -> bool:
    return not pa.types.is_floating(col.lo.type)


def _literal(col: ColumnStats, value: pa.Scalar | None) -> pa.Scalar | None:
    """`value` as a scalar of the column's stats type, when that is exact (else None)."""
    if value is None or not value.is_valid:
        return None
    typ = col.lo.type
    if pa.types.is_timestamp(typ) and not (pa.types.is_timestamp(value.type) and value.type.tz == typ.tz):
        return None  # a cast between time zones (or from naive) changes the instant
    if pa.types.is_floating(typ):
        if not (pa.types.is_floating(value.type) or pa.types.is_integer(value.type)):
            return None
        f = float(value.as_py())
        return None if f != f else pa.scalar(f, typ)  # NaN: no ordering to prune by
    if value.type != typ:
        try:
            cast = value.cast(typ)
            if cast.cast(value.type) != value:
                return None
            return cast
        except (pa.ArrowException, ValueError):
            return None
    return value


def _compare(node: Node, stats: Mapping[str, ColumnStats], n: int) -> Masks:
    unsure = pa.repeat(True, n), pa.repeat(True, n)
    a, b = node.args
    op = node.name
    if a.kind == "literal" and b.kind == "field":
        a, b, op = b, a, _FLIP[op]
    col = stats.get(a.name) if a.kind == "field" and b.kind == "literal" else None
    lit = _literal(col, b.value) if col is not None else None
    if col is None or lit is None:
        return unsure
    lo, hi = col.lo, col.hi
    true, false = {
        "equal": lambda: (pc.and_(pc.less_equal(lo, lit), pc.less_equal(lit, hi)),
                          pc.invert(pc.and_(pc.equal(lo, lit), pc.equal(hi, lit)))),
        "not_equal": lambda: (pc.invert(pc.and_(pc.equal(lo, lit), pc.equal(hi, lit))),
                              pc.and_(pc.less_equal(lo, lit), pc.less_equal(lit, hi))),
        "less": lambda: (pc.less(lo, lit), pc.greater_equal(hi, lit)),
        "less_equal": lambda: (pc.less_equal(lo, lit), pc.greater(hi, lit)),
        "greater": lambda: (pc.greater(hi, lit), pc.less_equal(lo, lit)),
        "greater_equal": lambda: (pc.greater_equal(hi, lit), pc.less(lo, lit)),
    }[op]()
    if pa.types.is_floating(lo.type):  # NaN rows compare false: any file may hold one
        false = pa.repeat(True, n)
    return true.fill_null(True), false.fill_null(True)


def _is_in(node: Node, stats: Mapping[str, ColumnStats], n: int) -> pa.Array:
    arg, options = node.args[0], node.value
    col = stats.get(arg.name) if arg.kind == "field" else None
    values = options["value_set"] if options is not None and "value_set" in options.type.names else None
    if col is None or values is None or not values.is_valid or len(values) > _MAX_SET:
        return pa.repeat(True, n)
    out = pa.repeat(False, n)
    for v in values.values:
        lit = _literal(col, v)
        if lit is None:
            return pa.repeat(True, n)
        hit = pc.and_(pc.less_equal(col.lo, lit), pc.less_equal(lit, col.hi)).fill_null(True)
        out = pc.or_(out, hit)
    return out


def float_tolerant(lo: pa.Array, hi: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Float bounds widened by float32 rounding (infinite bounds stay: they are exact)."""
    def widen(x: pa.Array, sign: float) -> pa.Array:
        moved = pc.add(x, pc.multiply(pc.add(pc.multiply(pc.abs(x), _FLOAT_SLACK), _FLOAT_TINY), sign))
        return pc.if_else(pc.is_finite(x), moved, x)
    return widen(lo, -1.0), widen(hi, 1.0)


def stats_type(typ: pa.DataType) -> pa.DataType | None:
    """The type statistics of a column of `typ` are pruned with (None: not pruned on here).

    Only types whose JSON statistics read back exactly (integers, strings) and floats
    (widened by float32 rounding) are handled.
    """
    if pa.types.is_integer(typ):
        return pa.int64()
    if pa.types.is_floating(typ):
        return pa.float64()
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.string()
    return None


def parsed_stats_type(typ: pa.DataType) -> pa.DataType | None:
    """The type a column's typed statistics (`stats_parsed`) are pruned with (None: not pruned on).

    Beyond `stats_type`, dates, timestamps and decimals: typed statistics carry them exactly.
    """
    if pa.types.is_date32(typ) or pa.types.is_timestamp(typ) or pa.types.is_decimal(typ):
        return typ
    return stats_type(typ)


def _valid_json_stat(v: Any, target: pa.DataType) -> bool:
    if isinstance(v, bool):
        return False
    if target == pa.string():
        return isinstance(v, str)
    if target == pa.int64():
        return isinstance(v, int)
    return isinstance(v, int | float) and v == v


def column_stats(typ: pa.DataType, lo: list[Any], hi: list[Any], nulls: list[Any]) -> ColumnStats | None:
    """Typed stats arrays of a column of type `typ` from decoded JSON values (None: not prunable).

    A value of the wrong JSON type is unknown.
    """
    target = stats_type(typ)
    if target is None:
        return None
    try:
        arrays = [pa.array([v if _valid_json_stat(v, target) else None for v in values], target)
                  for values in (lo, hi)]
    except (pa.ArrowException, OverflowError):
        return None
    counts = pa.array([c if isinstance(c, int) and not isinstance(c, bool) else None for c in nulls],
                      pa.int64())
    return stats_arrays(target, arrays[0], arrays[1], counts)


def stats_arrays(target: pa.DataType, lo: pa.Array, hi: pa.Array, nulls: pa.Array) -> ColumnStats:
    """`ColumnStats` from typed min, max and null-count arrays (nulls: unknown)."""
    # As the per-file guarantees do, a file with nulls (or an unknown null count) gets no
    # range: the per-file path keeps it, and this one must never keep less.
    no_nulls = pc.equal(nulls, 0)
    known = pc.and_(pc.and_(lo.is_valid(), hi.is_valid()), no_nulls.fill_null(False))
    # A NaN or inverted (min > max) range is broken: it bounds nothing.
    known = pc.and_(known, pc.less_equal(lo, hi).fill_null(False))
    empty = pa.nulls(len(lo), target)
    lo, hi = pc.if_else(known, lo, empty), pc.if_else(known, hi, empty)
    if target == pa.float64():
        lo, hi = float_tolerant(lo, hi)
    if pa.types.is_timestamp(target):  # writers truncate timestamp statistics to milliseconds
        hi = _plus_ms(hi)
    # No nulls is only claimed where the range is known, as the guarantees do.
    return ColumnStats(lo, hi, known)


def _plus_ms(hi: pa.Array) -> pa.Array:
    """Timestamps one millisecond later (null where that overflows)."""
    unit = hi.type.unit
    step = {"s": 1, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    ints = hi.view(pa.int64())
    room = pc.less_equal(ints, pa.scalar(2**63 - 1 - step, pa.int64()))
    moved = pc.if_else(room, pc.add(pc.if_else(room, ints, 0), step), pa.nulls(len(hi), pa.int64()))
    return moved.view(hi.type)


def _json_lines(texts: Sequence[str | None] | pa.StringArray) -> bytes | pa.Buffer | None:
    """The texts as JSON lines (`{}` for none), or None when a text spans lines."""
    if not isinstance(texts, pa.Array):
        joined = "\n".join(t or "{}" for t in texts).encode()
        return joined if joined.count(b"\n") == len(texts) - 1 else None
    texts = texts.cast(pa.string())  # 32-bit offsets
    if texts.null_count or pc.min(pc.binary_length(texts)).as_py() == 0:
        texts = pc.fill_null(texts, "{}")
        texts = pc.if_else(pc.equal(texts, ""), "{}", texts)
    if pc.any(pc.match_substring(texts, "\n")).as_py():
        return None  # a value spans lines
    # Each value with a newline after it: the joined values end to end are the lines.
    joined = pc.binary_join_element_wise(texts, "", "\n")
    offsets = np.frombuffer(joined.buffers()[1], np.int32)[joined.offset:joined.offset + len(joined) + 1]
    lines: pa.Buffer = joined.buffers()[2][offsets[0]:offsets[-1]]
    return lines


def read_stats_json(texts: Sequence[str | None] | pa.StringArray, schema: pa.Schema) -> pa.Table | None:
    """The stats JSON texts (null: `{}`) as a table of `schema`, one row each, in one pass.

    None when a value is not of its stated type or a text spans lines.
    """
    joined = _json_lines(texts)
    if joined is None:
        return None
    try:
        table = pa_json.read_json(pa.BufferReader(joined), parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"))
    except pa.ArrowException:
        return None
    return table if table.num_rows == len(texts) else None


def json_stats(texts: Sequence[str | None] | pa.StringArray, columns: Mapping[str, tuple[str, pa.DataType]]
               ) -> dict[str, ColumnStats] | None:
    """Stats of `columns` (logical name: physical name, stats type) from the files' stats JSON.

    Decoded in one pass by pyarrow's JSON reader, which refuses any value not of the
    stated type; None then (or for text it cannot split by line), for the caller to
    decode file by file.
    """
    if not len(texts) or not columns:
        return None
    fields = pa.struct([(physical, typ) for physical, typ in columns.values()])
    counts = pa.struct([(physical, pa.int64()) for physical, _ in columns.values()])
    schema = pa.schema([("minValues", fields), ("maxValues", fields), ("nullCount", counts)])
    table = read_stats_json(texts, schema)
    if table is None:
        return None
    out = {}
    for name, (physical, typ) in columns.items():
        lo, hi, nc = (pc.struct_field(table.column(k).combine_chunks(), physical)
                      for k in ("minValues", "maxValues", "nullCount"))
        out[name] = stats_arrays(typ, lo, hi, nc)
    return out


def partition_stats(typ: pa.DataType, values: list[Any]) -> ColumnStats | None:
    """Stats of a partition column: every row of a file holds its one value (None: null)."""
    if not (pa.types.is_integer(typ) or pa.types.is_string(typ) or pa.types.is_boolean(typ)
            or pa.types.is_date(typ)):
        return None
    try:
        arr = pa.array(values, typ)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return ColumnStats(arr, arr, arr.is_valid())
