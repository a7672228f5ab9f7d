"""Turn user data into data files.

Normalize any Arrow input once, check it against the table schema, and write
partitioned Parquet files with per-file statistics.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeflow.actions import Add, Cdc
from lakeflow.column_mapping import ColumnMapping
from lakeflow.config import SchemaMode
from lakeflow.errors import InvalidArgumentError, LakeflowError, SchemaMismatchError
from lakeflow.partitions import as_python, encode_log_path, partition_dir, serialize_partition_value
from lakeflow.schema import arrow_to_delta, canonical
from lakeflow.storage import Storage

STRING_STATS_PREFIX = 32
CHANGE_DATA_DIR = "_change_data"
DICTIONARY_SAMPLE_ROWS = 10_000


def to_arrow_table(data: Any) -> pa.Table:
    """Normalize any supported input to a `pyarrow.Table`.

    Accepts pyarrow Table/RecordBatch/RecordBatchReader, polars DataFrame/LazyFrame,
    pandas DataFrame, any object with the Arrow PyCapsule stream or array interface,
    a dict of columns or a list of row dicts.

    Raises:
        InvalidArgumentError: the input is none of these.
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        if hasattr(data, "collect"):
            data = data.collect()
        return data.to_arrow()
    if module == "pandas" and hasattr(data, "columns"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    if hasattr(data, "__arrow_c_array__"):
        return pa.Table.from_batches([pa.record_batch(data)])
    if isinstance(data, dict):
        return pa.table(data)
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return pa.Table.from_pylist(data)
    raise InvalidArgumentError(
        f"cannot append {type(data).__name__}: pass a pyarrow Table/RecordBatchReader, a "
        "polars or pandas DataFrame, or an object with the Arrow PyCapsule interface"
    )


def _as_reader(data: Any) -> pa.RecordBatchReader | None:
    """`data` as a stream of batches, when it is one (a reader or an Arrow C stream)."""
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, (pa.Table, pa.RecordBatch)) or type(data).__module__.split(".")[0] in (
            "polars", "pandas"):
        return None
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data)
    return None


def input_chunks(data: Any, max_bytes: int, whole: bool = False) -> Iterator[pa.Table]:
    """The input as tables of about `max_bytes` each: streams are read as they arrive.

    A stream (`RecordBatchReader` or an Arrow C stream) is never held whole in
    memory: batches are gathered until they reach `max_bytes`, handed on, and
    dropped. Any other input, or any input with `whole=True` (writes that must
    judge all rows at once), is one table.

    Raises:
        InvalidArgumentError: the input is of no supported kind (raised at the call).
    """
    reader = None if whole else _as_reader(data)
    if reader is None:
        return iter([to_arrow_table(data)])
    return _gather(reader, max_bytes)


def _gather(reader: pa.RecordBatchReader, max_bytes: int) -> Iterator[pa.Table]:
    batches: list[pa.RecordBatch] = []
    size, handed = 0, False
    for batch in reader:
        batches.append(batch)
        size += batch.nbytes
        if size >= max_bytes:
            yield pa.Table.from_batches(batches, schema=reader.schema)
            batches, size, handed = [], 0, True
    if batches or not handed:  # an empty stream is still one (empty) table to check
        yield pa.Table.from_batches(batches, schema=reader.schema)


_INT_ORDER = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]


