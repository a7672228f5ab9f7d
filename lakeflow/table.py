"""The table handle: open, refresh, snapshots, time travel, history, transactions.

A `Table` is a thin handle over a `LogReader`: it holds the newest state it has
seen (refreshed incrementally, reading only newer commits) and hands out
immutable `Snapshot`s and snapshot-bound `Transaction`s. Every operation lives
in `lakeflow.ops` and takes a snapshot; the methods here are one-line shorthands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from lakeflow.checkpoint import write_checkpoint
from lakeflow.config import DEFAULT_TARGET_FILE_SIZE, LatePolicy, SchemaMode
from lakeflow.diff import CommitChanges, Diff, compute_diff, iter_changes
from lakeflow.errors import InvalidArgumentError, VersionNotFoundError
from lakeflow.history import Commit, history
from lakeflow.late import QuarantineTarget, read_watermark, window_micros, window_start
from lakeflow.log import TableState, check_writable
from lakeflow.log_reader import LogReader, VersionRef
from lakeflow.ops import alter, maintenance
from lakeflow.ops import append as append_op
from lakeflow.ops import columns as columns_op
from lakeflow.ops import create as create_op
from lakeflow.ops import overwrite as overwrite_op
from lakeflow.ops import restore as restore_op
from lakeflow.ops import staged as staged_op
from lakeflow.ops.delete import delete_where
from lakeflow.ops.maintenance import CompactResult, VacuumResult
from lakeflow.ops.merge import (
    MatchedAction,
    MergeResult,
    NullKeys,
    WhenNotMatched,
    WhenNotMatchedBySource,
    merge_into,
)
from lakeflow.ops.overwrite import OverwriteSchemaMode
from lakeflow.ops.staged import StagedFiles
from lakeflow.ops.update import Assignment, update_where
from lakeflow.snapshot import Snapshot
from lakeflow.storage import Storage, open_storage
from lakeflow.transaction import Transaction


class Table:
    """A handle on one Delta table.

    Args:
        uri: local path, `memory://name`, `s3://bucket/prefix` or another fsspec URI.
        storage_options: credentials and store settings (see `open_storage`).

    Raises:
        TableNotFoundError: there is no Delta log at `uri`.
    """

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None,
                 *, _log: LogReader | None = None) -> None:
        self._log = _log if _log is not None else LogReader(open_storage(uri, storage_options), storage_options)
        self._log.head  # noqa: B018 -- opening reads the latest state (TableNotFoundError)
        self._head_snapshot: Snapshot | None = None

    @classmethod
    def create(
        cls,
        uri: str,
        schema: Any,
        partition_by: Sequence[str] = (),
        key: Sequence[str] = (),
        event_time: str | None = None,
        properties: Mapping[str, str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        window: str | dt.timedelta | None = None,
    ) -> Table:
        """Create a new table (version 0) and return a handle on it.

        Args:
            uri: where the table lives.
            schema: a `pyarrow.Schema` (or anything exposing `__arrow_c_schema__`).
            partition_by: columns to partition files by (Hive-style directories).
            key: columns that identify a row: append and merge keep them unique,
                keyed diffs pair rows by them.
            event_time: a timestamp or date column holding when each event happened.
            properties: table configuration; `delta.*` keys are Delta properties.
            storage_options: credentials and store settings.
            name: optional table name stored in the metadata.
            description: optional table description stored in the metadata.
            window: the event-time window ("1d", "1h", "15m", ...) late rows are
                reported by (default 1d); needs `event_time`.

        Raises:
            TableExistsError: a table already exists at `uri`.
            SchemaMismatchError: the schema or a named column is invalid.
        """
        log = create_op.create(uri, schema, partition_by, key, event_time, properties, storage_options,
                               name=name, description=description, window=window)
        return cls(uri, storage_options, _log=log)

    # ---- properties --------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The table URI as given."""
        return self._log.uri

    @property
    def version(self) -> int:
        """The latest committed version, probed at each call (see `refresh`)."""
        return self.refresh()

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema at the latest version (see `version`)."""
        return self.snapshot().schema

    @property
    def partition_by(self) -> tuple[str, ...]:
        """Partition columns."""
        return self._log.head.metadata.partition_columns

    @property
    def key(self) -> tuple[str, ...]:
        """The declared key columns (empty when none)."""
        return self._head().config.key

    @property
    def event_time(self) -> str | None:
        """The declared event-time column, if any."""
        return self._head().config.event_time

    @property
    def window(self) -> str | None:
        """The event-time window late rows are reported by ("1d" when unset)."""
        return self._head().config.window

    @property
    def watermark(self) -> dt.datetime | None:
        """The event-time watermark at the handle's version (None: none yet).

        The largest `watermark=` any append or merge passed; see docs/late-data.md.
        """
        if self.event_time is None:
            return None
        return read_watermark(self._log.read_commit, self._log.head.version)

    @property
    def properties(self) -> Mapping[str, str]:
        """The table configuration."""
        return dict(self._log.head.metadata.configuration)

    @property
    def storage(self) -> Storage:
        """The storage backend (for advanced use and tests)."""
        return self._log.storage

    @property
    def state(self) -> TableState:
        """The replayed log state at the handle's version."""
        return self._log.head

    def __repr__(self) -> str:
        return f"Table({self.uri!r}, version={self._log.head.version})"

    # ---- reading -----------------------------------------------------------------------

    def refresh(self) -> int:
        """Read commits newer than the handle's version (only those) and return the latest.

        When the handle's own commit was cleaned up, the log moved on without it:
        the state is loaded afresh from the checkpoint pointer or a listing.

        Raises:
            CorruptLogError: the log no longer reaches the version the handle read.
            LogGapError: commits are missing before the latest (the handle stays before them).
        """
        return self._log.refresh().version

    def _head(self) -> Snapshot:
        """The snapshot of the handle's state, without probing the log.

        Kept while the head state is the same object (no newer commit was read), so
        what a snapshot caches (files, scans, pruning stats) serves the next call.
        """
        head = self._log.head
        if self._head_snapshot is None or self._head_snapshot.state is not head:
            self._head_snapshot = Snapshot(self._log, head)
        return self._head_snapshot

    def version_at(self, instant: dt.datetime | str) -> int:
        """The latest version committed at or before `instant`.

        Raises:
            VersionNotFoundError: `instant` is before the first commit.
        """
        return self._log.version_at(instant)

    def snapshot(self, version: int | None = None, as_of: dt.datetime | str | None = None) -> Snapshot:
        """The table as of a version or an instant (default: the latest, probed now).

        Args:
            version: a version number.
            as_of: a datetime (with time zone) or ISO-8601 string; picks the latest
                commit at or before it.

        Raises:
            VersionNotFoundError: the version or instant does not exist in the log.
            InvalidArgumentError: both `version` and `as_of` were given.
        """
        if version is not None and as_of is not None:
            raise InvalidArgumentError("pass either version or as_of, not both")
        if as_of is not None:
            version = self._log.version_at(as_of)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidArgumentError(f"version must be an int, got {version!r}")
        if version is None or version > self._log.head.version:
            self._log.refresh()
        if version is not None and version < 0:
            raise VersionNotFoundError(f"version {version} does not exist: versions start at 0")
        if version is None or version == self._log.head.version:
            return self._head()
        return Snapshot(self._log, self._log.load(version))

    def history(self, limit: int | None = None) -> list[Commit]:
        """Commits, newest first (only those whose log entries still exist).

        Raises:
            InvalidArgumentError: `limit` is negative.
        """
        return history(self._log, self._log.refresh().version, limit)

    def to_arrow(self, **kwargs: Any) -> pa.Table:
        """Shorthand for `snapshot().to_arrow(...)` at the latest version."""
        return self.snapshot().to_arrow(**kwargs)

    def diff(self, from_version: VersionRef, to_version: VersionRef | None = None,
             key: Sequence[str] | str | None = None,
             columns: Sequence[str] | str | None = None) -> Diff:
        """The changes in (from_version, to_version], consolidated (see docs/diff.md).

        Only files added or removed in the range are read (change data files where
        the commit has them); rows written and removed again cancel out.

        Args:
            from_version: a version, or an instant as for `snapshot(as_of=...)`;
                -1 is the empty table before version 0.
            to_version: likewise; default the latest. Older than `from_version`
                gives the reverse diff; equal gives an empty one.
            key: columns pairing removed and added rows into updates (default the
                table's declared key; `()` for none).
            columns: compare and return only these columns (plus the key).

        Raises:
            VersionNotFoundError: a version does not exist or its log is gone.
            SchemaMismatchError: `key` or `columns` names an unknown column.
            DuplicateKeyError: the key is not unique among the changed rows.
        """
        start = self._log.resolve(from_version, "from_version")
        end = self._log.resolve(to_version, "to_version")
        return compute_diff(self._head(), start, end, key=key, columns=columns)

    def changes(self, from_version: VersionRef, to_version: VersionRef | None = None
                ) -> Iterator[CommitChanges]:
        """The changes of each commit in (from_version, to_version], not consolidated.

        Rows match the Delta change data feed (`deltalake` `load_cdf` of versions
        from_version + 1 .. to_version). Arguments are checked and the log planned
        at once; each commit's files are read as the iteration reaches it.

        Raises:
            VersionNotFoundError: a version does not exist or its log is gone.
            InvalidArgumentError: `from_version` is after `to_version`.
        """
        lo = self._log.resolve(from_version, "from_version")
        hi = self._log.resolve(to_version, "to_version")
        return iter_changes(self._head(), lo, hi)

    def commit_timestamps(self) -> dict[int, int]:
        """Commit time (ms since the epoch, monotonic) of every version still in the log."""
        return dict(self._log.timeline())

    # ---- writing -----------------------------------------------------------------------

    def transaction(self, operation: str = "WRITE", parameters: Mapping[str, Any] | None = None,
                    snapshot: Snapshot | None = None) -> Transaction:
        """A transaction bound to `snapshot` (default the handle's state, not probed again).

        Use it as a context manager: it commits on a clean exit. Conflicts with
        what landed after that state are checked at commit (see `Transaction`).
        """
        return Transaction(snapshot if snapshot is not None else self._head(), operation, parameters)

    def checkpoint(self) -> int:
        """Write a checkpoint at the latest version and return that version.

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        snap = self.snapshot()
        check_writable(snap.protocol, snap.metadata)
        write_checkpoint(snap.storage, snap.state)
        return snap.version

    def compact(self, target_file_size: int = DEFAULT_TARGET_FILE_SIZE) -> CompactResult:
        """Rewrite small files of each partition into fewer, larger files (no data change).

        Files with a deletion vector are rewritten without its rows (see `purge`).

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        return maintenance.compact(self.snapshot(), target_file_size)

    def purge(self) -> CompactResult:
        """Rewrite every file that has a deletion vector without the rows it deletes (no data change).

        Delta's `REORG TABLE ... APPLY (PURGE)`: afterwards no live file has a
        deletion vector, and vacuum can delete the old files and DV files.

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        return maintenance.purge(self.snapshot())

    def vacuum(self, retention: dt.timedelta = dt.timedelta(days=7), dry_run: bool = False,
               enforce_retention: bool = True) -> VacuumResult:
        """Delete data files no version within `retention` needs (see `maintenance.vacuum`).

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        return maintenance.vacuum(self.snapshot(), retention, dry_run, enforce_retention)

    def cleanup_log(self, retention: dt.timedelta | None = None) -> list[int]:
        """Delete log entries older than the log retention that a checkpoint covers.

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        return maintenance.cleanup_log(self.snapshot(), retention)

    def append(
        self,
        data: Any,
        app_id: str | None = None,
        txn_version: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        schema_mode: SchemaMode | None = None,
        watermark: dt.datetime | None = None,
        late: LatePolicy | None = None,
        quarantine: Table | str | None = None,
    ) -> int:
        """Append rows and return the new version.

        Args:
            data: pyarrow Table/RecordBatchReader, polars or pandas DataFrame, or
                any Arrow PyCapsule object.
            app_id: with `txn_version`, makes the append exactly-once: if this
                application already committed `txn_version` (or a later one), nothing
                is written and the version holding it is returned.
            txn_version: the application's monotonically increasing batch number.
            metadata: extra key/values stored in the commitInfo.
            schema_mode: "merge" adds new nullable input columns to the schema.
            watermark: an aware datetime: all events before it have now arrived
                (tables with an event-time column; see docs/late-data.md).
            late: what to do with rows behind the table watermark: "accept",
                "reject" or "quarantine" (default: the `lakeflow.late` property,
                else accept).
            quarantine: the table (or URI) quarantined rows go to (default
                `<uri>/_lakeflow_quarantine`).

        Raises:
            SchemaMismatchError: the data does not fit the schema.
            DuplicateKeyError: the table has a key, and the rows repeat one or
                hold one the table already has (nothing is written).
            LateDataError: late rows under the reject policy (nothing is written).
            CommitConflictError: concurrent writers kept winning, or changed the schema.
        """
        return append_op.append(self._head(), data, app_id, txn_version, metadata, schema_mode,
                                watermark, late, _quarantine(quarantine))

    def commit_files(self, staged: Sequence[StagedFiles], app_id: str | None = None,
                     txn_version: int | None = None, operation: str = "WRITE",
                     metadata: Mapping[str, Any] | None = None) -> int:
        """Commit files staged by `lakeflow.write_files` (on workers) in one commit; return its version.

        The coordinator's half of a distributed append (see docs/scale-out.md).

        Args:
            staged: the `StagedFiles` every worker returned.
            app_id: with `txn_version`, makes the commit exactly-once: if this
                application already committed `txn_version` (or a later one),
                nothing is committed, the staged files are deleted and the version
                holding the batch is returned.
            txn_version: the application's monotonically increasing batch number.
            operation: the Delta operation name in the commitInfo.
            metadata: extra key/values stored in the commitInfo.

        Raises:
            SchemaMismatchError: staged columns, types, partitioning or NOT NULL
                columns do not fit the table (nothing is committed).
            DuplicateKeyError: the table has a key the staged rows repeat or hold.
            UnsupportedFeatureError: the table has rules only `append` can check
                (CHECK constraints, invariants, generated or identity columns), or
                staged rows may be behind the event-time watermark.
            InvalidArgumentError: the files were staged under another table root.
        """
        return staged_op.commit_files(self._head(), staged, app_id, txn_version, operation, metadata)

    def merge(
        self,
        data: Any,
        on: str | Sequence[str] | None = None,
        when_matched: MatchedAction = "update",
        when_not_matched: WhenNotMatched = "insert",
        when_not_matched_by_source: WhenNotMatchedBySource = "keep",
        watermark: dt.datetime | None = None,
        *,
        late: LatePolicy | None = None,
        quarantine: Table | str | None = None,
        null_keys: NullKeys = "error",
        retries: int = 0,
    ) -> MergeResult:
        """Upsert `data` by key in one commit, rewriting only files with changed rows.

        Args:
            data: the source rows (anything `append` accepts); one row per key.
            on: key columns (default: the table's declared key).
            when_matched: for source rows whose key exists: "update" (replace the
                row), "ignore", "delete", a mapping of column -> polars expression
                over `pl.col("target.<c>")` / `pl.col("source.<c>")`, or a callable
                `(target, source) -> DataFrame` of new values, one row per matched
                pair (see docs/merge.md).
            when_not_matched: "insert" or "ignore" source rows with a new key.
            when_not_matched_by_source: "keep" or "delete" target rows no source
                row matches.
            watermark: as for `append`.
            late: as for `append`; a change is late when a row it writes or
                retires is behind the table watermark.
            quarantine: as for `append`.
            null_keys: "error" (default) or "skip" source rows with a null key.
            retries: on a conflicting concurrent commit, start over this many times.

        Raises:
            SchemaMismatchError: unknown key columns, or source rows that do not fit.
            DuplicateKeyError: two source rows share a key.
            LateDataError: late changes under the reject policy (nothing is written).
            CommitConflictError: a concurrent commit touched what the merge read.
        """
        return merge_into(self.snapshot(), data, on, when_matched=when_matched,
                          when_not_matched=when_not_matched,
                          when_not_matched_by_source=when_not_matched_by_source,
                          watermark=watermark, late=late, quarantine=_quarantine(quarantine),
                          null_keys=null_keys, retries=retries)

    def delete(self, where: Any, *, retries: int = 0) -> int:
        """Delete the rows where `where` is true, in one commit; return how many.

        Files the predicate matches wholly are removed without being rewritten;
        files it matches in part are rewritten without those rows.

        Args:
            where: a SQL predicate (`"day < '2024-05-01'"`) or a `pyarrow.compute`
                boolean expression (`pc.field("day") < d`).
            retries: on a conflicting concurrent commit, start over this many times.

        Raises:
            SchemaMismatchError: the predicate names an unknown column.
            CommitConflictError: a concurrent commit touched what the delete read.
        """
        return delete_where(self.snapshot(), where, retries=retries)

    def update(self, where: Any, set: Mapping[str, Assignment], *, retries: int = 0) -> int:
        """Set new values on the rows where `where` is true, in one commit; return how many.

        Args:
            where: a SQL predicate or a `pyarrow.compute` expression, as for `delete`.
            set: column -> new value: a SQL expression (`"amount * 1.1"`), a polars
                or a `pyarrow.compute` expression over the row's current values.
            retries: on a conflicting concurrent commit, start over this many times.

        Raises:
            InvalidArgumentError: bad SQL, an unknown or key/partition column in `set`.
            ConstraintViolationError: a new value breaks a constraint (nothing is written).
        """
        return update_where(self.snapshot(), where, set, retries=retries)

    def overwrite(self, data: Any, *, where: Any = None, schema_mode: OverwriteSchemaMode | None = None,
                  app_id: str | None = None, txn_version: int | None = None,
                  metadata: Mapping[str, Any] | None = None) -> int:
        """Replace all rows with `data` in one commit (`schema_mode="overwrite"`: its schema too).

        With `where` (a SQL predicate or pyarrow expression; Delta's replaceWhere),
        only the rows it matches are replaced, and every row of `data` must match it.

        Exactly-once with `app_id`/`txn_version` as for `append`. A concurrent
        append conflicts (its rows would survive the overwrite).

        Raises:
            SchemaMismatchError: the data does not fit the schema (or, with a new
                schema, lacks the partition, key or event-time columns).
            AppendOnlyError: the table is append-only.
            CommitConflictError: a concurrent commit changed the table.
        """
        return overwrite_op.overwrite(self.snapshot(), data, where=where, schema_mode=schema_mode, app_id=app_id,
                                      txn_version=txn_version, metadata=metadata)

    def restore(self, version: int | None = None, as_of: dt.datetime | str | None = None) -> int:
        """Commit a new version whose rows, schema and properties equal `version`'s (or `as_of`'s).

        Raises:
            VacuumedDataError: a file that version needs was vacuumed (nothing is written).
            InvalidArgumentError: neither or both of `version` and `as_of` given.
        """
        if (version is None) == (as_of is None):
            raise InvalidArgumentError("pass exactly one of version or as_of")
        target = self.snapshot(version=version, as_of=as_of)
        return restore_op.restore(self.snapshot(), target)

    def set_properties(self, properties: Mapping[str, str]) -> int:
        """Set table properties (`delta.*`, `lakeflow.*`) in one metadata-only commit."""
        return alter.set_properties(self.snapshot(), properties)

    def add_constraint(self, name: str, sql: str) -> int:
        """Add a CHECK constraint (`amount >= 0`); existing rows are checked first.

        Raises:
            ConstraintViolationError: an existing row violates it (nothing is written).
        """
        return alter.add_constraint(self.snapshot(), name, sql)

    def drop_constraint(self, name: str) -> int:
        """Drop a CHECK constraint."""
        return alter.drop_constraint(self.snapshot(), name)

    def widen_column(self, name: str, type: pa.DataType) -> int:
        """Widen a column's type (e.g. int32 -> int64) without rewriting files (typeWidening)."""
        return alter.widen_column(self.snapshot(), name, type)

    def add_columns(self, columns: pa.Schema | Sequence[pa.Field]) -> int:
        """Add nullable columns (metadata only: existing rows read them as null)."""
        return alter.add_columns(self.snapshot(), columns)

    def rename_column(self, old: str, new: str) -> int:
        """Rename a column (or a struct field by dotted path) in one metadata-only commit; return the version.

        Turns on column mapping (mode `name`) if the table has none: files keep
        their names, the schema maps them. Refused (before anything is written)
        for key, event-time and generated columns, and columns a CHECK constraint
        or generation expression names; `new` must not exist (case-insensitively).
        """
        return columns_op.rename_column(self.snapshot(), old, new)

    def drop_columns(self, *names: str) -> int:
        """Drop top-level columns in one metadata-only commit (no file is rewritten); return the version.

        Turns on column mapping (mode `name`) if the table has none. Refused for
        partition columns, and as for `rename_column`; a column added later under
        a dropped name is a new column (old rows read it as null).
        """
        return columns_op.drop_columns(self.snapshot(), names)

    def revisions(self, window: dt.datetime | dt.date | str) -> list[Commit]:
        """The commits that revised an event-time window with late changes, newest first.

        Args:
            window: an instant (or date) inside the window, e.g. its start.
        """
        start = window_start(window, window_micros(self.window or "1d"))
        return [c for c in self.history() if start in c.revised_windows]



def _quarantine(target: Table | str | None) -> QuarantineTarget | None:
    """A quarantine argument as the operations take it: a table's log, or a URI.

    Raises:
        InvalidArgumentError: neither a Table nor a string.
    """
    if target is None or isinstance(target, str):
        return target
    if isinstance(target, Table):
        return target._log
    raise InvalidArgumentError(f"quarantine must be a Table or a URI, got {type(target).__name__}")


__all__ = ["Commit", "Table"]
