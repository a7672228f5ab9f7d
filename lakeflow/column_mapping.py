"""Column mapping: logical column names in the schema, physical names in files and the log.

With `delta.columnMapping.mode` = `name` or `id` (the table configuration
decides, whatever the protocol lists), every struct field in the schema,
nested ones included, carries `delta.columnMapping.physicalName` and
`delta.columnMapping.id`. Data files store physical names (and Parquet field
ids), and `partitionValues` and statistics are keyed by physical names.
lakeflow shows only logical names; this module translates log keys, renames
the columns read from a file and written to one, and assigns the physical names
and ids of new columns.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lakeflow.actions import Metadata
from lakeflow.errors import CorruptLogError, UnsupportedFeatureError

MODES = ("none", "name", "id")
MODE = "delta.columnMapping.mode"
MAX_COLUMN_ID = "delta.columnMapping.maxColumnId"
PHYSICAL_NAME = "delta.columnMapping.physicalName"
_ID = "delta.columnMapping.id"
_PARQUET_ID = b"PARQUET:field_id"


def mapping_mode(metadata: Metadata) -> str:
    """The column mapping mode of a table: its configuration decides.

    The protocol says a reader honours the mode on reader version 2, or 3 with the
    `columnMapping` reader feature; but writers also set it with `columnMapping`
    listed as a writer feature only (Iceberg-compatible tables), or on older
    protocols, and their files hold physical names all the same. Reading those by
    logical names would return every value as null.

    Raises:
        UnsupportedFeatureError: the mode is not `none`, `name` or `id`.
    """
    mode = metadata.configuration.get(MODE, "none") or "none"
    if mode not in MODES:
        raise UnsupportedFeatureError(
            f"table uses delta.columnMapping.mode={mode!r}; lakeflow reads the modes {MODES}"
        )
    return mode


@dataclass(frozen=True)
class _Names:
    """The names below one type: its struct fields, and the list/map types inside it."""

    fields: Mapping[str, _Field] = field(default_factory=dict)  # by physical name
    by_id: Mapping[int, _Field] = field(default_factory=dict)
    element: _Names | None = None
    key: _Names | None = None
    value: _Names | None = None


@dataclass(frozen=True)
class _Field:
    logical: str
    physical: str
    id: int | None
    names: _Names


_PLAIN = _Names()


def _type_names(t: Any, mapped: bool) -> _Names:
    if not isinstance(t, dict):
        return _PLAIN
    kind = t.get("type")
    if kind == "struct":
        fields = [_field(f, mapped) for f in t.get("fields", [])]
        return _Names({f.physical: f for f in fields},
                      {f.id: f for f in fields if f.id is not None})
    if kind == "array":
        return _Names(element=_type_names(t.get("elementType"), mapped))
    if kind == "map":
        return _Names(key=_type_names(t.get("keyType"), mapped),
                      value=_type_names(t.get("valueType"), mapped))
    return _PLAIN


def _field(f: Mapping[str, Any], mapped: bool) -> _Field:
    name = str(f["name"])
    meta = f.get("metadata") or {}
    if not mapped:
        return _Field(name, name, None, _type_names(f.get("type"), mapped))
    if PHYSICAL_NAME not in meta:
        raise CorruptLogError(
            f"column {name!r} has no {PHYSICAL_NAME} in a table with column mapping; "
            "the schema is damaged"
        )
    raw_id = meta.get(_ID)
    return _Field(name, str(meta[PHYSICAL_NAME]), None if raw_id is None else int(raw_id),
                  _type_names(f.get("type"), mapped))


@dataclass(frozen=True)
class ColumnMapping:
    """How one table's (or one diff range's) logical columns are stored.

    Attributes:
        mode: `none`, `name` or `id`.
    """

    mode: str
    _root: _Names = _PLAIN

    @classmethod
    def of(cls, schema_string: str, mode: str) -> ColumnMapping:
        """The mapping a Delta `schemaString` defines in `mode`.

        Raises:
            CorruptLogError: a mapped field has no physical name.
        """
        return cls(mode, _type_names(json.loads(schema_string), mode != "none"))

    def retarget(self, newest: ColumnMapping, where: str) -> ColumnMapping:
        """This mapping with the logical names of `newest`, for reading older files as the newest schema.

        A column is the same column when its physical name is: a renamed one takes
        its newest name, a dropped one is left out (absent). Files written before
        column mapping was turned on store the names the mapping took as physical.

        Raises:
            UnsupportedFeatureError: a column name stands for another physical column
                in `newest` (dropped and added again, or a schema replaced): rows
                cannot be matched across that change.
        """
        current = newest._root.fields
        taken = {f.logical.lower() for f in current.values()}
        fields: dict[str, _Field] = {}
        for physical, f in self._root.fields.items():
            if physical in current:
                fields[physical] = current[physical]
            elif f.logical.lower() in taken:
                raise UnsupportedFeatureError(
                    f"column {f.logical!r} of {where} is another column than the newest {f.logical!r} "
                    "(dropped and added again, or the schema replaced, under column mapping), so rows "
                    "cannot be matched across that change; diff the ranges before and after it separately")
        mode = self.mode if self.active else "name"  # unmapped files store the names mapping kept
        return ColumnMapping(mode, _Names(fields, {f.id: f for f in fields.values() if f.id is not None}))

    def logical_name(self, physical: str) -> str | None:
        """The logical name of the top-level column stored as `physical` (None: no such column)."""
        known = self._root.fields.get(physical)
        return known.logical if known is not None else None

    @property
    def active(self) -> bool:
        """Whether files and the log use physical names."""
        return self.mode != "none"

    @functools.cached_property
    def _by_logical(self) -> dict[str, _Field]:
        return {f.logical: f for f in self._root.fields.values()}

    def logical_keys(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Re-key a log map (`partitionValues`, statistics) from physical to logical names."""
        if not self.active:
            return dict(values)
        return {f.logical: values[p] for p, f in self._root.fields.items() if p in values}

    def file_column(self, schema: pa.Schema, column: str) -> str | None:
        """The name under which a file with `schema` stores top-level `column` (None: absent)."""
        known = self._by_logical.get(column) if self.active else None
        if known is None:  # no mapping, or not a table column (e.g. _change_type)
            return column if column in schema.names else None
        found = _match(schema, known, self.mode)
        return found.name if found is not None else None

    def to_logical(self, column: str, data: pa.ChunkedArray) -> pa.ChunkedArray:
        """Rename the nested fields of `column`'s data as read from a file to logical names."""
        if not self.active:
            return data
        known = self._by_logical.get(column)
        target = _retype(data.type, known.names if known is not None else _PLAIN, _to_logical(self.mode))
        if target == data.type:
            return data
        return _view(data, target)

    def physical_name(self, column: str) -> str:
        """The name under which files and the log store top-level `column`."""
        known = self._by_logical.get(column) if self.active else None
        return known.physical if known is not None else column

    def to_physical(self, table: pa.Table) -> pa.Table:
        """`table` (logical names) as a data file stores it: physical names, Parquet field ids.

        Nested struct fields are renamed too; columns that are not table columns
        (a change file's `_change_type`) keep their names.
        """
        if not self.active:
            return table
        fields, columns = [], []
        for f, column in zip(table.schema, table.columns, strict=True):
            known = self._by_logical.get(f.name)
            if known is None:
                fields.append(f)
                columns.append(column)
                continue
            # Always retyped: type equality ignores the nested fields' ids.
            typ = _retype(f.type, known.names, _to_physical)
            fields.append(pa.field(known.physical, typ, f.nullable, _field_id(known)))
            columns.append(_view(column, typ) if pa.types.is_nested(typ) else column)
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def agrees(self, other: ColumnMapping, columns: Iterable[str]) -> bool:
        """Whether `other` stores each of `columns` (nested fields too) as this mapping does."""
        if not (self.active or other.active):
            return True
        return self.mode == other.mode and all(
            self._by_logical.get(c) == other._by_logical.get(c) for c in columns)


