"""The table handle: create, open, append, snapshots, time travel and history.

A `Table` holds the latest state it has seen and refreshes incrementally by
reading only commits newer than that state. Reading an old version builds a
separate `Snapshot` and never changes the handle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from lakeflow import maintenance
from lakeflow.actions import Action, Add, CommitInfo, Metadata, Protocol, Txn
from lakeflow.checkpoint import read_checkpoint, write_checkpoint
from lakeflow.constraints import CONSTRAINT_PREFIX, enforce, settle, table_rules
from lakeflow.diff import CommitChanges, Diff, VersionRef, compute_diff, iter_changes
from lakeflow.errors import (
    CommitConflictError,
    CorruptLogError,
    DuplicateKeyError,
    InvalidArgumentError,
    LakeflowError,
    LogGapError,
    SchemaMismatchError,
    TableExistsError,
    TableNotFoundError,
    VersionNotFoundError,
)
from lakeflow.keys import KEY_CONFLICT_RETRIES, KeyReads, check_new_keys
from lakeflow.late import (
    TIME_INFO_KEYS,
    Arrival,
    arrive,
    check_policy,
    format_window,
    read_time_info,
    read_watermark,
    window_micros,
    window_start,
)
from lakeflow.log import (
    CLOCK_SKEW_TOLERANCE_MS,
    LOG_DIR,
    LogListing,
    TableState,
    bounded_timestamp,
    check_readable,
    check_writable,
    commit_path,
    list_log,
    plan_segment,
    reachable_versions,
    read_commit,
    read_last_checkpoint,
    recorded_timestamp,
    replay,
    writer_features,
)
from lakeflow.maintenance import DEFAULT_TARGET_FILE_SIZE, CompactResult, VacuumResult
from lakeflow.merge import MatchedAction, MergeResult, delete_where, merge_into
from lakeflow.schema import arrow_to_delta, canonical, extend_schema_string, uses_timestamp_ntz
from lakeflow.snapshot import Snapshot
from lakeflow.storage import Storage, open_storage
from lakeflow.transaction import CommitOutcome, Transaction, commit
from lakeflow.write import conform, input_chunks, write_data_files

DEFAULT_CHECKPOINT_INTERVAL = 100
_COMMIT_CACHE_SIZE = 4096
_CHECKPOINT_CACHE_SIZE = 4
_LOAD_ATTEMPTS = 3
_RESERVED_INFO_KEYS = {"timestamp", "inCommitTimestamp", "operation", "operationParameters",
                       "operationMetrics", "readVersion", "isBlindAppend", "engineInfo",
                       "clientVersion", "txnId"}
# Streamed appends gather this many bytes of Arrow batches before writing them as files:
# memory stays bounded by about one chunk (plus Parquet's buffers), not by the input.
STREAM_CHUNK_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class _Staged:
    """The data files an append wrote before it commits them."""

    adds: list[Add]
    num_rows: int
    new_schema: pa.Schema | None
    arrival: Arrival
    keys: tuple[pa.Table, KeyReads] | None = None  # a keyed table's rows and what their check read


@dataclass(frozen=True)
class Commit:
    """One entry of the table history."""

    version: int
    timestamp: dt.datetime | None
    operation: str | None
    parameters: Mapping[str, Any]
    metrics: Mapping[str, Any]
    app_id: str | None = None
    txn_version: int | None = None
    engine: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    late_rows: int | None = None
    revised_windows: tuple[dt.datetime, ...] = ()
    watermark: dt.datetime | None = None


def _to_ms(instant: dt.datetime | dt.date | str) -> int:
    if isinstance(instant, str):
        try:
            instant = dt.datetime.fromisoformat(instant.replace("Z", "+00:00"))
        except ValueError as e:
            raise InvalidArgumentError(
                f"as_of {instant!r} is not an ISO-8601 instant such as 2024-05-01T12:00:00Z"
            ) from e
    if isinstance(instant, dt.datetime):
        if instant.tzinfo is None:
            raise InvalidArgumentError(
                f"as_of {instant!r} has no time zone; pass an aware datetime "
                "(e.g. datetime(..., tzinfo=timezone.utc)) or an ISO string ending in Z"
            )
        return int(instant.timestamp() * 1000)
    if isinstance(instant, dt.date):
        raise InvalidArgumentError("as_of needs an instant (datetime or ISO string), not a date")
    raise InvalidArgumentError(f"as_of must be a datetime or ISO string, got {type(instant).__name__}")


def _is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (lone surrogates cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _from_ms(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def _protocol_for(schema: pa.Schema, configuration: Mapping[str, str]) -> Protocol:
    """The smallest protocol that covers the features the table uses."""
    ntz = uses_timestamp_ntz(schema)
    ict = configuration.get("delta.enableInCommitTimestamps", "").lower() == "true"
    cdf = configuration.get("delta.enableChangeDataFeed", "").lower() == "true"
    checks = any(k.startswith(CONSTRAINT_PREFIX) for k in configuration)
    if ntz or ict:
        writer = ["appendOnly", "invariants"]
        if checks:
            writer.append("checkConstraints")
        if cdf:
            writer.append("changeDataFeed")
        if ntz:
            writer.append("timestampNtz")
        if ict:
            writer.append("inCommitTimestamp")
        return Protocol(3 if ntz else 1, 7, ("timestampNtz",) if ntz else None, tuple(writer))
    return Protocol(1, 4 if cdf else 3 if checks else 2)


def _covering(old: Protocol, needed: Protocol) -> Protocol:
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


class Table:
    """A handle on one Delta table.

    Args:
        uri: local path, `memory://name`, `s3://bucket/prefix` or another fsspec URI.
        storage_options: credentials and store settings (see `open_storage`).

    Raises:
        TableNotFoundError: there is no Delta log at `uri`.
    """

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self._storage: Storage = open_storage(uri, storage_options)
        self._storage_options = storage_options  # for side tables (the late-row quarantine)
        self._commits: OrderedDict[int, list[Action]] = OrderedDict()
        self._timestamps: dict[int, int | None] = {}
        self._listing_mtimes: dict[int, int | None] = {}
        self._checkpoints: OrderedDict[int, TableState] = OrderedDict()
        self._checkpoint_files: dict[int, str] = {}  # version -> a file of the checkpoint read
        # A log with a gap opens before it (time travel reads); the latest refuses (`refresh`).
        self._gap: LogGapError | None = None
        try:
            self._state = self._load_state(None)
        except LogGapError as e:
            self._gap = e
            self._state = self._load_state(e.last_readable)

    # ---- opening -----------------------------------------------------------------------

    def _read_commit_cached(self, version: int) -> list[Action]:
        actions = self._commits.get(version)
        if actions is None:
            actions = read_commit(self._storage, version)
            self._commits[version] = actions
            if len(self._commits) > _COMMIT_CACHE_SIZE:
                self._commits.popitem(last=False)
        return actions

    def _advance(self, state: TableState, until: int | None = None) -> TableState | None:
        """Replay the commits after `state` (up to `until`), probing instead of listing.

        Returns None when the log has moved past `state` and the commits after it
        were cleaned up, or a commit is missing while a later one exists: only a
        fresh load (checkpoint pointer, listing) catches up, or finds the gap.
        """
        new: list[tuple[int, list[Action]]] = []
        v = state.version + 1
        while until is None or v <= until:
            try:
                new.append((v, self._read_commit_cached(v)))
            except FileNotFoundError:
                # The commit the state was read at is gone: cleanup ran past it, and only a
                # fresh load is sure to follow the live log (see docs/reliability.md).
                if not self._still_there(state.version):
                    return None
                if not self._storage.exists(commit_path(v + 1)):
                    break
                # v + 1 exists: v was committed meanwhile (read it once more), or cleanup
                # is deleting it, or the log has a gap: a fresh load tells, bounded.
                try:
                    new.append((v, self._read_commit_cached(v)))
                except FileNotFoundError:
                    return None
            v += 1
        if not new:
            return state
        state = replay(state, new)
        check_readable(state.protocol, state.metadata)
        return state

    def _still_there(self, version: int) -> bool:
        """Whether the log still has the commit of `version`, or the checkpoint of it this handle read."""
        if self._storage.exists(commit_path(version)):
            return True
        name = self._checkpoint_files.get(version)  # tables whose checkpoint outlived its commit
        return name is not None and self._storage.exists(f"{LOG_DIR}/{name}")

    def _checkpoint_state(self, version: int, names: Sequence[str]) -> TableState:
        """The replayed checkpoint at `version`; cached, since time travel and diffs reuse it."""
        state = self._checkpoints.get(version)
        if state is None:
            state = replay(None, [(version, read_checkpoint(self._storage, names))])
            self._checkpoints[version] = state
            self._checkpoint_files[version] = names[0]
            if len(self._checkpoints) > _CHECKPOINT_CACHE_SIZE:
                self._checkpoints.popitem(last=False)
        return state

    def _load_state(self, version: int | None) -> TableState:
        """Load the state at `version` (None: the latest), from the checkpoint pointer or a listing.

        A file that vanishes meanwhile (a concurrent log cleanup) makes it start over,
        a bounded number of times.

        Raises:
            VersionNotFoundError: files kept vanishing, or `version` is not reachable.
        """
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                return self._load_once(version)
            except FileNotFoundError as e:
                if attempt == _LOAD_ATTEMPTS - 1:
                    raise VersionNotFoundError(
                        f"log files kept vanishing while reading {self.uri} (concurrent log "
                        f"cleanup?): {e}"
                    ) from e
        raise AssertionError("unreachable")

    def _load_once(self, version: int | None) -> TableState:
        last = read_last_checkpoint(self._storage)
        if last is not None and (version is None or last[0] <= version):
            try:
                state = self._checkpoint_state(last[0], last[1])
            except (FileNotFoundError, CorruptLogError):
                pass  # a stale pointer or a torn checkpoint: fall back to listing the log
            else:
                advanced = self._advance(state, version)  # None: the pointer is stale
                if advanced is not None and (version is None or advanced.version == version):
                    return advanced
        listing = list_log(self._storage)
        if listing.latest is None:
            detail = "it has no _delta_log commits" if self._storage.exists("") else "nothing exists there"
            raise TableNotFoundError(
                f"no Delta table at {self._storage.uri}: {detail}; create one with "
                "lakeflow.Table.create(uri, schema)"
            )
        while True:
            checkpoint, commits = plan_segment(listing, version)
            base: TableState | None = None
            if checkpoint is None:
                break
            try:
                base = self._checkpoint_state(checkpoint, listing.checkpoints[checkpoint])
                break
            except CorruptLogError as e:
                # A torn checkpoint (a crash while writing it to a store without atomic
                # writes) is only a cache: plan again from the commits it summarises.
                listing = LogListing(listing.commits,
                                     {v: p for v, p in listing.checkpoints.items() if v != checkpoint})
                try:
                    plan_segment(listing, version)
                except LakeflowError:
                    raise e from None  # the commits it summarises are gone: it was no mere cache
                warnings.warn(f"ignoring the unreadable checkpoint at version {checkpoint}: {e}",
                              stacklevel=3)
        state = replay(base, [(v, self._read_commit_cached(v)) for v in commits])
        check_readable(state.protocol, state.metadata)
        self._listing_mtimes.update({v: info.mtime_ms for v, info in listing.commits.items()})
        return state

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
        storage = open_storage(uri, storage_options)
        if not isinstance(schema, pa.Schema):
            try:
                schema = pa.schema(schema)
            except (TypeError, ValueError, pa.ArrowException) as e:
                raise SchemaMismatchError(f"schema must be a pyarrow.Schema: {e}") from e
        if len(schema) == 0:
            raise SchemaMismatchError("a table needs at least one column")
        schema_string = arrow_to_delta(schema)
        schema = canonical(schema)
        partition_by, key = tuple(partition_by), tuple(key)
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
        config: dict[str, str] = {"delta.enableChangeDataFeed": "true"}
        for k, v in (properties or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidArgumentError(f"table properties must map str to str, got {k!r}: {v!r}")
            config[k] = v
        if key:
            config["lakeflow.key"] = json.dumps(list(key))
        if event_time is not None:
            config["lakeflow.eventTime"] = event_time
        if window is not None:
            if event_time is None:
                raise SchemaMismatchError("window= needs an event_time column")
            config["lakeflow.window"] = format_window(window)
        check_policy(config.get("lakeflow.late"), "table property lakeflow.late")
        protocol = _protocol_for(schema, config)
        if list_log(storage).latest is not None:
            raise TableExistsError(f"a Delta table already exists at {storage.uri}; open it with lakeflow.Table(uri)")
        now = int(time.time() * 1000)
        metadata = Metadata(id=str(uuid.uuid4()), schema_string=schema_string,
                            partition_columns=partition_by, configuration=config,
                            name=name, description=description, created_time=now)
        empty = TableState(-1, protocol, metadata, {})
        enforce(empty, schema.empty_table())  # a CHECK constraint lakeflow cannot evaluate
        tx = Transaction(
            actions=[protocol, metadata], operation="CREATE TABLE",
            parameters={"partitionBy": json.dumps(list(partition_by)), "key": json.dumps(list(key))},
        )
        try:
            commit(storage, empty, tx, last_timestamp_ms=None, read_winner=_no_winner, max_attempts=1)
        except _CreateRace as e:
            raise TableExistsError(f"another writer created a table at {storage.uri} first") from e
        return cls(uri, storage_options)

    # ---- properties --------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The table URI as given."""
        return self._storage.uri

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
        return self._state.metadata.partition_columns

    @property
    def key(self) -> tuple[str, ...]:
        """The declared key columns (empty when none)."""
        raw = self._state.metadata.configuration.get("lakeflow.key")
        return tuple(json.loads(raw)) if raw else ()

    @property
    def event_time(self) -> str | None:
        """The declared event-time column, if any."""
        return self._state.metadata.configuration.get("lakeflow.eventTime")

    @property
    def window(self) -> str | None:
        """The event-time window late rows are reported by ("1d" when unset)."""
        if self.event_time is None:
            return None
        return self._state.metadata.configuration.get("lakeflow.window", "1d")

    @property
    def watermark(self) -> dt.datetime | None:
        """The event-time watermark at the handle's version (None: none yet).

        The largest `watermark=` any append or merge passed; see docs/late-data.md.
        """
        if self.event_time is None:
            return None
        return read_watermark(self._read_commit_cached, self._state.version)

    @property
    def properties(self) -> Mapping[str, str]:
        """The table configuration."""
        return dict(self._state.metadata.configuration)

    @property
    def storage(self) -> Storage:
        """The storage backend (for advanced use and tests)."""
        return self._storage

    @property
    def state(self) -> TableState:
        """The replayed log state at the handle's version."""
        return self._state

    def __repr__(self) -> str:
        return f"Table({self.uri!r}, version={self._state.version})"

    # ---- reading -----------------------------------------------------------------------

    def refresh(self) -> int:
        """Read commits newer than the handle's version (only those) and return the latest.

        When the handle's own commit was cleaned up, the log moved on without it:
        the state is loaded afresh from the checkpoint pointer or a listing.

        Raises:
            CorruptLogError: the log no longer reaches the version the handle read.
            LogGapError: commits are missing before the latest (the handle stays before them).
        """
        # Probing cannot see a gap whose next commit is far ahead: a gapped log is listed.
        state = self._advance(self._state) if self._gap is None else None
        if state is None:
            state = self._load_state(None)
            self._gap = None
            if state.version < self._state.version:
                raise CorruptLogError(
                    f"the log of {self.uri} ends at version {state.version}, but this handle "
                    f"read version {self._state.version}: commit files were deleted")
        self._state = state
        return state.version

    def _handle_snapshot(self) -> Snapshot:
        """The snapshot of the handle's state, without probing the log.

        For operations that refreshed once and must read that same state until they
        commit: a second refresh in between would skip conflict checks.
        """
        return Snapshot(self._storage, self._state, _from_ms(self._commit_ts(self._state.version)))

    def _commit_ts(self, version: int) -> int | None:
        if version not in self._timestamps:
            try:
                actions = self._read_commit_cached(version)
            except FileNotFoundError:
                return None
            self._timestamps[version] = recorded_timestamp(actions)
        recorded = self._timestamps[version]
        if recorded is not None and version not in self._listing_mtimes \
                and recorded > time.time() * 1000 + CLOCK_SKEW_TOLERANCE_MS:
            # Later than this clock: one of the two runs ahead, and the store's time decides.
            self._listing_mtimes.update({v: i.mtime_ms for v, i in list_log(self._storage).commits.items()})
            self._listing_mtimes.setdefault(version, None)
        mtime = self._listing_mtimes.get(version)
        if recorded is not None and mtime is not None and recorded > mtime + CLOCK_SKEW_TOLERANCE_MS:
            # Rare: an entry stamped before its recorded time. Is the stamp plausible?
            oldest = min(self._listing_mtimes)
            if oldest not in self._timestamps:
                self._commit_ts(oldest)  # reads and caches its recorded time
            return bounded_timestamp(version, recorded, mtime, self._timestamps.get(oldest))
        return recorded if recorded is not None else mtime

    def _timeline(self) -> list[tuple[int, int]]:
        """(version, monotonic timestamp ms) for every version whose commit is readable."""
        listing = list_log(self._storage)
        self._listing_mtimes.update({v: i.mtime_ms for v, i in listing.commits.items()})
        out: list[tuple[int, int]] = []
        last = None
        for v in reachable_versions(listing):  # listed versions only: bounded by the log
            ts = self._commit_ts(v)
            if ts is None:
                continue
            # Clock skew between writers must not make time travel ambiguous.
            ts = ts if last is None else max(ts, last + 1)
            out.append((v, ts))
            last = ts
        return out

    def version_at(self, instant: dt.datetime | str) -> int:
        """The latest version committed at or before `instant`.

        Raises:
            VersionNotFoundError: `instant` is before the first commit.
        """
        target = _to_ms(instant)
        timeline = self._timeline()
        best = None
        for v, ts in timeline:
            if ts <= target:
                best = v
            else:
                break
        if best is None:
            first = _from_ms(timeline[0][1]) if timeline else None
            raise VersionNotFoundError(
                f"no version of {self.uri} existed at {_from_ms(target)}; the first commit "
                f"was at {first}"
            )
        return best

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
            version = self.version_at(as_of)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidArgumentError(f"version must be an int, got {version!r}")
        if version is None:
            self.refresh()
        if version is None or version == self._state.version:
            return self._handle_snapshot()
        if version < 0:
            raise VersionNotFoundError(f"version {version} does not exist: versions start at 0")
        if version > self._state.version:
            self.refresh()
            if version == self._state.version:
                return self._handle_snapshot()
        state = self._load_state(version)
        return Snapshot(self._storage, state, _from_ms(self._commit_ts(version)))

    def history(self, limit: int | None = None) -> list[Commit]:
        """Commits, newest first (only those whose log entries still exist).

        Raises:
            InvalidArgumentError: `limit` is negative.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidArgumentError(f"limit must be a non-negative int or None, got {limit!r}")
        self.refresh()
        out: list[Commit] = []
        for v in range(self._state.version, -1, -1):
            if limit is not None and len(out) >= limit:
                break
            try:
                actions = self._read_commit_cached(v)
            except FileNotFoundError:
                break
            info: dict[str, Any] = {}
            txn = None
            for a in actions:
                if isinstance(a, CommitInfo):
                    info = dict(a.values)
                elif isinstance(a, Txn):
                    txn = a
            out.append(Commit(
                version=v,
                timestamp=_from_ms(self._commit_ts(v)),
                operation=info.get("operation"),
                parameters=info.get("operationParameters") or {},
                metrics=info.get("operationMetrics") or {},
                app_id=txn.app_id if txn else None,
                txn_version=txn.version if txn else None,
                engine=info.get("engineInfo"),
                info=info,
                **vars(read_time_info(info)),
            ))
        return out

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
        return compute_diff(self, from_version, to_version, key=key, columns=columns)

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
        return iter_changes(self, from_version, to_version)

    # ---- writing -----------------------------------------------------------------------

    def _txn_version_holding(self, app_id: str, txn_version: int) -> int:
        """The version whose commit recorded (app_id, >= txn_version); latest if unknown."""
        found = self._state.version
        for v in range(self._state.version, -1, -1):
            try:
                actions = self._read_commit_cached(v)
            except FileNotFoundError:
                break
            hit = [a for a in actions if isinstance(a, Txn) and a.app_id == app_id]
            if hit:
                if hit[0].version < txn_version:
                    break
                found = v
        return found

    def commit(self, tx: Transaction) -> CommitOutcome:
        """Commit a prepared transaction on top of the handle's state (advanced use).

        Raises:
            CommitConflictError: a concurrent commit conflicts, or retries ran out.
        """
        check_writable(self._state.protocol, self._state.metadata)
        tx = settle(self._state, tx)

        def read_winner(version: int) -> tuple[list[Action], int | None]:
            return self._read_commit_cached(version), self._commit_ts(version)

        try:
            outcome = commit(self._storage, self._state, tx,
                             last_timestamp_ms=self._commit_ts(self._state.version),
                             read_winner=read_winner)
        except CommitConflictError:
            # Winners read on the way may be re-creations since withdrawn: read them again.
            for v in [v for v in self._commits if v > self._state.version]:
                del self._commits[v]
            raise
        self._state = outcome.state
        self._timestamps[outcome.version] = outcome.timestamp_ms
        if not outcome.deduplicated:
            self._maybe_checkpoint()
        return outcome

    def _maybe_checkpoint(self) -> None:
        raw = self._state.metadata.configuration.get("delta.checkpointInterval")
        try:
            interval = int(raw) if raw else DEFAULT_CHECKPOINT_INTERVAL
        except ValueError:
            interval = DEFAULT_CHECKPOINT_INTERVAL
        if interval > 0 and self._state.version > 0 and self._state.version % interval == 0:
            try:
                write_checkpoint(self._storage, self._state)
            except (OSError, LakeflowError) as e:
                # The commit is durable; a missing checkpoint only slows readers down.
                warnings.warn(f"checkpoint at version {self._state.version} failed: {e}", stacklevel=3)

    def _refresh_writable(self) -> None:
        """Refresh, then refuse tables with writer features lakeflow does not implement.

        Maintenance must not touch such a table: a checkpoint would drop deletion
        vectors, vacuum would delete their files, compaction would rewrite them.
        """
        self.refresh()
        check_writable(self._state.protocol, self._state.metadata)

    def checkpoint(self) -> int:
        """Write a checkpoint at the latest version and return that version.

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        self._refresh_writable()
        write_checkpoint(self._storage, self._state)
        return self._state.version

    def compact(self, target_file_size: int = DEFAULT_TARGET_FILE_SIZE) -> CompactResult:
        """Rewrite small files of each partition into fewer, larger files (no data change).

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        self._refresh_writable()
        return maintenance.compact(self, target_file_size)

    def vacuum(self, retention: dt.timedelta = dt.timedelta(days=7), dry_run: bool = False,
               enforce_retention: bool = True) -> VacuumResult:
        """Delete data files no version within `retention` needs (see `maintenance.vacuum`).

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        self._refresh_writable()
        return maintenance.vacuum(self, retention, dry_run, enforce_retention)

    def cleanup_log(self, retention: dt.timedelta | None = None) -> list[int]:
        """Delete log entries older than the log retention that a checkpoint covers.

        Raises:
            UnsupportedFeatureError: the table is read-only for lakeflow.
        """
        self._refresh_writable()
        return maintenance.cleanup_log(self, retention)

    def commit_timestamps(self) -> dict[int, int]:
        """Commit time (ms since the epoch, monotonic) of every version still in the log."""
        return dict(self._timeline())

    def append(
        self,
        data: Any,
        app_id: str | None = None,
        txn_version: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        schema_mode: str | None = None,
        watermark: dt.datetime | None = None,
        late: str | None = None,
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
        if (app_id is None) != (txn_version is None):
            raise InvalidArgumentError("pass app_id and txn_version together")
        if app_id is not None and (not isinstance(app_id, str) or not app_id or not _is_utf8(app_id)):
            raise InvalidArgumentError(f"app_id must be a non-empty UTF-8 string, got {app_id!r}")
        if txn_version is not None and (
                isinstance(txn_version, bool) or not isinstance(txn_version, int) or txn_version < 0):
            raise InvalidArgumentError(f"txn_version must be a non-negative int, got {txn_version!r}")
        extra = dict(metadata or {})
        clash = sorted(set(extra) & (_RESERVED_INFO_KEYS | TIME_INFO_KEYS))
        if clash:
            raise InvalidArgumentError(f"metadata keys {clash} are reserved by the commitInfo format")
        try:
            json.dumps(extra, ensure_ascii=False).encode("utf-8")  # as the commit will be
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"metadata must be JSON-serializable UTF-8: {e}") from e
        # Some writes judge the whole batch at once: keys (duplicates), event time
        # (lateness), identity columns (one run of values).
        whole = bool(self.key) or self.event_time is not None or bool(table_rules(self._state.metadata).identities)
        chunks = input_chunks(data, STREAM_CHUNK_BYTES, whole=whole)
        self.refresh()
        check_writable(self._state.protocol, self._state.metadata)
        if app_id is not None and txn_version is not None:
            seen = self._state.txns.get(app_id)
            if seen is not None and seen.version >= txn_version:
                return self._txn_version_holding(app_id, txn_version)
        staged = self._stage_append(chunks, schema_mode, watermark, late, quarantine)
        arrival, adds = staged.arrival, staged.adds
        if not adds and staged.new_schema is None and not arrival.must_commit:
            return arrival.settle(self, self._state.version)
        actions: list[Action] = self._schema_change(staged.new_schema)
        actions += adds
        tx = Transaction(
            actions=actions,
            operation="WRITE",
            parameters={"mode": "Append", "partitionBy": json.dumps(list(self.partition_by))},
            metrics={"numFiles": len(adds), "numOutputRows": staged.num_rows,
                     "numOutputBytes": sum(a.size for a in adds)},
            txn=Txn(app_id, txn_version) if app_id is not None and txn_version is not None else None,
            extra_info={**extra, **arrival.info},
        )
        outcome = (self.commit(tx) if staged.keys is None
                   else self._commit_keyed(tx, *staged.keys, adds))
        if outcome.deduplicated:
            # Another attempt of the same batch won: our files were never committed.
            for a in adds:
                self._storage.delete(unquote(a.path))
            return outcome.version
        return arrival.settle(self, outcome.version)

    def _stage_append(self, chunks: Iterator[pa.Table], schema_mode: str | None, watermark: Any,
                      late: str | None, quarantine: Table | str | None) -> _Staged:
        """Check and write each chunk's data files as it arrives; nothing is committed.

        If a later chunk is refused (schema, lateness), the files of the earlier
        ones are deleted before the error propagates: they were never in the log.
        """
        adds: list[Add] = []
        schema, new_schema, rows = self._handle_snapshot().schema, None, 0
        arrival, keys = None, None
        try:
            for chunk in chunks:
                conformed = conform(chunk, schema, schema_mode)
                if conformed.new_schema is not None:
                    schema = new_schema = conformed.new_schema
                checked = enforce(self._state, conformed.table, provided=chunk.column_names)
                arrival = arrive(self, checked, watermark, late, quarantine)
                if self.key and arrival.rows.num_rows:  # keyed: one chunk (see append)
                    keys = (arrival.rows, check_new_keys(self._handle_snapshot(), arrival.rows, self.key))
                if arrival.rows.num_rows:
                    adds += write_data_files(self._storage, arrival.rows, self.partition_by)
                    rows += arrival.rows.num_rows
        except BaseException:
            for a in adds:
                self._storage.delete(unquote(a.path))
            raise
        assert arrival is not None  # input_chunks yields at least one table
        return _Staged(adds, rows, new_schema, arrival, keys)

    def _schema_change(self, new_schema: pa.Schema | None) -> list[Action]:
        """The metaData (and protocol, if it must rise) of an append that adds columns."""
        if new_schema is None:
            return []
        old = self._state.metadata
        actions: list[Action] = [Metadata(
            id=old.id, schema_string=extend_schema_string(old.schema_string, new_schema),
            partition_columns=old.partition_columns, configuration=old.configuration,
            name=old.name, description=old.description, created_time=old.created_time)]
        new_protocol = _covering(self._state.protocol, _protocol_for(new_schema, old.configuration))
        if new_protocol != self._state.protocol:
            actions.append(new_protocol)
        return actions

    def _commit_keyed(self, tx: Transaction, rows: pa.Table, reads: KeyReads,
                      adds: Sequence[Add]) -> CommitOutcome:
        """Commit an append to a keyed table; after a conflict, check its keys again and retry.

        A conflict means a concurrent commit may hold one of the keys (or removed
        a file the check read). When the append fails, its files are deleted.
        """
        base = self._state
        try:
            for _ in range(KEY_CONFLICT_RETRIES):
                try:
                    return self.commit(dataclasses.replace(
                        tx, read_files=reads.files, read_predicate=reads.could_match))
                except CommitConflictError:
                    self.refresh()
                    if (self._state.metadata, self._state.protocol) != (base.metadata, base.protocol):
                        raise
                    seen = self._state.txns.get(tx.txn.app_id) if tx.txn is not None else None
                    if tx.txn is not None and seen is not None and seen.version >= tx.txn.version:
                        # Another attempt of the same batch committed meanwhile.
                        version = self._txn_version_holding(tx.txn.app_id, tx.txn.version)
                        return CommitOutcome(version, self._state, self._commit_ts(version) or 0,
                                             deduplicated=True)
                    reads = check_new_keys(self._handle_snapshot(), rows, self.key)
            raise CommitConflictError(
                f"the append lost {KEY_CONFLICT_RETRIES} times in a row to concurrent commits that "
                "could hold its keys; retry later")
        except (CommitConflictError, DuplicateKeyError):
            for a in adds:
                with contextlib.suppress(OSError, LakeflowError):
                    self._storage.delete(unquote(a.path))
            raise

    def merge(
        self,
        data: Any,
        on: str | Sequence[str] | None = None,
        when_matched: MatchedAction = "update",
        when_not_matched: str = "insert",
        when_not_matched_by_source: str = "keep",
        watermark: dt.datetime | None = None,
        *,
        late: str | None = None,
        quarantine: Table | str | None = None,
        null_keys: str = "error",
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
        return merge_into(self, data, on, when_matched=when_matched,
                          when_not_matched=when_not_matched,
                          when_not_matched_by_source=when_not_matched_by_source,
                          watermark=watermark, late=late, quarantine=quarantine,
                          null_keys=null_keys, retries=retries)

    def delete(self, where: Any, *, retries: int = 0) -> int:
        """Delete the rows where `where` is true, in one commit; return how many.

        Files the predicate matches wholly are removed without being rewritten;
        files it matches in part are rewritten without those rows.

        Args:
            where: a `pyarrow.compute` boolean expression, e.g. `pc.field("day") < d`.
            retries: on a conflicting concurrent commit, start over this many times.

        Raises:
            SchemaMismatchError: the predicate names an unknown column.
            CommitConflictError: a concurrent commit touched what the delete read.
        """
        return delete_where(self, where, retries=retries)

    def revisions(self, window: dt.datetime | dt.date | str) -> list[Commit]:
        """The commits that revised an event-time window with late changes, newest first.

        Args:
            window: an instant (or date) inside the window, e.g. its start.
        """
        start = window_start(window, window_micros(self.window or "1d"))
        return [c for c in self.history() if start in c.revised_windows]


class _CreateRace(Exception):
    pass


def _no_winner(version: int) -> tuple[list[Action], int | None]:
    raise _CreateRace(version)


__all__ = ["Commit", "Table"]
