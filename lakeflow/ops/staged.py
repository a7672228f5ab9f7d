"""Staged writes: workers write data files, one coordinator commits them exactly once.

The split every distributed Delta writer makes (Spark, Ray, Dask): `write_files`
runs where the data is, with nothing but the store (it never reads `_delta_log`),
and returns the `add` actions of the files it wrote as a small picklable value;
`commit_files` runs once, on the coordinator, checks every staged file against
the table (schema, partitioning, NOT NULL and event times from the files'
statistics, keys by reading the staged key columns) and commits them all in one
commit. With an
application transaction (`app_id`, `txn_version`) the commit is exactly once: a
retried job finds its batch recorded, commits nothing and deletes its own files.
Files staged but never committed (a job killed before its commit) are orphans
that `vacuum` deletes once older than its retention.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from lakeflow.actions import Add
from lakeflow.column_mapping import NO_MAPPING, ColumnMapping, unmapped
from lakeflow.constraints import table_rules
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError, UnsupportedFeatureError
from lakeflow.keys import check_new_keys
from lakeflow.late import EventClock, event_micros, from_micros
from lakeflow.log import check_writable
from lakeflow.ops.append import STREAM_CHUNK_BYTES, check_info, commit_keyed, committed_version
from lakeflow.schema import arrow_to_delta, canonical, delta_fields, delta_to_arrow
from lakeflow.snapshot import ScanFile, Snapshot, scan_files, stat_bounds, typed_partition_values
from lakeflow.storage import open_storage
from lakeflow.transaction import Transaction
from lakeflow.write import conform, discard, input_chunks, write_data_files

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class StagedFiles:
    """Data files `write_files` wrote under a table root, not yet in its log.

    Attributes:
        root: the table root they were written under (as the store names it).
        job_id: the job id their names carry (`part-<job_id>-...parquet`).
        schema_string: the Delta schema of the rows they hold.
        partition_by: the partition columns they are laid out by.
        adds: their `add` actions, with statistics.
        column_mapping: how the files name their columns (the table's, for a
            table with column mapping).
    """

    root: str
    job_id: str
    schema_string: str
    partition_by: tuple[str, ...]
    adds: tuple[Add, ...]
    column_mapping: ColumnMapping = NO_MAPPING

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the staged rows."""
        return delta_to_arrow(self.schema_string)

    @property
    def num_rows(self) -> int:
        """Rows in the staged files (from their statistics)."""
        return sum(a.num_records() or 0 for a in self.adds)


def _check_job_id(job_id: str | None) -> str:
    if job_id is None:
        return uuid.uuid4().hex
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidArgumentError(
            f"job_id must be 1-100 letters, digits, '_', '-' or '.' (starting with a letter or "
            f"digit), as it goes into file names; got {job_id!r}")
    return job_id


def _check_partition_by(schema: pa.Schema, partition_by: Sequence[str]) -> tuple[str, ...]:
    cols = (partition_by,) if isinstance(partition_by, str) else tuple(partition_by)
    unknown = [c for c in cols if schema.get_field_index(c) < 0]
    if unknown:
        raise SchemaMismatchError(f"partition_by names unknown column(s) {unknown}; columns: {schema.names}")
    return cols


def write_files(uri: str, data: Any, partition_by: Sequence[str] = (), schema: pa.Schema | None = None,
                storage_options: Mapping[str, Any] | None = None, job_id: str | None = None,
                column_mapping: ColumnMapping = NO_MAPPING) -> StagedFiles:
    """Write `data` as data files under the table root at `uri`, without committing them.

    Runs anywhere the store is reachable: it reads nothing of the table's log.
    Commit the result (with the results of the other workers) with
    `Table.commit_files`; files never committed are deleted by `vacuum`.

    Args:
        uri: the table's URI.
        data: anything `Table.append` accepts; streams are written in chunks.
        partition_by: the table's partition columns.
        schema: the table schema: the rows are conformed to it (column order,
            lossless casts, NOT NULL) as `append` does. Default: the data's own.
        storage_options: credentials and store settings, as for `Table`.
        job_id: goes into the file names (default a random id).
        column_mapping: for a table with column mapping, its
            `snapshot().column_mapping`: files store the physical names
            (`commit_files` refuses files written without it).

    Raises:
        SchemaMismatchError: the data does not fit `schema`, or has a type Delta
            cannot store (nothing of it is left written).
        InvalidArgumentError: a malformed `job_id` or input.
    """
    job = _check_job_id(job_id)
    storage = open_storage(uri, storage_options)
    target = None if schema is None else canonical(schema)
    adds: list[Add] = []
    parts: tuple[str, ...] = ()
    try:
        for chunk in input_chunks(data, STREAM_CHUNK_BYTES):
            target = target if target is not None else canonical(chunk.schema)
            parts = _check_partition_by(target, partition_by)
            rows = conform(chunk, target).table
            if rows.num_rows:
                adds += write_data_files(storage, rows, parts, prefix=f"part-{job}", mapping=column_mapping)
    except BaseException:
        discard(storage, adds)
        raise
    assert target is not None  # input_chunks yields at least one table
    return StagedFiles(storage.uri.rstrip("/"), job, arrow_to_delta(target), parts, tuple(adds), column_mapping)


