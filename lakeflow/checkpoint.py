"""Checkpoints: a cached replay of the log, read and written.

lakeflow reads classic (single and multi-part) checkpoints and v2 checkpoints:
UUID-named JSON or Parquet files, and classic-named ones with a
`checkpointMetadata` action, whose file actions may sit in sidecar files in
`_delta_log/_sidecars/`. It writes classic single-part (v1) checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeflow import pruning
from lakeflow.actions import Action, Remove, decode_action, parse_commit
from lakeflow.column_mapping import ColumnMapping, mapping_mode
from lakeflow.config import TableConfig
from lakeflow.errors import CorruptLogError
from lakeflow.file_set import (
    ADD_SCHEMA,
    DV_TYPE,
    REMOVE_TYPE,
    FileSet,
    Tombstones,
    add_table,
    decode_adds,
    decode_removes,
    remove_table,
)
from lakeflow.log import LAST_CHECKPOINT, LOG_DIR, TableState, check_data_path, checkpoint_path, replay
from lakeflow.partitions import parse_partition_value
from lakeflow.schema import delta_to_arrow, widened_from
from lakeflow.storage import Storage, arrow_file

_STR_MAP = ADD_SCHEMA.field("partitionValues").type
# The add fields lakeflow writes (it writes no row tracking).
_ADD = pa.struct([ADD_SCHEMA.field(n) for n in ("path", "partitionValues", "size", "modificationTime",
                                                "dataChange", "stats", "tags", "deletionVector")])
CHECKPOINT_SCHEMA = pa.schema(
    [
        ("txn", pa.struct([("appId", pa.string()), ("version", pa.int64()),
                           ("lastUpdated", pa.int64())])),
        ("add", _ADD),
        ("remove", pa.struct([("path", pa.string()), ("deletionTimestamp", pa.int64()),
                              ("dataChange", pa.bool_()), ("extendedFileMetadata", pa.bool_()),
                              ("partitionValues", _STR_MAP), ("size", pa.int64()),
                              ("deletionVector", DV_TYPE)])),
        ("metaData", pa.struct([("id", pa.string()), ("name", pa.string()),
                                ("description", pa.string()),
                                ("format", pa.struct([("provider", pa.string()),
                                                      ("options", _STR_MAP)])),
                                ("schemaString", pa.string()),
                                ("partitionColumns", pa.list_(pa.string())),
                                ("configuration", _STR_MAP), ("createdTime", pa.int64())])),
        ("protocol", pa.struct([("minReaderVersion", pa.int32()),
                                ("minWriterVersion", pa.int32()),
                                ("readerFeatures", pa.list_(pa.string())),
                                ("writerFeatures", pa.list_(pa.string()))])),
        ("domainMetadata", pa.struct([("domain", pa.string()), ("configuration", pa.string()),
                                      ("removed", pa.bool_())])),
    ]
)
_ACTION_COLUMNS = ("protocol", "metaData", "txn", "add", "remove", "domainMetadata")
SIDECAR_DIR = f"{LOG_DIR}/_sidecars"


def read_checkpoint(storage: Storage, names: Sequence[str]) -> list[Action]:
    """Read all parts of one checkpoint, and the sidecar files it references, into actions.

    Raises:
        FileNotFoundError: a part is missing.
        CorruptLogError: a part or sidecar cannot be read, or a sidecar is missing
            (the checkpoint is then unusable, like a torn one).
    """
    actions, rows = _read_parts(storage, names)
    return [*actions, *decode_adds(rows.table()), *_remove_decoder(names[0])(rows.removes())]


def read_checkpoint_state(storage: Storage, names: Sequence[str], version: int) -> TableState:
    """The state a checkpoint at `version` holds, its `add` and `remove` rows kept as Arrow columns.

    Of the `add` rows only the paths are read; the other fields (statistics are
    most of a checkpoint's bytes) are read from it when first needed (pruning,
    or an `Add` built).

    Raises:
        FileNotFoundError: a part is missing.
        CorruptLogError: as `read_checkpoint`, or the checkpoint has no protocol or
            metadata, or an `add` row names no valid path.
    """
    actions, parts = _read_parts(storage, names)
    state = replay(None, [(version, actions)])  # all but the Parquet add and remove rows
    rows = parts.rows()
    files = FileSet.from_table(rows, parts.table if parts.lazy else None,
                               parts.parsed_stats if parts.lazy else None).edit()
    for add in state.files.values():  # adds of a JSON checkpoint
        files.put(add)
    tombstones = _tombstones(parts.removes(), state, rows.column("path"), names[0])
    return dataclasses.replace(state, files=files.build(), tombstones=tombstones)


def _tombstones(removes: pa.Table, state: TableState, added: pa.ChunkedArray, path: str) -> Tombstones:
    """A checkpoint's Parquet `removes` and JSON ones (in `state`), less paths it also adds (as a commit)."""
    masked: frozenset[str] = frozenset()
    json_removes = dict(state.tombstones)
    if removes.num_rows or json_removes:
        every = pa.concat_arrays([added.combine_chunks(), pa.array(list(state.files), pa.string())])
        paths = removes.column("path")
        masked = frozenset(paths.filter(pc.is_in(paths, value_set=every)).to_pylist())
        hit = pc.is_in(pa.array(list(json_removes), pa.string()), value_set=every).to_pylist()
        json_removes = {p: r for (p, r), h in zip(json_removes.items(), hit, strict=True) if not h}
    edit = Tombstones.from_table(removes, _remove_decoder(path), masked).edit()
    for remove in json_removes.values():
        edit.put(remove)
    built = edit.build()
    assert isinstance(built, Tombstones)
    return built