def _view(data: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """`data` under a type that differs only by field names and metadata (no copy)."""
    return pa.chunked_array([chunk.view(target) for chunk in data.chunks], type=target)


def _match(fields: Iterable[pa.Field], wanted: _Field, mode: str) -> pa.Field | None:
    for f in fields:
        if mode == "id" and wanted.id is not None:
            raw = (f.metadata or {}).get(_PARQUET_ID)
            if raw is not None and int(raw) == wanted.id:
                return f
        elif f.name == wanted.physical:
            return f
    return None


# How one struct field is renamed: its new name, metadata and the names below it (None: kept).
_Renamer = Callable[[pa.Field, _Names], "tuple[str, Any, _Names] | None"]


def _retype(t: pa.DataType, names: _Names, rename: _Renamer) -> pa.DataType:
    """`t` with every struct field `rename` knows renamed, at any depth."""
    if pa.types.is_struct(t):
        out = []
        for i in range(t.num_fields):
            f = t.field(i)
            known = rename(f, names)
            name, meta, child = known if known is not None else (f.name, f.metadata, _PLAIN)
            out.append(pa.field(name, _retype(f.type, child, rename), f.nullable, meta))
        return pa.struct(out)
    if pa.types.is_map(t):
        return pa.map_(pa.field(t.key_field.name, _retype(t.key_type, names.key or _PLAIN, rename), False),
                       pa.field(t.item_field.name, _retype(t.item_type, names.value or _PLAIN, rename),
                                t.item_field.nullable))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        value = t.value_field
        renamed = value.with_type(_retype(value.type, names.element or _PLAIN, rename))
        return pa.list_(renamed) if pa.types.is_list(t) else pa.large_list(renamed)
    return t


def _to_logical(mode: str) -> _Renamer:
    def rename(f: pa.Field, names: _Names) -> tuple[str, Any, _Names] | None:
        known = _logical_field(f, names, mode)
        return (known.logical, f.metadata, known.names) if known is not None else None
    return rename


def _field_id(known: _Field) -> dict[bytes, bytes] | None:
    return {_PARQUET_ID: str(known.id).encode()} if known.id is not None else None


def _to_physical(f: pa.Field, names: _Names) -> tuple[str, Any, _Names] | None:
    known = next((k for k in names.fields.values() if k.logical == f.name), None)
    return (known.physical, _field_id(known), known.names) if known is not None else None


def _logical_field(f: pa.Field, names: _Names, mode: str) -> _Field | None:
    if mode == "id":
        raw = (f.metadata or {}).get(_PARQUET_ID)
        return names.by_id.get(int(raw)) if raw is not None else None
    return names.fields.get(f.name)


def struct_fields(t: Any) -> Iterator[dict[str, Any]]:
    """Every struct field (as decoded schema JSON) in `t`, at any depth, parents first."""
    if not isinstance(t, dict):
        return
    kind = t.get("type")
    if kind == "struct":
        for f in t.get("fields", []):
            yield f
            yield from struct_fields(f.get("type"))
    elif kind == "array":
        yield from struct_fields(t.get("elementType"))
    elif kind == "map":
        yield from struct_fields(t.get("keyType"))
        yield from struct_fields(t.get("valueType"))


def max_column_id(metadata: Metadata) -> int:
    """The highest column id a mapped table has assigned (its property, or its schema's ids)."""
    raw = metadata.configuration.get(MAX_COLUMN_ID, "")
    known = int(raw) if raw.isdigit() else 0
    schema = json.loads(metadata.schema_string)
    ids = [int(m[_ID]) for f in struct_fields(schema) if _ID in (m := f.get("metadata") or {})]
    return max([known, *ids])


def assign(metadata: Metadata, keep_names: bool = False) -> Metadata:
    """`metadata` with a physical name and an id on every field that lacks them (mapped tables).

    New fields get the physical name `col-<uuid>` (unique across all versions,
    as the protocol requires; `keep_names`: their current name, when column
    mapping is turned on over files that store those names) and ids above
    `delta.columnMapping.maxColumnId`, which rises to the highest.
    """
    if mapping_mode(metadata) == "none":
        return metadata
    schema = json.loads(metadata.schema_string)
    top = max_column_id(metadata)
    for f in struct_fields(schema):
        meta = f["metadata"] = dict(f.get("metadata") or {})
        if PHYSICAL_NAME not in meta:
            meta[PHYSICAL_NAME] = str(f["name"]) if keep_names else f"col-{uuid.uuid4()}"
        if _ID not in meta:
            top += 1
            meta[_ID] = top
    return dataclasses.replace(metadata, schema_string=json.dumps(schema, separators=(",", ":")),
                               configuration={**metadata.configuration, MAX_COLUMN_ID: str(top)})


def keep_max_column_id(current: Metadata, restored: Metadata) -> Metadata:
    """`restored` with `delta.columnMapping.maxColumnId` no lower than `current`'s: ids are never reissued."""
    known = mapping_mode(current) != "none" or MAX_COLUMN_ID in current.configuration
    top = max_column_id(current) if known else 0
    if top <= (max_column_id(restored) if MAX_COLUMN_ID in restored.configuration else 0):
        return restored
    return dataclasses.replace(restored, configuration={**restored.configuration, MAX_COLUMN_ID: str(top)})


def unmapped(schema_string: str) -> str:
    """`schema_string` without the column mapping annotations (to compare schemas by their columns)."""
    schema = json.loads(schema_string)
    for f in struct_fields(schema):
        meta = f.get("metadata") or {}
        f["metadata"] = {k: v for k, v in meta.items() if k not in (PHYSICAL_NAME, _ID)}
    return json.dumps(schema, separators=(",", ":"))


NO_MAPPING = ColumnMapping("none")