def commit_files(snapshot: Snapshot, staged: Sequence[StagedFiles], app_id: str | None = None,
                 txn_version: int | None = None, operation: str = "WRITE",
                 metadata: Mapping[str, Any] | None = None) -> int:
    """Commit staged files in one commit on top of the latest version; see `Table.commit_files`."""
    extra = check_info(metadata)
    staged = _check_list(staged)
    snapshot = snapshot.latest()
    adds = [a for s in staged for a in s.adds]
    version = committed_version(snapshot, app_id, txn_version)
    if version is not None:
        _discard_retry(snapshot, version, adds)
        return version
    check_writable(snapshot.protocol, snapshot.metadata)
    _check_fits(snapshot, staged)
    time_info = _event_time_info(snapshot, adds)
    if not adds:
        return snapshot.version
    tx = Transaction(snapshot, operation, {"mode": "Append",
                                           "partitionBy": json.dumps(list(snapshot.partition_columns))})
    tx.add(*adds).info({"numFiles": len(adds), "numOutputRows": sum(s.num_rows for s in staged),
                        "numOutputBytes": sum(a.size for a in adds)}, **extra, **time_info)
    if app_id is not None and txn_version is not None:
        tx.set_txn(app_id, txn_version)
    key = snapshot.config.key
    if key:
        rows = _staged_keys(snapshot, adds, key)
        result = commit_keyed(tx, rows, check_new_keys(snapshot, rows, key), adds)
    else:
        result = tx.commit()
    if result.deduplicated:  # another attempt of the same batch won the race
        discard(snapshot.storage, adds)
    return result.version


def _check_list(staged: Any) -> list[StagedFiles]:
    """The staged values as a list, each a `StagedFiles` and each file once.

    Raises:
        InvalidArgumentError: not a sequence of `StagedFiles`, or a file repeats.
    """
    items = [staged] if isinstance(staged, StagedFiles) else list(staged)
    wrong = [type(s).__name__ for s in items if not isinstance(s, StagedFiles)]
    if wrong:
        raise InvalidArgumentError(f"commit_files takes the StagedFiles write_files returns, got {wrong[:3]}")
    paths = [a.path for s in items for a in s.adds]
    if len(set(paths)) != len(paths):
        raise InvalidArgumentError("the same staged files were passed twice; pass each write_files result once")
    return items


def _discard_retry(snapshot: Snapshot, version: int, adds: Sequence[Add]) -> None:
    """Delete the files of a retried batch, unless they are the very files `version` committed."""
    try:
        committed = {a.path for a in snapshot.log.read_commit(version) if isinstance(a, Add)}
    except FileNotFoundError:
        return  # the commit is gone from the log: cannot tell, leave them for vacuum
    if not committed & {a.path for a in adds}:
        discard(snapshot.storage, adds)


def _check_fits(snapshot: Snapshot, staged: Sequence[StagedFiles]) -> None:
    """Refuse staged files that do not belong to this table or do not fit its schema and rules.

    Raises:
        InvalidArgumentError: written under another root, or already in the table.
        SchemaMismatchError: columns, types, partitioning or NOT NULL do not fit.
        UnsupportedFeatureError: the table has a rule only the rows can check.
    """
    _refuse_row_rules(snapshot)
    root = snapshot.storage.uri.rstrip("/")
    for s in staged:
        if s.root != root:
            raise InvalidArgumentError(
                f"files staged under {s.root} cannot be committed to the table at {root}; "
                "call write_files with this table's URI")
        if set(s.partition_by) != set(snapshot.partition_columns):
            raise SchemaMismatchError(
                f"the files of job {s.job_id} are partitioned by {list(s.partition_by)} but the table by "
                f"{list(snapshot.partition_columns)}; call write_files with partition_by=table.partition_by")
        known = [c for c in s.schema.names if c in snapshot.schema.names]
        if not snapshot.column_mapping.agrees(s.column_mapping, known):
            raise SchemaMismatchError(
                f"the files of job {s.job_id} name their columns by another column mapping than the table's "
                f"(mode {snapshot.column_mapping.mode}); pass column_mapping=table.snapshot().column_mapping "
                "to write_files")
        _check_schema(snapshot, s)
    active = {f.add.path for f in snapshot.files}
    again = [a.path for s in staged for a in s.adds if a.path in active]
    if again:
        raise InvalidArgumentError(f"staged file(s) {again[:3]} are already in the table; nothing was committed")


def _refuse_row_rules(snapshot: Snapshot) -> None:
    """Refuse tables whose rules need the rows themselves (they are on the workers).

    Raises:
        UnsupportedFeatureError: naming the rule.
    """
    rules = table_rules(snapshot.metadata)
    named = [f"{r.kind} {r.name!r} ({r.expression})" for r in rules.rules]
    named += [f"generated column {c!r}" for c in rules.generated]
    named += [f"identity column {i.column!r}" for i in rules.identities]
    if named:
        raise UnsupportedFeatureError(
            f"the table has {', '.join(named)}, which commit_files cannot check without the rows; "
            "write to this table with append instead")