def _remove_decoder(path: str) -> Callable[[pa.Table], list[Remove]]:
    """Decodes a checkpoint's remove rows, refusing invalid ones as a damaged checkpoint."""
    def decode(table: pa.Table) -> list[Remove]:
        try:
            return decode_removes(table)
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptLogError(f"checkpoint {path} has an invalid remove row: {e}") from e
    return decode


class _FileRows:
    """The `add` rows (only their paths read) and `remove` rows of a checkpoint's Parquet parts and sidecars."""

    def __init__(self) -> None:
        self._parts: list[tuple[pa.Table, pq.ParquetFile | None, str]] = []
        self.remove_parts: list[pa.Table] = []

    def removes(self) -> pa.Table:
        """The `remove` rows of all files (a `remove_table`)."""
        if not self.remove_parts:
            return remove_table(pa.array([], REMOVE_TYPE))
        return pa.concat_tables(self.remove_parts)

    def append(self, rows: pa.Table, file: pq.ParquetFile | None, path: str) -> None:
        """Rows of one file; `file` when only their paths were read from it."""
        self._parts.append((rows, file, path))

    @property
    def lazy(self) -> bool:
        """Whether some rows are still to be read whole."""
        return any(file is not None for _, file, _ in self._parts)

    def rows(self) -> pa.Table:
        """All rows, in order (only the paths, where not read whole)."""
        return pa.concat_tables([r for r, _, _ in self._parts]) if self._parts else ADD_SCHEMA.empty_table()

    def parsed_stats(self, columns: Mapping[str, pa.DataType]) -> pa.StructArray | None:
        """The rows' `stats_parsed` of the physical `columns` only, leaves as the types given.

        None when some part has no `stats_parsed` (then the JSON `stats` count).
        """
        if not self._parts or any(file is None for _, file, _ in self._parts):
            return None
        parts = [_parsed_stats(file, path, columns) for _, file, path in self._parts if file is not None]
        if any(part is None for part in parts):
            return None
        return pa.concat_arrays([p for p in parts if p is not None])

    def table(self) -> pa.Table:
        """All rows, read whole.

        Raises:
            CorruptLogError: a field cannot be read as its Delta type.
        """
        return pa.concat_tables([rows if file is None else _whole_adds(file, path)
                                 for rows, file, path in self._parts]) if self._parts else ADD_SCHEMA.empty_table()