def _widens(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether `src` values always fit `dst` (the casts Delta type widening allows)."""
    if src in _INT_ORDER and dst in _INT_ORDER:
        return _INT_ORDER.index(src) <= _INT_ORDER.index(dst)
    if pa.types.is_unsigned_integer(src) and dst in _INT_ORDER:
        return bool(src.bit_width < dst.bit_width)
    if pa.types.is_integer(src) and src.bit_width <= 32 and pa.types.is_float64(dst):
        return True
    if pa.types.is_float32(src) and pa.types.is_float64(dst):
        return True
    if pa.types.is_date(src) and pa.types.is_timestamp(dst) and dst.tz is None:
        return True
    if pa.types.is_decimal(src) and pa.types.is_decimal(dst):
        return bool(dst.scale >= src.scale and dst.precision - dst.scale >= src.precision - src.scale)
    if pa.types.is_integer(src) and pa.types.is_decimal(dst):
        digits = {8: 3, 16: 5, 32: 10, 64: 20}[src.bit_width]
        return bool(dst.precision - dst.scale >= digits)
    return False


def _same_delta_type(src: pa.DataType, dst: pa.DataType) -> bool:
    try:
        return bool(canonical(pa.schema([pa.field("c", src)])) == canonical(pa.schema([pa.field("c", dst)])))
    except SchemaMismatchError:
        return False


def _cast_column(col: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    src, dst = col.type, field.type
    if src == dst:
        return col
    if pa.types.is_null(src):  # an all-null column has no type of its own
        return col.cast(dst)
    if pa.types.is_dictionary(src):
        col = col.cast(src.value_type)
        src = col.type
    naive_into_tz = (pa.types.is_timestamp(src) and pa.types.is_timestamp(dst)
                     and src.tz is None and dst.tz is not None)
    if naive_into_tz:
        raise SchemaMismatchError(
            f"column {field.name!r} holds timestamps without a time zone but the table "
            f"stores {dst}; attach the zone first (e.g. pc.assume_timezone or "
            "polars .dt.replace_time_zone('UTC'))"
        )
    if not (_same_delta_type(src, dst) or _widens(src, dst)):
        raise SchemaMismatchError(
            f"column {field.name!r} has type {src} but the table stores {dst}; lakeflow "
            "only applies casts that cannot lose data, cast it explicitly first"
        )
    try:
        return col.cast(dst, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise SchemaMismatchError(
            f"column {field.name!r} cannot be stored as {dst} without losing data: {e}"
        ) from e


@dataclass(frozen=True)
class Conformed:
    """Input data reshaped to the table schema; `schema` is set when it evolved."""

    table: pa.Table
    new_schema: pa.Schema | None


def conform(data: pa.Table, schema: pa.Schema, schema_mode: SchemaMode | None = None) -> Conformed:
    """Check `data` against the table `schema` and reshape it: order, types, nulls.

    Args:
        data: the input rows.
        schema: the table schema.
        schema_mode: None (strict) or "merge" (new nullable columns are added).

    Raises:
        SchemaMismatchError: naming the columns that are missing, unknown or mistyped.
    """
    if schema_mode not in (None, *get_args(SchemaMode)):
        raise InvalidArgumentError(f"schema_mode must be None or 'merge', got {schema_mode!r}")
    names = data.column_names
    dupes = sorted(n for n, k in collections.Counter(names).items() if k > 1)
    if dupes:
        raise SchemaMismatchError(f"input has duplicate column(s) {dupes}")
    exact = set(schema.names)  # sets, not list scans: wide tables have thousands of columns
    table_names = {n.lower(): n for n in schema.names}
    extra = [n for n in names if n.lower() not in table_names]
    case_only = [n for n in names if n.lower() in table_names and n not in exact]
    if case_only:
        raise SchemaMismatchError(
            f"column(s) {case_only} differ from the table's {[table_names[n.lower()] for n in case_only]} "
            "only by case; rename them"
        )
    new_schema = None
    if extra:
        if schema_mode != "merge":
            raise SchemaMismatchError(
                f"input has column(s) {extra} that the table does not have (table columns: "
                f"{schema.names}); pass schema_mode='merge' to add them"
            )
        added = [pa.field(n, data.schema.field(n).type, nullable=True) for n in extra]
        new_schema = canonical(pa.schema(list(schema) + added))
        arrow_to_delta(new_schema)
        schema = new_schema
    columns = []
    present = set(names)
    for field in schema:
        if field.name in present:
            col = _cast_column(data.column(field.name), field)
            if not field.nullable and col.null_count:
                raise SchemaMismatchError(
                    f"column {field.name!r} is not nullable but the input has "
                    f"{col.null_count} null(s)"
                )
        elif field.nullable:
            col = pa.chunked_array([pa.nulls(len(data), field.type)])
        else:
            raise SchemaMismatchError(
                f"input is missing the non-nullable column {field.name!r} (input columns: {names})"
            )
        columns.append(col)
    table = pa.Table.from_arrays(columns, schema=schema)
    try:
        table.validate(full=True)  # e.g. strings whose bytes are not UTF-8
    except pa.ArrowInvalid as e:
        raise SchemaMismatchError(f"input data is malformed: {e}") from e
    return Conformed(table, new_schema)


def _json_stat(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z")
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (int, str)):
        return value
    return None


def file_stats(table: pa.Table, footer: pq.FileMetaData | None = None) -> dict[str, Any]:
    """Delta per-file statistics: numRecords, and min/max/nullCount of primitive columns.

    With the `footer` of the Parquet file `table` was written as, the bounds of
    integer, string and date columns come from its column-chunk statistics (the
    same values, without a pass over the data) where it has them.
    """
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    chunks = _footer_columns(footer) if footer is not None else {}
    for field, col in zip(table.schema, table.columns, strict=False):
        t = field.type
        if pa.types.is_nested(t):
            continue
        nulls[field.name] = col.null_count
        statable = (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
                    or pa.types.is_date(t) or pa.types.is_timestamp(t))
        if not statable or col.null_count == len(col):
            continue
        bounds = _footer_bounds(footer, chunks.get(field.name), t) if footer is not None else None
        bounds = bounds if bounds is not None else _computed_bounds(col)
        if bounds is None:
            continue
        lo, hi = bounds
        if isinstance(lo, str):
            if len(hi) > STRING_STATS_PREFIX:
                continue  # a truncated max would not be an upper bound
            lo = lo[:STRING_STATS_PREFIX]
        jlo, jhi = _json_stat(lo), _json_stat(hi)
        if jlo is not None and jhi is not None:
            mins[field.name], maxs[field.name] = jlo, jhi
    return {"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def _computed_bounds(col: pa.ChunkedArray) -> tuple[Any, Any] | None:
    """(min, max) of a column with values, as Python objects; None when no bound holds."""
    if pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py():
        return None  # NaN makes a min/max bound meaningless for skipping
    mm = pc.min_max(col)
    try:
        return mm["min"].as_py(), mm["max"].as_py()
    except (OverflowError, ValueError):
        return None  # beyond Python's years 1-9999: no bound, so no skipping on this column


def _footer_columns(footer: pq.FileMetaData) -> dict[str, int]:
    """Column-chunk index by path, for the paths that name one column only."""
    paths = collections.Counter(footer.schema.column(i).path for i in range(footer.num_columns))
    return {footer.schema.column(i).path: i for i in range(footer.num_columns)
            if paths[footer.schema.column(i).path] == 1}


_FOOTER_BOUND_TYPES: tuple[tuple[Any, type], ...] = (
    (pa.types.is_integer, int), (pa.types.is_string, str), (pa.types.is_date, dt.date))


def _footer_bounds(footer: pq.FileMetaData, column: int | None, typ: pa.DataType) -> tuple[Any, Any] | None:
    """(min, max) of a column from the footer's row-group statistics; None where they do not say.

    Floats are left to `_computed_bounds` (Parquet's bounds skip NaN, Delta's must
    not), and timestamps too (their JSON form is judged on Arrow's values). A row
    group without bounds that is not all null (e.g. a string too long for
    Parquet's statistics) leaves the whole column to `_computed_bounds`.
    """
    kind = next((k for is_kind, k in _FOOTER_BOUND_TYPES if is_kind(typ)), None)
    if column is None or kind is None:
        return None
    lows: list[Any] = []
    highs: list[Any] = []
    for r in range(footer.num_row_groups):
        group = footer.row_group(r)
        stats = group.column(column).statistics
        if stats is not None and stats.has_null_count and stats.null_count == group.num_rows:
            continue
        if stats is None or not stats.has_min_max:
            return None
        try:
            lo, hi = stats.min, stats.max
        except (OverflowError, ValueError):
            return None  # e.g. a date beyond Python's years 1-9999
        if not (isinstance(lo, kind) and isinstance(hi, kind)) or isinstance(lo, dt.datetime):
            return None
        lows.append(lo)
        highs.append(hi)
    return (min(lows), max(highs)) if lows else None


def _contains_void(t: pa.DataType) -> bool:
    return pa.types.is_null(t) or any(_contains_void(t.field(i).type) for i in range(t.num_fields))


def _omit_void(data: pa.Table) -> pa.Table:
    """The columns a data file stores: Delta writers omit `void` (null-typed) columns.

    Readers rebuild them as nulls from the table schema (PROTOCOL.md, Void Type).

    Raises:
        SchemaMismatchError: a void type is nested (lakeflow omits top-level void
            columns only), or the file would have no column left.
    """
    keep = [f.name for f in data.schema if not pa.types.is_null(f.type)]
    nested = [name for name in keep if _contains_void(data.schema.field(name).type)]
    if nested:
        raise SchemaMismatchError(
            f"column(s) {nested} hold a void (null) type inside a struct, list or map, which "
            "lakeflow cannot write; change the void field to a real type first")
    if not keep:
        raise SchemaMismatchError(
            f"every data column ({data.column_names}) is void (null type), and Delta omits void "
            "columns from data files; give at least one column a real type")
    return data if len(keep) == data.num_columns else data.select(keep)


def _group_by_partition(table: pa.Table, partition_by: Sequence[str]) -> list[tuple[dict[str, Any], pa.Table]]:
    if not partition_by:
        return [({}, table)]
    idx = "__lakeflow_row__"
    keyed = table.select(list(partition_by)).append_column(idx, pa.array(range(table.num_rows), pa.int64()))
    groups = keyed.group_by(list(partition_by), use_threads=False).aggregate([(idx, "list")])
    columns = {c: as_python(groups.column(c)) for c in partition_by}  # (any year: as_python)
    return [({c: columns[c][i] for c in partition_by}, table.take(pa.array(rows, pa.int64())))
            for i, rows in enumerate(groups.column(f"{idx}_list").to_pylist())]


def _dictionary_columns(data: pa.Table) -> bool | list[str]:
    """The columns worth dictionary encoding: values repeat in a sample of the first rows.

    For mostly distinct values a dictionary saves no space, and the encoder still
    fills a dictionary page before falling back to plain: up to half the write
    time. Tables with nested columns keep the default (all columns).
    """
    if any(pa.types.is_nested(f.type) for f in data.schema):
        return True
    sample = data.slice(0, DICTIONARY_SAMPLE_ROWS)
    return [f.name for f, col in zip(sample.schema, sample.columns, strict=True)
            if 2 * pc.count_distinct(col, mode="all").as_py() <= len(col)]


def _write_parts(storage: Storage, table: pa.Table, partition_by: Sequence[str], directory: str, prefix: str,
                 mapping: ColumnMapping, target_file_size: int | None = None
                 ) -> list[tuple[str, list[tuple[str, str | None]], int, pa.Table, pq.FileMetaData]]:
    """Write Parquet files per partition (one, or of about `target_file_size` bytes each).

    The one place where logical rows become files: under column mapping, the
    columns, partition values and (so) statistics take their physical names.
    Returns (relative path, values, size, rows as stored, footer) for each file.
    """
    groups = _group_by_partition(table, partition_by)
    serialized = [[(mapping.physical_name(c), serialize_partition_value(values[c], c)) for c in partition_by]
                  for values, _ in groups]
    dirs = [partition_dir(pvalues) if partition_by else "" for pvalues in serialized]  # checks all first
    out = []
    for (_, part), pvalues, part_dir in zip(groups, serialized, dirs, strict=True):
        data = mapping.to_physical(_omit_void(part.drop_columns(list(partition_by)) if partition_by else part))
        def path_of(part_dir: str = part_dir) -> str:
            name = f"{prefix}-00000-{uuid.uuid4()}-c000.snappy.parquet"
            return "/".join(p for p in (directory, part_dir, name) if p)

        out += [(rel, pvalues, size, rows, footer)
                for rel, size, rows, footer in _write_rolled(storage, data, path_of, target_file_size)]
    return out


def _write_rolled(storage: Storage, data: pa.Table, path_of: Callable[[], str], target: int | None
                  ) -> list[tuple[str, int, pa.Table, pq.FileMetaData]]:
    """Write `data` as one file, or with a `target` size as files of about that many bytes.

    The first file's rows are sized by their Arrow bytes (more than their Parquet
    bytes for most data), each later one by the bytes per row the files written
    so far took. Returns (path, size, rows, footer) for each file.
    """
    out: list[tuple[str, int, pa.Table, pq.FileMetaData]] = []
    start, bytes_per_row = 0, data.nbytes / max(1, data.num_rows)
    while True:
        rows = data.num_rows - start if target is None else max(1, int(target / max(bytes_per_row, 1e-3)))
        piece = data.slice(start, rows)
        path = path_of()
        size, footer = write_parquet(storage, path, piece)
        out.append((path, size, piece, footer))
        start += piece.num_rows
        if start >= data.num_rows:
            return out
        bytes_per_row = sum(f[1] for f in out) / start


def write_parquet(storage: Storage, path: str, data: pa.Table) -> tuple[int, pq.FileMetaData]:
    """Write `data` as the Parquet file `path`, streamed to the store; its size and footer."""
    footers: list[pq.FileMetaData] = []

    def fill(sink: pa.NativeFile) -> None:
        pq.write_table(data, sink, compression="snappy", coerce_timestamps="us",
                       allow_truncated_timestamps=False, use_dictionary=_dictionary_columns(data),
                       metadata_collector=footers)

    size = storage.write_stream(path, fill)
    return size, footers[0]


def write_data_files(storage: Storage, table: pa.Table, partition_by: Sequence[str], *,
                     mapping: ColumnMapping, data_change: bool = True, prefix: str = "part",
                     target_file_size: int | None = None) -> list[Add]:
    """Write `table` as Parquet files and return their `add` actions.

    One file per partition, or with `target_file_size` (bytes) files of about that
    size. Files are named `<prefix>-00000-<uuid>-c000.snappy.parquet` (staged
    writes put their job id in the prefix). `mapping` is the table's column mapping
    (the rows have logical names; files and actions get physical ones).

    Raises:
        SchemaMismatchError: a partition value cannot be stored (NaN, infinity).
    """
    now_ms = int(time.time() * 1000)
    return [
        Add(
            path=encode_log_path(rel),
            partition_values=dict(pvalues),
            size=size,
            modification_time=now_ms,
            data_change=data_change,
            stats=json.dumps(file_stats(data, footer), separators=(",", ":")),
        )
        for rel, pvalues, size, data, footer in _write_parts(storage, table, partition_by, "", prefix, mapping,
                                                             target_file_size)
    ]


def discard(storage: Storage, files: Iterable[Add | Cdc]) -> None:
    """Delete files written for a commit that will not reference them.

    Best effort: an orphan is harmless, vacuum removes it.
    """
    for f in files:
        with contextlib.suppress(OSError, LakeflowError):
            storage.delete(unquote(f.path))


def write_cdc_files(storage: Storage, changes: pa.Table, partition_by: Sequence[str], *,
                    mapping: ColumnMapping) -> list[Cdc]:
    """Write change rows (table columns plus `_change_type`) under `_change_data/`.

    Files are partitioned like the data, as the Delta protocol recommends, and
    returned as `cdc` actions; table columns take their physical names (`mapping`).

    Raises:
        SchemaMismatchError: a partition value cannot be stored (NaN, infinity).
    """
    return [Cdc(path=encode_log_path(rel), partition_values=dict(pvalues), size=size)
            for rel, pvalues, size, *_ in _write_parts(storage, changes, partition_by,
                                                      CHANGE_DATA_DIR, "cdc", mapping)]