def _event_time_info(snapshot: Snapshot, adds: Sequence[Add]) -> dict[str, Any]:
    """The event-time commitInfo of an append of the staged rows, proven on time by statistics.

    A file whose minimum event time is not behind the table watermark holds no
    late row (writers truncate timestamp statistics to milliseconds, downwards),
    so every lateness policy takes all its rows, as `append` would.

    Raises:
        UnsupportedFeatureError: a file may hold rows behind the watermark, or its
            statistics do not say.
    """
    clock = EventClock.of(snapshot)
    if clock is None:
        return {}
    watermark = clock.watermark_us
    behind = [] if watermark is None else [
        a.path for a in adds
        if (earliest := _earliest_event(snapshot, a, clock.column)) is not None and earliest < watermark]
    if behind:
        assert watermark is not None
        raise UnsupportedFeatureError(
            f"the staged file(s) {behind[:3]} may hold rows behind the table watermark "
            f"{from_micros(watermark)} (event-time column {clock.column!r}; or their statistics do "
            "not say), and the lateness policy needs the rows to judge them; write these rows "
            "with append instead")
    return clock.commit_info(0, ())


def _earliest_event(snapshot: Snapshot, add: Add, column: str) -> float | None:
    """A lower bound of the file's event times in µs (-inf: unknown); None: it has none (all null)."""
    typ = snapshot.schema.field(column).type
    logical = snapshot.column_mapping.logical_keys
    if column in snapshot.partition_columns:
        value = typed_partition_values(logical(add.partition_values), snapshot.schema,
                                       snapshot.partition_columns)[column]
        return None if value is None else int(event_micros(pa.array([value], typ))[0].as_py())
    stats = add.parsed_stats() or {}
    rows, nulls = stats.get("numRecords"), logical(stats.get("nullCount") or {}).get(column)
    if rows is not None and nulls == rows:
        return None
    low = logical(stats.get("minValues") or {}).get(column)
    bounds = stat_bounds(typ, low, low) if low is not None else None
    if bounds is None:
        return -math.inf
    return int(event_micros(pa.array([bounds[0].as_py()], typ))[0].as_py())


def _check_schema(snapshot: Snapshot, s: StagedFiles) -> None:
    """The staged columns must be table columns of the same Delta type; NOT NULL from the stats.

    Raises:
        SchemaMismatchError: naming the column.
    """
    table = {f["name"]: f for f in delta_fields(unmapped(snapshot.metadata.schema_string))}
    mine = {f["name"]: f for f in delta_fields(s.schema_string)}
    unknown = sorted(set(mine) - set(table))
    if unknown:
        raise SchemaMismatchError(
            f"the files of job {s.job_id} have column(s) {unknown} that the table does not have "
            f"(table columns: {list(table)}); append with schema_mode='merge' to add them")
    for name, f in mine.items():
        if f["type"] != table[name]["type"]:
            raise SchemaMismatchError(
                f"column {name!r} of the files of job {s.job_id} has Delta type {json.dumps(f['type'])} "
                f"but the table stores {json.dumps(table[name]['type'])}; pass schema=table.schema to "
                "write_files so the rows are cast as append casts them")
    for name in (n for n, f in table.items() if not f.get("nullable", True)):
        if name not in mine:
            raise SchemaMismatchError(f"the files of job {s.job_id} lack the non-nullable column {name!r}")
        for a in s.adds:
            if _nulls(a, name, snapshot.partition_columns, snapshot.column_mapping) != 0:
                raise SchemaMismatchError(
                    f"column {name!r} is not nullable but the staged file {a.path} has null(s) in it "
                    "(or no null count in its statistics); nothing was committed")


def _nulls(add: Add, column: str, partition_columns: Sequence[str], mapping: ColumnMapping) -> int | None:
    """How many nulls the file holds in `column` (None: its statistics do not say)."""
    stored = mapping.physical_name(column)
    if column in partition_columns:
        return 0 if add.partition_values.get(stored) is not None else add.num_records()
    count = ((add.parsed_stats() or {}).get("nullCount") or {}).get(stored)
    return count if isinstance(count, int) else None


def _staged_keys(snapshot: Snapshot, adds: Sequence[Add], key: Sequence[str]) -> pa.Table:
    """The key columns of the staged rows, read through the snapshot scan path."""
    mapping = snapshot.column_mapping
    files = [ScanFile(unquote(a.path), typed_partition_values(mapping.logical_keys(a.partition_values),
                                                              snapshot.schema, snapshot.partition_columns))
             for a in adds]
    return scan_files(snapshot.storage, snapshot.schema, files, mapping).to_table(columns=list(key))


__all__ = ["StagedFiles", "commit_files", "committed_version", "write_files"]
