"""Overwrite: replace every row of the table in one commit (optionally the schema too)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Action, Add, Cdc, Metadata
from lakeflow.column_mapping import ColumnMapping, assign, mapping_mode, unmapped
from lakeflow.constraints import enforce, table_rules
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError, UnsupportedFeatureError
from lakeflow.keys import any_file, check_unique
from lakeflow.log import TableState, check_writable
from lakeflow.ops.append import check_info, check_txn, committed_version
from lakeflow.ops.create import covering, protocol_for
from lakeflow.ops.delete import deleting
from lakeflow.ops.rewrite import change_rows, replacement_changes
from lakeflow.schema import arrow_to_delta, canonical
from lakeflow.snapshot import Snapshot
from lakeflow.transaction import Transaction
from lakeflow.write import conform, discard, to_arrow_table, write_cdc_files, write_data_files

OverwriteSchemaMode = Literal["overwrite"]


def _new_metadata(snapshot: Snapshot, schema: pa.Schema) -> Metadata:
    """The metadata of a schema overwrite: the new schema; key, event time and partitions must fit it."""
    if not schema.names:
        raise SchemaMismatchError("a schema overwrite needs at least one column")
    missing = [c for c in (*snapshot.partition_columns, *snapshot.config.key,
                           *([snapshot.config.event_time] if snapshot.config.event_time else []))
               if c not in schema.names]
    if missing:
        raise SchemaMismatchError(
            f"the new schema lacks column(s) {missing} the table partitions by or declares as key or event "
            "time; recreate the table to change those")
    schema_string = arrow_to_delta(schema)
    if not snapshot.column_mapping.active:
        return dataclasses.replace(snapshot.metadata, schema_string=schema_string)
    if schema_string == unmapped(snapshot.metadata.schema_string):  # the same columns: keep their files' names
        return snapshot.metadata
    # Every file is replaced: every column gets a new physical name and id.
    return assign(dataclasses.replace(snapshot.metadata, schema_string=schema_string))


def _prepare(snapshot: Snapshot, data: Any, schema_mode: OverwriteSchemaMode | None
             ) -> tuple[pa.Table, list[Action], ColumnMapping]:
    """The rows to write, conformed and checked, the metadata/protocol actions they need, and the files' mapping."""
    if schema_mode not in (None, "overwrite"):
        raise InvalidArgumentError(f"schema_mode must be None or 'overwrite', got {schema_mode!r}")
    raw = to_arrow_table(data)
    actions: list[Action] = []
    state = snapshot.state
    if schema_mode == "overwrite":
        metadata = _new_metadata(snapshot, canonical(raw.schema))
        if metadata.schema_string != snapshot.metadata.schema_string:
            actions.append(metadata)
            protocol = covering(snapshot.protocol, protocol_for(canonical(raw.schema), metadata.configuration))
            if protocol != snapshot.protocol:
                actions.append(protocol)
            state = TableState(state.version, protocol, metadata, {})
        schema = canonical(raw.schema)
    else:
        schema = snapshot.schema
    rows = enforce(state, conform(raw, schema).table, provided=raw.column_names,
                   removes=bool(snapshot.files))
    if snapshot.config.key:
        check_unique(rows, snapshot.config.key)
    return rows, actions, ColumnMapping.of(state.metadata.schema_string, mapping_mode(state.metadata))


def _replaced(snapshot: Snapshot, rows: pa.Table, where: Any, schema_mode: OverwriteSchemaMode | None
              ) -> tuple[Transaction, list[Add | Cdc]]:
    """The transaction of an overwrite (all rows, or those `where` matches) and the files it wrote."""
    if where is None:
        tx = Transaction(snapshot, "WRITE",
                         {"mode": "Overwrite", "partitionBy": json.dumps(list(snapshot.partition_columns))})
        # An overwrite read the whole table: a concurrent append's rows would survive it.
        tx.remove(*snapshot.files).read(predicate=any_file).info({"numRemovedFiles": len(snapshot.files)})
        # (A schema overwrite changes what a row is: no change data files for it.)
        cdcs: list[Add | Cdc] = [*replacement_changes(snapshot, snapshot.files, rows)] if schema_mode is None else []
        tx.add(*cdcs)
        return tx, cdcs
    expr = snapshot.filter_expression(where)
    if not isinstance(expr, pc.Expression):
        raise InvalidArgumentError(f"where must be a SQL string or a pyarrow expression, got {type(where).__name__}")
    if schema_mode is not None or snapshot.config.key:
        raise UnsupportedFeatureError("overwrite(where=...) replaces rows of the current schema of a table "
                                      "without a declared key; use merge() for keyed tables")
    outside = rows.num_rows - rows.filter(pc.coalesce(expr, pa.scalar(False))).num_rows
    if outside:
        raise InvalidArgumentError(f"{outside} row(s) of the data do not match where={where}: an overwrite "
                                   "with where= writes only rows it replaces (Delta's replaceWhere)")
    tx, written = deleting(snapshot, expr, operation="WRITE",
                           parameters={"mode": "Overwrite", "predicate": str(expr)})
    inserts: list[Cdc] = []
    if written.cdcs and rows.num_rows:  # change data files alone describe a commit: the new rows too
        inserts = write_cdc_files(snapshot.storage, change_rows(snapshot.schema, [(rows, "insert")]),
                                  snapshot.partition_columns, mapping=snapshot.column_mapping)
        tx.add(*inserts)
    return tx, [*written.adds, *written.cdcs, *inserts]


def overwrite(snapshot: Snapshot, data: Any, *, where: Any = None, schema_mode: OverwriteSchemaMode | None = None,
              app_id: str | None = None, txn_version: int | None = None,
              metadata: Mapping[str, Any] | None = None) -> int:
    """Replace the table's rows (or those `where` matches) with `data` in one commit; see `Table.overwrite`."""
    check_txn(app_id, txn_version)
    extra = check_info(metadata)
    check_writable(snapshot.protocol, snapshot.metadata)
    if table_rules(snapshot.metadata).append_only and snapshot.files:
        enforce(snapshot.state, removes=True)  # AppendOnlyError before a file is written
    done = committed_version(snapshot, app_id, txn_version)
    if done is not None:
        return done
    rows, actions, mapping = _prepare(snapshot, data, schema_mode)
    tx, written = _replaced(snapshot, rows, where, schema_mode)
    adds: list[Add] = (write_data_files(snapshot.storage, rows, snapshot.partition_columns, mapping=mapping)
                       if rows.num_rows else [])
    tx.add(*actions, *adds)
    tx.info({"numFiles": len(adds), "numOutputRows": rows.num_rows, "numOutputBytes": sum(a.size for a in adds)},
            **extra)
    if app_id is not None and txn_version is not None:
        tx.set_txn(app_id, txn_version)
    try:
        result = tx.commit()
    except BaseException:
        discard(snapshot.storage, [*adds, *written])
        raise
    if result.deduplicated:
        discard(snapshot.storage, [*adds, *written])
    return result.version


__all__ = ["OverwriteSchemaMode", "overwrite"]
