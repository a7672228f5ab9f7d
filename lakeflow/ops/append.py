"""Append: normalize the input, check it, write data files, commit once (exactly once with a txn)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lakeflow.actions import Action, Add, Metadata, Txn
from lakeflow.column_mapping import ColumnMapping, assign, mapping_mode
from lakeflow.config import LatePolicy, SchemaMode
from lakeflow.constraints import enforce, table_rules
from lakeflow.errors import CommitConflictError, DuplicateKeyError, InvalidArgumentError
from lakeflow.keys import KEY_CONFLICT_RETRIES, KeyReads, check_new_keys
from lakeflow.late import TIME_INFO_KEYS, Arrival, Quarantine, QuarantineTarget, arrive, open_target
from lakeflow.log import check_writable
from lakeflow.log_reader import LogReader
from lakeflow.ops.create import covering, create, protocol_for
from lakeflow.schema import extend_schema_string
from lakeflow.snapshot import Snapshot
from lakeflow.transaction import CommitResult, Transaction
from lakeflow.write import conform, discard, input_chunks, write_data_files

# Streamed appends gather this many bytes of Arrow batches before writing them as files:
# memory stays bounded by about one chunk (plus Parquet's buffers), not by the input.
STREAM_CHUNK_BYTES = 128 * 1024 * 1024
RESERVED_INFO_KEYS = frozenset({"timestamp", "inCommitTimestamp", "operation", "operationParameters",
                                "operationMetrics", "readVersion", "isBlindAppend", "engineInfo",
                                "clientVersion", "txnId"})


@dataclass(frozen=True)
class _Staged:
    """The data files an append wrote before it commits them."""

    adds: list[Add]
    num_rows: int
    new_schema: pa.Schema | None
    new_metadata: Metadata | None  # the evolved schema's, with column mapping names (files use them)
    arrival: Arrival
    keys: tuple[pa.Table, KeyReads] | None = None  # a keyed table's rows and what their check read


def _is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (lone surrogates cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_txn(app_id: str | None, txn_version: int | None) -> None:
    """Refuse a malformed application transaction before anything is read or written.

    Raises:
        InvalidArgumentError: only one of the two given, or either of a wrong type.
    """
    if (app_id is None) != (txn_version is None):
        raise InvalidArgumentError("pass app_id and txn_version together")
    if app_id is not None and (not isinstance(app_id, str) or not app_id or not _is_utf8(app_id)):
        raise InvalidArgumentError(f"app_id must be a non-empty UTF-8 string, got {app_id!r}")
    if txn_version is not None and (
            isinstance(txn_version, bool) or not isinstance(txn_version, int) or txn_version < 0):
        raise InvalidArgumentError(f"txn_version must be a non-negative int, got {txn_version!r}")


def committed_version(snapshot: Snapshot, app_id: str | None, txn_version: int | None) -> int | None:
    """The version that committed (app_id, txn_version) or a later batch, by `snapshot`; else None.

    Raises:
        InvalidArgumentError: only one of the two given, or either of a wrong type.
    """
    check_txn(app_id, txn_version)
    if app_id is None or txn_version is None:
        return None
    seen = snapshot.state.txns.get(app_id)
    if seen is None or seen.version < txn_version:
        return None
    return snapshot.log.txn_version_holding(snapshot.state, app_id, txn_version)


def check_info(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """User commitInfo fields, checked: not reserved, JSON-serializable UTF-8.

    Raises:
        InvalidArgumentError: a reserved key, or a value JSON cannot hold.
    """
    extra = dict(metadata or {})
    clash = sorted(set(extra) & (RESERVED_INFO_KEYS | TIME_INFO_KEYS))
    if clash:
        raise InvalidArgumentError(f"metadata keys {clash} are reserved by the commitInfo format")
    try:
        json.dumps(extra, ensure_ascii=False).encode("utf-8")  # as the commit will be
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"metadata must be JSON-serializable UTF-8: {e}") from e
    return extra



def append(snapshot: Snapshot, data: Any, app_id: str | None = None, txn_version: int | None = None,
           metadata: Mapping[str, Any] | None = None, schema_mode: SchemaMode | None = None,
           watermark: dt.datetime | None = None, late: LatePolicy | None = None,
           quarantine: QuarantineTarget | None = None) -> int:
    """Append rows on top of `snapshot` and return the new version; see `Table.append`."""
    check_txn(app_id, txn_version)
    extra = check_info(metadata)
    config = snapshot.config
    # Some writes judge the whole batch at once: keys (duplicates), event time
    # (lateness), identity columns (one run of values).
    whole = bool(config.key) or config.event_time is not None or bool(
        table_rules(snapshot.metadata).identities)
    chunks = input_chunks(data, STREAM_CHUNK_BYTES, whole=whole)
    snapshot = snapshot.latest()
    done = committed_version(snapshot, app_id, txn_version)
    if done is not None:
        return done
    check_writable(snapshot.protocol, snapshot.metadata)  # before a file is written
    staged = _stage(snapshot, chunks, schema_mode, watermark, late, quarantine)
    arrival, adds = staged.arrival, staged.adds
    if not adds and staged.new_schema is None and not arrival.must_commit:
        return settle_arrival(snapshot.log, arrival, snapshot.version)
    tx = Transaction(snapshot, "WRITE", {"mode": "Append",
                                         "partitionBy": json.dumps(list(snapshot.partition_columns))})
    tx.add(*_schema_change(snapshot, staged.new_schema, staged.new_metadata), *adds)
    tx.info({"numFiles": len(adds), "numOutputRows": staged.num_rows,
             "numOutputBytes": sum(a.size for a in adds)}, **extra, **arrival.info)
    if app_id is not None and txn_version is not None:
        tx.set_txn(app_id, txn_version)
    result = tx.commit() if staged.keys is None else commit_keyed(tx, *staged.keys, adds)
    if result.deduplicated:
        # Another attempt of the same batch won: our files were never committed.
        discard(snapshot.storage, adds)
        return result.version
    return settle_arrival(snapshot.log, arrival, result.version)


def _stage(snapshot: Snapshot, chunks: Iterator[pa.Table], schema_mode: SchemaMode | None, watermark: Any,
           late: LatePolicy | None, quarantine: QuarantineTarget | None) -> _Staged:
    """Check and write each chunk's data files as it arrives; nothing is committed.

    If a later chunk is refused (schema, lateness), the files of the earlier
    ones are deleted before the error propagates: they were never in the log.
    """
    adds: list[Add] = []
    schema, new_schema, rows = snapshot.schema, None, 0
    metadata, mapping = None, snapshot.column_mapping
    arrival, keys = None, None
    key = snapshot.config.key
    try:
        for chunk in chunks:
            conformed = conform(chunk, schema, schema_mode)
            if conformed.new_schema is not None:
                schema = new_schema = conformed.new_schema
                metadata = evolved(metadata or snapshot.metadata, new_schema)
                mapping = ColumnMapping.of(metadata.schema_string, mapping_mode(metadata))
            checked = enforce(snapshot.state, conformed.table, provided=chunk.column_names)
            arrival = arrive(snapshot, checked, watermark, late, quarantine)
            if key and arrival.rows.num_rows:  # keyed: one chunk (see append)
                keys = (arrival.rows, check_new_keys(snapshot, arrival.rows, key))
            if arrival.rows.num_rows:
                adds += write_data_files(snapshot.storage, arrival.rows, snapshot.partition_columns, mapping=mapping,
                                         target_file_size=snapshot.config.target_file_size)
                rows += arrival.rows.num_rows
    except BaseException:
        discard(snapshot.storage, adds)
        raise
    assert arrival is not None  # input_chunks yields at least one table
    return _Staged(adds, rows, new_schema, metadata, arrival, keys)


def evolved(metadata: Metadata, schema: pa.Schema) -> Metadata:
    """`metadata` with the columns `schema` adds at its end (new column mapping names and ids, if mapped)."""
    return assign(dataclasses.replace(metadata, schema_string=extend_schema_string(metadata.schema_string, schema)))


def _schema_change(snapshot: Snapshot, new_schema: pa.Schema | None, metadata: Metadata | None) -> list[Action]:
    """The metaData (and protocol, if it must rise) of an append that adds columns."""
    if new_schema is None or metadata is None:
        return []
    actions: list[Action] = [metadata]
    new_protocol = covering(snapshot.protocol, protocol_for(new_schema, metadata.configuration))
    if new_protocol != snapshot.protocol:
        actions.append(new_protocol)
    return actions


def commit_keyed(tx: Transaction, rows: pa.Table, reads: KeyReads, adds: Sequence[Add]) -> CommitResult:
    """Commit an append to a keyed table; after a conflict, check its keys again and retry.

    A conflict means a concurrent commit may hold one of the keys (or removed
    a file the check read). When the append fails, its files are deleted.
    """
    base = snap = tx.snapshot
    try:
        for _ in range(KEY_CONFLICT_RETRIES):
            try:
                return tx.rebased(snap).read(tuple(reads.files), reads.could_match).commit()
            except CommitConflictError:
                snap = snap.latest()
                if (snap.metadata, snap.protocol) != (base.metadata, base.protocol):
                    raise
                done = _already_committed(snap, tx.request.txn)
                if done is not None:
                    return done
                reads = check_new_keys(snap, rows, base.config.key)
        raise CommitConflictError(
            f"the append lost {KEY_CONFLICT_RETRIES} times in a row to concurrent commits that "
            "could hold its keys; retry later")
    except (CommitConflictError, DuplicateKeyError):
        discard(base.storage, adds)
        raise


def _already_committed(snap: Snapshot, txn: Txn | None) -> CommitResult | None:
    """The commit of another attempt of the same batch, if one landed meanwhile."""
    seen = snap.state.txns.get(txn.app_id) if txn is not None else None
    if txn is None or seen is None or seen.version < txn.version:
        return None
    return CommitResult(snap, snap.log.txn_version_holding(snap.state, txn.app_id, txn.version),
                        deduplicated=True)


def settle_arrival(source: LogReader, arrival: Arrival, version: int) -> int:
    """After the commit at `version`: send rows held back to the quarantine; return `version`."""
    if arrival.quarantine is not None:
        write_quarantine(source, arrival.quarantine, version)
    return version


def write_quarantine(source: LogReader, quarantine: Quarantine, version: int) -> None:
    """Append late rows to the quarantine table (created on first use), tagged with `version`."""
    rows = quarantine.tagged(version)
    log = open_target(source, quarantine.target)
    if log is None:
        assert isinstance(quarantine.target, str)
        log = create(quarantine.target, rows.schema, storage_options=source.storage_options,
                     description=f"late rows quarantined from {source.uri}")
    append(Snapshot(log, log.head), rows)


__all__ = ["STREAM_CHUNK_BYTES", "append", "check_info", "check_txn", "commit_keyed", "committed_version",
           "settle_arrival", "write_quarantine"]