def _whole_adds(file: pq.ParquetFile, path: str) -> pa.Table:
    """The `add` rows of a Parquet checkpoint part or sidecar, every field lakeflow reads."""
    add = file.schema_arrow.field("add").type
    # Without JSON `stats` (writeStatsAsJson=false), they are made from `stats_parsed`.
    typed_only = add.get_field_index("stats") < 0 and add.get_field_index("stats_parsed") >= 0
    fields = [f"add.{f.name}" for f in add
              if f.name not in _UNREAD_ADD_FIELDS or (typed_only and f.name == "stats_parsed")]
    column = _valid_rows(_read(file, path, fields).column("add")).combine_chunks()
    try:
        rows = add_table(column)
    except (ValueError, pa.ArrowException) as e:
        raise CorruptLogError(f"checkpoint {path} has an invalid add row: {e}") from e
    if not typed_only:
        return rows
    stats = _stats_json(_child(column, "stats_parsed"), rows.num_rows)
    return rows.set_column(ADD_SCHEMA.get_field_index("stats"), "stats", stats)


def _stats_json(parsed: pa.Array | None, n: int) -> pa.StringArray:
    """The JSON `stats` of `n` typed `stats_parsed` rows (null where there are none, or they do not convert).

    Decimal bounds are left out: as JSON numbers they would be rounded.
    """
    try:
        rows = parsed.to_pylist() if parsed is not None and pa.types.is_struct(parsed.type) else [None] * n
    except (ValueError, OverflowError):  # a date or timestamp outside Python's years
        rows = [None] * n
    texts = []
    for row in rows:
        try:
            texts.append(None if row is None else json.dumps(_as_json(row)))
        except (TypeError, ValueError, OverflowError):
            texts.append(None)
    return pa.array(texts, pa.string())


def _as_json(value: Any) -> Any:
    """A typed statistic as Delta writes it in JSON (None: left out)."""
    if isinstance(value, dict):
        return {k: v for k, x in value.items() if (v := _as_json(x)) is not None}
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        return value.isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


_STATS_KEYS = ("minValues", "maxValues", "nullCount")


def _parsed_stats(file: pq.ParquetFile, path: str, columns: Mapping[str, pa.DataType]) -> pa.StructArray | None:
    """The `add.stats_parsed` leaves of `columns` in one Parquet part (None: it has none).

    Only those leaf columns are read. A leaf that is absent, or of a type that is no
    lossless reading of the one asked for, is null (unknown).
    """
    add = file.schema_arrow.field("add").type
    index = add.get_field_index("stats_parsed")
    parsed = add.field(index).type if index >= 0 else None
    if parsed is None or not pa.types.is_struct(parsed):
        return None
    wanted = [(k, c) for k in _STATS_KEYS if (i := parsed.get_field_index(k)) >= 0
              and pa.types.is_struct(parsed.field(i).type) for c in columns
              if "." not in c and parsed.field(i).type.get_field_index(c) >= 0]
    if wanted:
        table = _read(file, path, [f"add.stats_parsed.{k}.{c}" for k, c in wanted])
    else:
        table = _read(file, path, ["add.path"])
    add_rows = _valid_rows(table.column("add")).combine_chunks()
    stats = _child(add_rows, "stats_parsed") if wanted else None
    children = []
    for key in _STATS_KEYS:
        group = _child(stats, key) if stats is not None else None
        leaves = [_leaf(group, c, pa.int64() if key == "nullCount" else t, len(add_rows)) for c, t in columns.items()]
        children.append(pa.StructArray.from_arrays(leaves, names=list(columns)) if columns else
                        pa.nulls(len(add_rows), pa.struct([])))
    return pa.StructArray.from_arrays(children, names=list(_STATS_KEYS))


def _leaf(group: pa.StructArray | None, name: str, typ: pa.DataType, n: int) -> pa.Array:
    """Field `name` of `group` as `typ` where that is lossless (same kind of value), else `n` nulls."""
    leaf = _child(group, name) if group is not None else None
    if leaf is None or not _same_kind(leaf.type, typ):
        return pa.nulls(n, typ)
    try:
        return leaf.cast(typ)
    except pa.ArrowException:
        return pa.nulls(n, typ)


