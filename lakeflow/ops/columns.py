"""Rename and drop columns: metadata only (column mapping), one commit, no file rewritten.

Under column mapping a file stores each column by its physical name, so the
display name can change and a column can leave the schema while the files
stay as they are. A table without column mapping gets mode `name` in the same
commit: every column's physical name is its current name (what its files
hold), ids are assigned, and the protocol gains the `columnMapping` feature.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lakeflow import config as cfg
from lakeflow.actions import Metadata, Protocol
from lakeflow.column_mapping import MODE, assign, mapping_mode
from lakeflow.constraints import CONSTRAINT_PREFIX, table_rules
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError, UnsupportedFeatureError
from lakeflow.log import check_writable
from lakeflow.ops.create import covering
from lakeflow.schema import delta_fields
from lakeflow.snapshot import Snapshot
from lakeflow.transaction import Transaction

_GENERATION = "delta.generationExpression"


def with_column_mapping(metadata: Metadata, protocol: Protocol) -> tuple[Metadata, Protocol]:
    """`metadata` and `protocol` with column mapping mode `name` turned on, if it is off.

    Physical names are the current names (the files hold those); the protocol
    gains `columnMapping`: writer version 5 (reader 2) on a legacy protocol, as
    deltalake writes it, else the reader and writer feature.
    """
    if mapping_mode(metadata) != "none":
        return metadata, protocol
    on = assign(dataclasses.replace(metadata, configuration={**metadata.configuration, MODE: "name"}),
                keep_names=True)
    needed = Protocol(2, 5) if protocol.min_writer_version < 7 else Protocol(
        3, 7, ("columnMapping",), ("columnMapping",))
    return on, covering(protocol, needed)


def _mentions(sql: str, column: str) -> bool:
    """Whether SQL text names `column` (case-insensitively, as a word or backquoted)."""
    return re.search(rf"(?<![\w`]){re.escape(column)}(?![\w`])|`{re.escape(column)}`", sql,
                     re.IGNORECASE) is not None


def _uses(snapshot: Snapshot, column: str) -> str | None:
    """What declares or computes from `column`, so that it cannot be renamed or dropped; None: nothing."""
    config = snapshot.config
    if cfg.VIEW in snapshot.properties:
        return "the table is a lakeflow view, whose refreshes write its columns by name; create a new view instead"
    if column in config.key:
        return f"it is part of the table's key {list(config.key)} (lakeflow.key)"
    if column == config.event_time:
        return "it is the table's event-time column (lakeflow.eventTime)"
    for k, sql in snapshot.properties.items():
        if k.startswith(CONSTRAINT_PREFIX) and _mentions(sql, column):
            return f"the CHECK constraint {k[len(CONSTRAINT_PREFIX):]!r} ({sql}) names it; drop the constraint first"
    for rule in table_rules(snapshot.metadata).rules:
        if rule.kind == "invariant" and rule.name.split(".")[0] == column:
            return f"it has an invariant ({rule.expression})"
    for f in delta_fields(snapshot.metadata.schema_string):
        expression = (f.get("metadata") or {}).get(_GENERATION)
        if expression is None:
            continue
        if f["name"] == column:
            return f"it is a generated column ({expression})"
        if _mentions(str(expression), column):
            return f"the generated column {f['name']!r} is computed from it ({expression})"
    return None


def _column(snapshot: Snapshot, name: Any, what: str) -> str:
    """`name`, checked to be a top-level column of `snapshot` that nothing else depends on.

    Raises:
        InvalidArgumentError: `name` is not a non-empty string.
        SchemaMismatchError: no such column.
        UnsupportedFeatureError: a dotted path to drop, or something depends on the column.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{what} takes column names (non-empty strings), got {name!r}")
    column = next((str(n) for n in snapshot.schema.names if n.lower() == name.lower()), name)  # case-insensitive
    if column not in snapshot.schema.names:
        if "." in column and column.split(".")[0] in snapshot.schema.names:
            raise UnsupportedFeatureError(
                f"cannot {what} {column!r}: lakeflow drops top-level columns only, not fields of a struct "
                "(readers would meet the field in old files); rewrite the struct column instead")
        raise SchemaMismatchError(f"cannot {what} {column!r}: the table has no such column; its columns are "
                                  f"{snapshot.schema.names}")
    reason = _uses(snapshot, column)
    if reason is not None:
        raise UnsupportedFeatureError(f"cannot {what} column {column!r}: {reason}")
    return column


def _commit(snapshot: Snapshot, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
            partition_columns: Sequence[str], operation: str, parameters: Mapping[str, str]) -> int:
    """Commit the schema `edit` makes of the fields (mapping turned on first) in one metadata-only commit."""
    check_writable(snapshot.protocol, snapshot.metadata)
    metadata, protocol = with_column_mapping(snapshot.metadata, snapshot.protocol)
    fields = edit(delta_fields(metadata.schema_string))  # with the physical names
    schema_string = json.dumps({"type": "struct", "fields": fields}, separators=(",", ":"))
    metadata = dataclasses.replace(metadata, schema_string=schema_string,
                                   partition_columns=tuple(partition_columns))
    tx = Transaction(snapshot, operation, parameters).add(metadata)
    if protocol != snapshot.protocol:
        tx.add(protocol)
    return tx.commit().version


