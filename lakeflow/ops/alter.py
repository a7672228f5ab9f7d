"""Metadata-only changes: properties, CHECK constraints, new columns. One commit each, no rewrite."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from lakeflow import config as cfg
from lakeflow.actions import Metadata, Protocol
from lakeflow.column_mapping import MAX_COLUMN_ID
from lakeflow.constraints import CONSTRAINT_PREFIX, enforce
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError, UnsupportedFeatureError
from lakeflow.keys import any_file
from lakeflow.late import format_window
from lakeflow.log import TableState, check_writable
from lakeflow.ops.append import evolved
from lakeflow.ops.columns import with_column_mapping
from lakeflow.ops.create import covering, protocol_for
from lakeflow.schema import (
    TYPE_CHANGE_KEY,
    arrow_to_delta,
    canonical,
    delta_fields,
    delta_to_arrow,
    is_supported_widening,
)
from lakeflow.snapshot import Snapshot
from lakeflow.transaction import Transaction

_CONSTRAINT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Properties whose change needs more than new metadata: each says where to go instead.
_REFUSED = {
    cfg.KEY: "the key is declared at create (existing rows were never checked for it)",
    cfg.EVENT_TIME: "the event-time column is declared at create",
    cfg.COLUMN_MAPPING_MODE: "lakeflow turns column mapping on (none -> name) only: other changes of the mode "
                             "need every file rewritten (files hold either names or ids)",
    MAX_COLUMN_ID: "it is managed by the writers that assign column ids",
    "delta.enableTypeWidening": "widen a column with widen_column(name, type), which turns it on",
    "delta.enableRowTracking": "lakeflow does not assign row ids",
}


def _commit_metadata(snapshot: Snapshot, metadata: Metadata, operation: str, parameters: Mapping[str, str],
                     read_rows: bool = False, protocol: Protocol | None = None) -> int:
    """Commit new metadata (and the protocol it needs, covering `protocol`); `read_rows`: it depended on every row."""
    check_writable(snapshot.protocol, snapshot.metadata)
    tx = Transaction(snapshot, operation, parameters).add(metadata)
    protocol = covering(protocol or snapshot.protocol, protocol_for(_schema(metadata), metadata.configuration))
    if protocol != snapshot.protocol:
        tx.add(protocol)
    if read_rows:  # a concurrent append could add rows the check never saw
        tx.read([f.add.path for f in snapshot.files], any_file)
    return tx.commit().version


def _schema(metadata: Metadata) -> pa.Schema:
    return delta_to_arrow(metadata.schema_string)


def set_properties(snapshot: Snapshot, properties: Mapping[str, str]) -> int:
    """Set table properties in one commit; return the version.

    Raises:
        InvalidArgumentError: a key or value is not a string, a constraint is set
            this way (use add_constraint), or a lakeflow property value is invalid.
        UnsupportedFeatureError: the property needs a feature lakeflow cannot write.
    """
    # Mode `name` can be turned on over the files as they are (their names become the physical names).
    mapping_on = properties.get(cfg.COLUMN_MAPPING_MODE) == "name" and snapshot.column_mapping.mode == "none"
    for k, v in properties.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentError(f"table properties must map str to str, got {k!r}: {v!r}")
        if k.startswith(CONSTRAINT_PREFIX):
            raise InvalidArgumentError(f"{k}: add CHECK constraints with add_constraint(name, sql)")
        if k in _REFUSED and snapshot.properties.get(k) != v and not (k == cfg.COLUMN_MAPPING_MODE and mapping_on):
            raise UnsupportedFeatureError(f"cannot set {k}: {_REFUSED[k]}")
    metadata, protocol = (with_column_mapping(snapshot.metadata, snapshot.protocol) if mapping_on
                          else (snapshot.metadata, snapshot.protocol))
    config = {**metadata.configuration, **properties}
    cfg.check_policy(config.get(cfg.LATE), f"table property {cfg.LATE}")
    if cfg.WINDOW in properties:
        format_window(properties[cfg.WINDOW])
    metadata = dataclasses.replace(metadata, configuration=config)
    return _commit_metadata(snapshot, metadata, "SET TBLPROPERTIES", {"properties": json.dumps(dict(properties))},
                            protocol=protocol)


def add_constraint(snapshot: Snapshot, name: str, sql: str) -> int:
    """Add a CHECK constraint after checking every existing row against it; return the version.

    Raises:
        InvalidArgumentError: a bad name, or a constraint of that name exists.
        ConstraintViolationError: an existing row violates it (nothing is written).
        UnsupportedFeatureError: lakeflow cannot evaluate the expression.
    """
    if not isinstance(name, str) or not _CONSTRAINT_NAME.match(name):
        raise InvalidArgumentError(f"constraint name must be a word (letters, digits, _), got {name!r}")
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidArgumentError("the constraint needs a SQL boolean expression, e.g. 'amount >= 0'")
    key = CONSTRAINT_PREFIX + name
    if any(k.lower() == key.lower() for k in snapshot.properties):
        raise InvalidArgumentError(f"the table already has a constraint named {name!r}; drop it first")
    metadata = dataclasses.replace(snapshot.metadata, configuration={**snapshot.properties, key: sql})
    checked = TableState(snapshot.version, snapshot.protocol, metadata, {})
    enforce(checked, snapshot.to_arrow(), new_rows=False)
    return _commit_metadata(snapshot, metadata, "ADD CONSTRAINT", {"name": name, "expr": sql}, read_rows=True)


def drop_constraint(snapshot: Snapshot, name: str) -> int:
    """Drop a CHECK constraint; return the version.

    Raises:
        InvalidArgumentError: the table has no constraint of that name.
    """
    key = next((k for k in snapshot.properties if k.lower() == (CONSTRAINT_PREFIX + str(name)).lower()), None)
    if key is None:
        names = [k[len(CONSTRAINT_PREFIX):] for k in snapshot.properties if k.startswith(CONSTRAINT_PREFIX)]
        raise InvalidArgumentError(f"the table has no constraint named {name!r}; it has {names}")
    config = {k: v for k, v in snapshot.properties.items() if k != key}
    return _commit_metadata(snapshot, dataclasses.replace(snapshot.metadata, configuration=config),
                            "DROP CONSTRAINT", {"name": str(name)})


def add_columns(snapshot: Snapshot, columns: pa.Schema | Sequence[pa.Field]) -> int:
    """Add nullable columns at the end of the schema (existing rows read them as null); return the version.

    Raises:
        SchemaMismatchError: a column exists already, is not nullable, or has a type Delta cannot store.
    """
    fields = list(columns)
    if not fields or not all(isinstance(f, pa.Field) for f in fields):
        raise SchemaMismatchError("add_columns takes pyarrow fields, e.g. [pa.field('note', pa.string())]")
    existing = {n.lower() for n in snapshot.schema.names}
    clash = [f.name for f in fields if f.name.lower() in existing]
    if clash or len({f.name.lower() for f in fields}) != len(fields):
        raise SchemaMismatchError(f"column(s) {clash or [f.name for f in fields]} exist already or repeat")
    strict = [f.name for f in fields if not f.nullable]
    if strict:
        raise SchemaMismatchError(f"new column(s) {strict} must be nullable: the existing rows have no value")
    metadata = evolved(snapshot.metadata, canonical(pa.schema([*snapshot.schema, *fields])))
    return _commit_metadata(snapshot, metadata, "ADD COLUMNS",
                            {"columns": json.dumps([f.name for f in fields])})


def _delta_type(name: str, typ: pa.DataType) -> Any:
    return json.loads(arrow_to_delta(pa.schema([pa.field(name, typ)])))["fields"][0]["type"]


def widen_column(snapshot: Snapshot, name: str, typ: pa.DataType) -> int:
    """Widen a column's type (int32 -> int64, float -> double, ...): metadata only; return the version.

    Files written before keep their type and are cast on read (the typeWidening
    feature, which this turns on); the change is recorded in `delta.typeChanges`.

    Raises:
        SchemaMismatchError: no such top-level column, or `typ` is not a type.
        UnsupportedFeatureError: the change is not a widening the protocol allows.
        InvalidArgumentError: the column has that type already.
    """
    fields = delta_fields(snapshot.metadata.schema_string)
    field = next((f for f in fields if f["name"] == name), None)
    if field is None or not isinstance(typ, pa.DataType):
        raise SchemaMismatchError(f"widen_column takes a top-level column of {snapshot.schema.names} and a "
                                  f"pyarrow type, got {name!r}, {typ!r}")
    old, new = field["type"], _delta_type(name, typ)
    if old == new:
        raise InvalidArgumentError(f"column {name!r} is {old} already")
    if not (isinstance(old, str) and isinstance(new, str) and is_supported_widening(old, new)):
        raise UnsupportedFeatureError(f"{old} -> {new} of column {name!r} is not a type widening the Delta "
                                      "protocol allows (Type Widening: int8->16->32->64, float->double, "
                                      "date->timestamp_ntz, wider decimals, ...)")
    meta = dict(field.get("metadata") or {})
    meta[TYPE_CHANGE_KEY] = [*meta.get(TYPE_CHANGE_KEY, []), {"fromType": old, "toType": new}]
    field.update(type=new, metadata=meta)
    schema_string = json.dumps({"type": "struct", "fields": fields}, separators=(",", ":"))
    metadata = dataclasses.replace(snapshot.metadata, schema_string=schema_string,
                                   configuration={**snapshot.properties, "delta.enableTypeWidening": "true"})
    check_writable(snapshot.protocol, snapshot.metadata)
    tx = Transaction(snapshot, "CHANGE COLUMN", {"column": name, "type": new}).add(metadata)
    protocol = covering(covering(snapshot.protocol, protocol_for(_schema(metadata), metadata.configuration)),
                        Protocol(3, 7, ("typeWidening",), ("typeWidening",)))
    if protocol != snapshot.protocol:
        tx.add(protocol)
    return tx.commit().version


__all__ = ["add_columns", "add_constraint", "drop_constraint", "set_properties", "widen_column"]