def _child(struct: pa.StructArray, name: str) -> pa.Array | None:
    """Field `name` of `struct`, null where the struct is (None: no such field)."""
    index = struct.type.get_field_index(name)
    return struct.flatten()[index] if index >= 0 else None


def _same_kind(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether statistics of type `have` read as `want` without changing what they mean."""
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_date, pa.types.is_decimal,
             lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
    if pa.types.is_floating(want) and pa.types.is_integer(have):
        return True
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(have) and (have.tz is None) == (want.tz is None)
    return any(kind(have) and kind(want) for kind in kinds)


def _read_parts(storage: Storage, names: Sequence[str]) -> tuple[list[Action], _FileRows]:
    """The actions of a checkpoint's parts and sidecars: all but Parquet `add` rows, and those."""
    actions: list[Action] = []
    adds = _FileRows()
    for name in names:
        path = f"{LOG_DIR}/{name}"
        data = storage.read(path)
        if name.endswith(".json"):
            actions += parse_commit(data, path)  # validates the JSON lines; skips v2-only actions
            rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if '"sidecar"' in line]
            sidecars = [row["sidecar"] for row in rows if row.get("sidecar") is not None]
        else:
            table = _parquet_actions(data, path, adds, actions)
            column = table.column("sidecar") if "sidecar" in table.column_names else pa.chunked_array(
                [], pa.null())
            sidecars = column.filter(column.is_valid()).to_pylist()
        for sidecar in sidecars:
            _read_sidecar(storage, sidecar, path, adds, actions)
    return actions, adds


def _read_sidecar(storage: Storage, sidecar: Any, checkpoint: str, adds: _FileRows,
                  actions: list[Action]) -> None:
    """The file actions of one sidecar named by a checkpoint's `sidecar` action, into `adds` and `actions`."""
    try:
        name = check_data_path(str(sidecar["path"]), f"checkpoint {checkpoint}")
    except (KeyError, TypeError) as e:
        raise CorruptLogError(f"checkpoint {checkpoint} has an invalid sidecar action {sidecar!r}") from e
    path = f"{SIDECAR_DIR}/{name}"
    try:
        data = storage.read(path)
    except FileNotFoundError as e:
        raise CorruptLogError(f"checkpoint {checkpoint} references the sidecar {path}, which is missing") from e
    _parquet_actions(data, path, adds, actions)


# Fields of `add` a state does not read (Spark's parsed copies).
_UNREAD_ADD_FIELDS = frozenset({"stats_parsed", "partitionValues_parsed"})


def _parquet_actions(data: bytes, path: str, adds: _FileRows, actions: list[Action]) -> pa.Table:
    """Read a Parquet checkpoint part or sidecar into `adds` and `actions`; its table (of `add`, the paths)."""
    try:
        file = pq.ParquetFile(arrow_file(data))
        schema = file.schema_arrow
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptLogError(f"checkpoint {path} cannot be read: {e}") from e
    add = schema.field("add").type if "add" in schema.names else None
    lazy = add is not None and pa.types.is_struct(add) and add.get_field_index("path") >= 0
    table = _read(file, path, [n for n in schema.names if n != "add"] + ["add.path"] if lazy else None)
    rows, removes = _actions(table, path, actions)
    if rows is not None:
        adds.append(rows, file if lazy else None, path)
    if removes is not None:
        adds.remove_parts.append(removes)
    return table