def _clash(siblings: Sequence[str], old: str, new: Any, path: str) -> None:
    """Refuse a new name that is no name or that a sibling of `old` has (case-insensitively).

    Raises:
        InvalidArgumentError: `new` is not a non-empty string.
        SchemaMismatchError: the name is taken.
    """
    if not isinstance(new, str) or not new.strip():
        raise InvalidArgumentError(f"the new column name must be a non-empty string, got {new!r}")
    clash = [n for n in siblings if n.lower() == new.lower() and n != old]
    if clash or new == old:
        raise SchemaMismatchError(f"cannot rename {path!r} to {new!r}: there is a column {(clash or [old])[0]!r} "
                                  "already (Delta column names are case-insensitive)")


def _struct_path(fields: list[dict[str, Any]], path: Sequence[str], where: str) -> list[dict[str, Any]]:
    """The struct fields that hold the last field of `path` (through struct fields only).

    Raises:
        SchemaMismatchError: a step of the path is no field.
        UnsupportedFeatureError: a step is an array or map.
    """
    for step in path[:-1]:
        f = next((f for f in fields if f["name"].lower() == step.lower()), None)
        t = f["type"] if f is not None else None
        if not isinstance(t, dict) or t.get("type") != "struct":
            error = UnsupportedFeatureError if isinstance(t, dict) else SchemaMismatchError
            raise error(f"cannot rename {where!r}: {step!r} is not a struct column (nested fields inside arrays "
                        "and maps cannot be renamed)")
        fields = t["fields"]
    if not any(f["name"].lower() == path[-1].lower() for f in fields):
        raise SchemaMismatchError(f"cannot rename {where!r}: the struct has no field {path[-1]!r}")
    return fields


def _rename_nested(snapshot: Snapshot, old: str, new: str) -> int:
    """Rename the struct field at the dotted path `old` to `new` (its new last name)."""
    path = old.split(".")
    top = _column(snapshot, path[0], "rename")
    path[0] = top
    siblings = _struct_path(delta_fields(snapshot.metadata.schema_string), path, old)
    leaf = next(f["name"] for f in siblings if f["name"].lower() == path[-1].lower())
    _clash([f["name"] for f in siblings], leaf, new, old)

    def edit(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for f in _struct_path(fields, path, old):
            if f["name"] == leaf:
                f["name"] = new
        return fields

    return _commit(snapshot, edit, snapshot.partition_columns, "RENAME COLUMN",
                   {"oldColumnPath": ".".join([*path[:-1], leaf]), "newColumnPath": ".".join([*path[:-1], new])})


def rename_column(snapshot: Snapshot, old: str, new: str) -> int:
    """Rename column `old` to `new` in one metadata-only commit; return the version.

    A partition column can be renamed (its files' partition values are keyed by
    the physical name); the table's partitioning follows the new name. A dotted
    `old` (`"address.zip"`) names a field of a struct column, and `new` its new
    field name.

    Raises:
        SchemaMismatchError: `old` is no column, or `new` exists (names are case-insensitive).
        UnsupportedFeatureError: `old` (or the column holding it) is part of the key, the
            event-time column, named in a CHECK constraint or generation expression, generated,
            or a field inside an array or map.
        InvalidArgumentError: a name is not a non-empty string.
    """
    if isinstance(old, str) and "." in old and old.lower() not in {n.lower() for n in snapshot.schema.names}:
        return _rename_nested(snapshot, old, new)
    old = _column(snapshot, old, "rename")
    _clash(snapshot.schema.names, old, new, old)

    def edit(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**f, "name": new} if f["name"] == old else f for f in fields]

    parts = [new if c == old else c for c in snapshot.partition_columns]
    return _commit(snapshot, edit, parts, "RENAME COLUMN", {"oldColumnPath": old, "newColumnPath": new})


def drop_columns(snapshot: Snapshot, names: Sequence[str]) -> int:
    """Drop top-level columns in one metadata-only commit (files keep their data); return the version.

    Raises:
        SchemaMismatchError: a name is no column, or no data column would be left.
        UnsupportedFeatureError: a partition column, part of the key, the event-time
            column, named in a CHECK constraint or generation expression, generated,
            or a nested field.
        InvalidArgumentError: no names, or one repeats.
    """
    names = list(names)
    if any(not isinstance(n, str) for n in names):  # e.g. a list passed as one name: no TypeError from set()
        raise InvalidArgumentError(f"drop_columns takes column names (strings), got {names!r}")
    if not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"drop_columns takes distinct column names, got {names!r}")
    dropped = [_column(snapshot, n, "drop") for n in names]
    parts = [c for c in dropped if c in snapshot.partition_columns]
    if parts:
        raise UnsupportedFeatureError(
            f"cannot drop partition column(s) {parts}: every file is laid out by them; recreate the table "
            "without them (overwrite with schema_mode='overwrite' keeps the partitioning, so copy the rows "
            "into a new table)")
    left = [n for n in snapshot.schema.names if n not in dropped]
    if not [n for n in left if n not in snapshot.partition_columns]:
        raise SchemaMismatchError(f"cannot drop {dropped}: a table needs at least one column that is not a "
                                  "partition column")
    def edit(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [f for f in fields if f["name"] not in dropped]

    return _commit(snapshot, edit, snapshot.partition_columns, "DROP COLUMNS",
                   {"columns": json.dumps(dropped)})


__all__ = ["drop_columns", "rename_column", "with_column_mapping"]
