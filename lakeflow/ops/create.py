"""Create a table: check the declaration, choose the smallest protocol, commit version 0."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from lakeflow import config as cfg
from lakeflow.actions import Action, Metadata, Protocol
from lakeflow.column_mapping import MODE, assign
from lakeflow.constraints import CONSTRAINT_PREFIX, enforce
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError, TableExistsError
from lakeflow.late import format_window
from lakeflow.log import TableState, list_log, writer_features
from lakeflow.log_reader import LogReader
from lakeflow.schema import arrow_to_delta, canonical, uses_timestamp_ntz
from lakeflow.storage import open_storage
from lakeflow.transaction import CommitRequest, commit_request


def protocol_for(schema: pa.Schema, configuration: Mapping[str, str]) -> Protocol:
    """The smallest protocol that covers the features the table uses."""
    ntz = uses_timestamp_ntz(schema)
    ict = configuration.get(cfg.IN_COMMIT_TIMESTAMPS, "").lower() == "true"
    cdf = configuration.get(cfg.CHANGE_DATA_FEED, "").lower() == "true"
    dv = configuration.get(cfg.DELETION_VECTORS, "").lower() == "true"
    checks = any(k.startswith(CONSTRAINT_PREFIX) for k in configuration)
    mapped = configuration.get(MODE, "none") not in ("", "none")
    if not (ntz or ict or dv):  # legacy versions, as deltalake writes them (5: column mapping)
        return Protocol(2 if mapped else 1, 5 if mapped else 4 if cdf else 3 if checks else 2)
    flags = {"checkConstraints": checks, "changeDataFeed": cdf, "timestampNtz": ntz,
             "inCommitTimestamp": ict, "deletionVectors": dv, "columnMapping": mapped}
    writer = ["appendOnly", "invariants", *(f for f, on in flags.items() if on)]
    reader = tuple(f for f in ("timestampNtz", "deletionVectors", "columnMapping") if flags[f])
    return Protocol(3 if reader else 1, 7, reader or None, tuple(writer))


def covering(old: Protocol, needed: Protocol) -> Protocol:
    """`old`, widened to support what `needed` does too: a feature is never dropped."""
    if old.min_writer_version < 7 and needed.min_writer_version < 7:
        return Protocol(max(old.min_reader_version, needed.min_reader_version),
                        max(old.min_writer_version, needed.min_writer_version))
    writer = writer_features(old) | writer_features(needed)
    if writer == writer_features(old) and needed.min_reader_version <= old.min_reader_version:
        return old
    readers = [p for p in (old, needed) if p.min_reader_version >= 2]
    if not readers:
        return Protocol(1, 7, None, tuple(sorted(writer)))
    reader = {f for p in readers for f in (p.reader_features if p.min_reader_version == 3
                                           else ("columnMapping",)) or ()}
    return Protocol(3, 7, tuple(sorted(reader)), tuple(sorted(writer)))


def _schema(schema: Any) -> pa.Schema:
    if not isinstance(schema, pa.Schema):
        try:
            schema = pa.schema(schema)
        except (TypeError, ValueError, pa.ArrowException) as e:
            raise SchemaMismatchError(f"schema must be a pyarrow.Schema: {e}") from e
    if len(schema) == 0:
        raise SchemaMismatchError("a table needs at least one column")
    return schema


def _check_columns(schema: pa.Schema, partition_by: tuple[str, ...], key: tuple[str, ...],
                   event_time: str | None) -> None:
    for what, cols in (("partition_by", partition_by), ("key", key)):
        unknown = [c for c in cols if c not in schema.names]
        if unknown:
            raise SchemaMismatchError(f"{what} names unknown column(s) {unknown}; the schema has {schema.names}")
        if len(set(cols)) != len(cols):
            raise SchemaMismatchError(f"{what} repeats a column: {list(cols)}")
    for c in partition_by:
        if pa.types.is_nested(schema.field(c).type):
            raise SchemaMismatchError(f"partition column {c!r} has nested type {schema.field(c).type}")
    if len(partition_by) == len(schema):
        raise SchemaMismatchError("at least one column must not be a partition column")
    if event_time is not None:
        if event_time not in schema.names:
            raise SchemaMismatchError(f"event_time column {event_time!r} is not in the schema")
        t = schema.field(event_time).type
        if not (pa.types.is_timestamp(t) or pa.types.is_date(t)):
            raise SchemaMismatchError(f"event_time column {event_time!r} must be a timestamp or date, not {t}")


def _configuration(properties: Mapping[str, str] | None, key: tuple[str, ...], event_time: str | None,
                   window: str | dt.timedelta | None) -> dict[str, str]:
    config: dict[str, str] = {cfg.CHANGE_DATA_FEED: "true"}
    for k, v in (properties or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentError(f"table properties must map str to str, got {k!r}: {v!r}")
        config[k] = v
    if key:
        config[cfg.KEY] = json.dumps(list(key))
    if event_time is not None:
        config[cfg.EVENT_TIME] = event_time
    if window is not None:
        if event_time is None:
            raise SchemaMismatchError("window= needs an event_time column")
        config[cfg.WINDOW] = format_window(window)
    cfg.check_policy(config.get(cfg.LATE), f"table property {cfg.LATE}")
    return config


class _CreateRace(Exception):
    pass


def _no_winner(version: int) -> tuple[list[Action], int | None]:
    raise _CreateRace(version)


def create(uri: str, schema: Any, partition_by: Sequence[str] = (), key: Sequence[str] = (),
           event_time: str | None = None, properties: Mapping[str, str] | None = None,
           storage_options: Mapping[str, Any] | None = None, *, name: str | None = None,
           description: str | None = None, window: str | dt.timedelta | None = None) -> LogReader:
    """Create a table (version 0) and return the reader of its log; see `Table.create`.

    Raises:
        TableExistsError: a table already exists at `uri`.
        SchemaMismatchError: the schema or a named column is invalid.
        InvalidArgumentError: a property is not a string, or names no lateness policy.
    """
    storage = open_storage(uri, storage_options)
    schema = _schema(schema)
    schema_string = arrow_to_delta(schema)
    schema = canonical(schema)
    partition_by, key = tuple(partition_by), tuple(key)
    _check_columns(schema, partition_by, key, event_time)
    config = _configuration(properties, key, event_time, window)
    protocol = protocol_for(schema, config)
    if list_log(storage).latest is not None:
        raise TableExistsError(f"a Delta table already exists at {storage.uri}; open it with lakeflow.Table(uri)")
    metadata = assign(Metadata(id=str(uuid.uuid4()), schema_string=schema_string,
                               partition_columns=partition_by, configuration=config,
                               name=name, description=description, created_time=int(time.time() * 1000)))
    empty = TableState(-1, protocol, metadata, {})
    enforce(empty, schema.empty_table())  # a CHECK constraint lakeflow cannot evaluate
    request = CommitRequest(
        actions=[protocol, metadata], operation="CREATE TABLE",
        parameters={"partitionBy": json.dumps(list(partition_by)), "key": json.dumps(list(key))},
    )
    try:
        outcome = commit_request(storage, empty, request, last_timestamp_ms=None, read_winner=_no_winner,
                                 max_attempts=1)
    except _CreateRace as e:
        raise TableExistsError(f"another writer created a table at {storage.uri} first") from e
    log = LogReader(storage, storage_options)
    log.record_timestamp(outcome.version, outcome.timestamp_ms)
    log.observe(outcome.state)
    return log


__all__ = ["covering", "create", "protocol_for"]