def _read(file: pq.ParquetFile, path: str, columns: list[str] | None) -> pa.Table:
    # One thread: a checkpoint is one row group, and decoding its columns on the pool
    # took 5x the CPU and twice the time (300,000 adds, 2 cores).
    try:
        return file.read(columns=columns, use_threads=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptLogError(f"checkpoint {path} cannot be read: {e}") from e


def _actions(table: pa.Table, path: str, actions: list[Action]) -> tuple[pa.Table | None, pa.Table | None]:
    """Decode the rows of a Parquet checkpoint or sidecar (one action per row) into `actions`.

    Returns:
        the `add` rows as a table of `ADD_SCHEMA` and the `remove` rows as a
        `remove_table`, their paths checked (None: there are none).
    """
    adds = removes = None
    for column in _ACTION_COLUMNS:
        if column not in table.column_names:
            continue
        col = table.column(column)
        if col.null_count == len(col):
            continue
        col = _valid_rows(col)
        try:
            if column in ("add", "remove"):
                rows = (add_table if column == "add" else remove_table)(
                    col.chunk(0) if col.num_chunks == 1 else col.combine_chunks())
                _check_paths(rows.column("path"), column, path)
                adds, removes = (rows, removes) if column == "add" else (adds, rows)
                continue
            for row in col.to_pylist():
                action = decode_action({column: row})
                if action is not None:
                    actions.append(action)
        except (KeyError, TypeError, ValueError, pa.ArrowException) as e:
            raise CorruptLogError(f"checkpoint {path} has an invalid {column} row: {e}") from e
    return adds, removes


def _valid_rows(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The non-null rows of an action column: a slice when they are contiguous (no copy)."""
    rows = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
    if rows[-1] - rows[0] + 1 == len(rows):
        return column.slice(int(rows[0]), len(rows))
    return column.filter(column.is_valid())


# A path that needs a closer look (check_data_path): anything but plain relative ASCII.
_ODD_PATH = r"^$|^\.?/|/\.?$|^\.$|/\./|[%:\\\x00]|\.\."


def _check_paths(paths: pa.ChunkedArray, action: str, path: str) -> None:
    """Check the paths of a checkpoint's `action` rows (as a commit's are, `check_data_path`)."""
    if paths.null_count:
        raise CorruptLogError(f"checkpoint {path} has an {action} row without a path; the checkpoint is damaged")
    odd = pc.or_(pc.invert(pc.string_is_ascii(paths)), pc.match_substring_regex(paths, _ODD_PATH))
    for p in paths.filter(odd).to_pylist():
        check_data_path(p, f"checkpoint {path}")


def _rows(state: TableState, now_ms: int) -> list[dict[str, Any]]:
    keep_after = now_ms - TableConfig.of(state.metadata).deleted_file_retention_ms
    rows: list[dict[str, Any]] = [state.protocol.to_json(), state.metadata.to_json()]
    rows += [t.to_json() for t in state.txns.values()]
    rows += [d.to_json() for d in state.domains.values()]
    for r in state.tombstones.values():
        if (r.deletion_timestamp or 0) >= keep_after:
            j = r.to_json()
            j["remove"].pop("stats", None)
            j["remove"].pop("tags", None)
            rows.append(j)
    for row in rows:
        for key in ("remove", "metaData"):
            body = row.get(key)
            if body is None:
                continue
            for map_key in ("partitionValues", "tags", "configuration"):
                if isinstance(body.get(map_key), dict):
                    body[map_key] = list(body[map_key].items())
            fmt = body.get("format")
            if isinstance(fmt, dict) and isinstance(fmt.get("options"), dict):
                fmt["options"] = list(fmt["options"].items())
    return rows


def write_checkpoint(storage: Storage, state: TableState, now_ms: int | None = None) -> str:
    """Write a single-part checkpoint of `state` and point `_last_checkpoint` at it.

    The checkpoint file is written whole (create-or-replace: two writers produce
    the same content) before `_last_checkpoint` moves, so readers never follow a
    pointer to a partial checkpoint.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rows = _rows(state, now_ms)
    adds = _add_rows_of(state)
    table = pa.concat_tables([pa.Table.from_pylist(rows, schema=adds.schema), adds])
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    data = buf.getvalue()
    path = checkpoint_path(state.version)
    storage.write(path, data)
    last = {"version": state.version, "size": table.num_rows, "sizeInBytes": len(data),
            "numOfAddFiles": adds.num_rows}
    storage.write(LAST_CHECKPOINT, json.dumps(last).encode())
    return path


def _add_rows_of(state: TableState) -> pa.Table:
    """Checkpoint rows of the active files, from their columns, in path order (as snapshots list them).

    The `add` struct is `_ADD`, with `stats_parsed` (and `partitionValues_parsed`)
    when the table asks for them and every file's statistics read as their types;
    without `stats_parsed` the JSON `stats` are always written (they would be lost).
    """
    files = FileSet.of(state.files).table()
    files = files.take(pc.sort_indices(files.column("path")))
    columns = {f.name: files.column(f.name).combine_chunks() for f in _ADD}
    config = TableConfig.of(state.metadata)
    parsed = _stats_parsed(state, files) if config.stats_as_struct and files.num_rows else None
    if parsed is not None:
        stats, partitions = parsed
        columns = {**{k: v for k, v in columns.items() if k != "stats" or config.stats_as_json},
                   "stats_parsed": stats, **({"partitionValues_parsed": partitions} if partitions else {})}
    add = pa.StructArray.from_arrays(list(columns.values()), names=list(columns))
    schema = pa.schema([pa.field("add", add.type) if f.name == "add" else f for f in CHECKPOINT_SCHEMA])
    return pa.table({f.name: add if f.name == "add" else pa.nulls(len(add), f.type) for f in schema},
                    schema=schema)


def _stats_parsed(state: TableState, files: pa.Table) -> tuple[pa.StructArray, pa.StructArray | None] | None:
    """`stats_parsed` and `partitionValues_parsed` (None: not partitioned) of `files`, from their columns.

    Top-level columns only, by physical name; columns whose type was widened are
    left out (old files' statistics are of the old type). None when some file's
    statistics or partition values cannot be read as their types.
    """
    md = state.metadata
    schema = delta_to_arrow(md.schema_string)
    mapping = ColumnMapping.of(md.schema_string, mapping_mode(md))
    skip = set(md.partition_columns) | set(widened_from(md.schema_string))
    data = [f for f in schema if f.name not in skip and not pa.types.is_nested(f.type)]
    bounded = {mapping.physical_name(f.name): f.type for f in data
               if pruning.parsed_stats_type(f.type) is not None}
    as_read = pa.struct([(p, pa.string() if pa.types.is_temporal(t) else t) for p, t in bounded.items()])
    fields = [("numRecords", pa.int64()), ("minValues", as_read), ("maxValues", as_read),
              ("nullCount", pa.struct([(mapping.physical_name(f.name), pa.int64()) for f in data]))]
    table = pruning.read_stats_json(files.column("stats").combine_chunks(),
                                    pa.schema([f for f in fields if f[1] != pa.struct([])]))
    if table is None:
        return None
    try:
        columns = {name: _typed(table.column(name).combine_chunks(), bounded) if name.endswith("Values")
                   else table.column(name).combine_chunks() for name in table.column_names}
        partitions = [(c, _typed_partition(files.column("partitionValues").combine_chunks(),
                                           mapping.physical_name(c), schema.field(c).type, c))
                      for c in md.partition_columns]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, CorruptLogError):  # a value not of its type
        return None
    stats = pa.StructArray.from_arrays(list(columns.values()), names=list(columns))
    if not partitions:
        return stats, None
    return stats, pa.StructArray.from_arrays([v for _, v in partitions], names=[c for c, _ in partitions])


def _typed_partition(values: pa.MapArray, key: str, typ: pa.DataType, column: str) -> pa.Array:
    """The partition values of `key` as `typ`, each distinct text parsed as a read parses it.

    Raises:
        CorruptLogError: a text is no value of `typ`.
    """
    texts = pc.map_lookup(values, key, "first").dictionary_encode()
    distinct = pa.array([parse_partition_value(v, typ, column) for v in texts.dictionary.to_pylist()], typ)
    return distinct.take(texts.indices)


def _typed(values: pa.StructArray, types: Mapping[str, pa.DataType]) -> pa.StructArray:
    """A `minValues` / `maxValues` struct read from JSON (dates and timestamps as text) as `types`.

    Raises:
        pa.ArrowInvalid: a value is no valid text of its type.
    """
    children = [values.field(p).cast(t) for p, t in types.items()]
    return pa.StructArray.from_arrays(children, names=list(types), mask=values.is_null())
