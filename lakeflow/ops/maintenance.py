"""Table maintenance: compact small files, vacuum unreferenced files, clean up the log.

Compaction is a commit like any other (remove + add with `dataChange=false`), so
readers never see an intermediate state and diffs see no change. Vacuum and log
cleanup only ever delete what no reachable version needs.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from lakeflow.actions import Remove
from lakeflow.config import DEFAULT_TARGET_FILE_SIZE
from lakeflow.deletion_vectors import DeletionVector
from lakeflow.errors import InvalidArgumentError
from lakeflow.log import (
    LOG_DIR,
    LogListing,
    check_data_path,
    check_vacuumable,
    check_writable,
    commit_path,
    list_log,
    read_commit,
)
from lakeflow.log_reader import LogReader
from lakeflow.ops.rewrite import pack
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.storage import Storage
from lakeflow.transaction import Transaction
from lakeflow.write import CHANGE_DATA_DIR, write_data_files

# Our temp files (`.name.<uuid hex>.tmp`, storage.LocalStorage) and how long vacuum leaves
# them: no write holds its temp file this long, so an older one belongs to a dead writer.
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
TEMP_FILE_GRACE = dt.timedelta(hours=1)
_DV_RE = re.compile(r"^deletion_vector_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.bin$")


@dataclass(frozen=True)
class CompactResult:
    """What `Table.compact` did. `version` is None when there was nothing to compact."""

    version: int | None
    files_removed: int
    files_added: int
    rows: int


@dataclass(frozen=True)
class VacuumResult:
    """Files `Table.vacuum` deleted (or would delete, with `dry_run`)."""

    files: tuple[str, ...]
    bytes: int
    dry_run: bool


def _size(f: DataFile) -> int:
    return f.size


def compact(snapshot: Snapshot, target_file_size: int = DEFAULT_TARGET_FILE_SIZE) -> CompactResult:
    """Rewrite the small files of each partition into files of about `target_file_size`.

    Files with a deletion vector are rewritten too (even alone), without the rows
    it deletes: compaction materializes deletion vectors.

    Raises:
        InvalidArgumentError: `target_file_size` is not positive.
        CommitConflictError: a concurrent commit removed a file being compacted.
        UnsupportedFeatureError: the table is read-only for lakeflow.
    """
    if not isinstance(target_file_size, int) or target_file_size <= 0:
        raise InvalidArgumentError(f"target_file_size must be a positive int, got {target_file_size!r}")
    check_writable(snapshot.protocol, snapshot.metadata)
    by_partition: dict[tuple[tuple[str, Any], ...], list[DataFile]] = defaultdict(list)
    for f in snapshot.files:
        if f.size < target_file_size or f.deletion_vector is not None:
            by_partition[tuple(sorted(f.add.partition_values.items()))].append(f)
    groups: list[list[DataFile]] = []
    for files in by_partition.values():
        # Smallest first, up to the target size each; a file left alone is not rewritten.
        bins = pack(sorted(files, key=_size), _size, target_file_size)
        groups += [b for b in bins if len(b) > 1 or b[0].deletion_vector is not None]
    return _rewrite_files(Transaction(snapshot, "OPTIMIZE", {"targetSize": str(target_file_size)}), groups)


def purge(snapshot: Snapshot) -> CompactResult:
    """Rewrite every file that has a deletion vector without its deleted rows (REORG TABLE ... APPLY (PURGE)).

    Raises:
        CommitConflictError: a concurrent commit removed a file being rewritten.
        UnsupportedFeatureError: the table is read-only for lakeflow.
    """
    check_writable(snapshot.protocol, snapshot.metadata)
    groups = [[f] for f in snapshot.files if f.deletion_vector is not None]
    return _rewrite_files(Transaction(snapshot, "REORG", {"predicate": "[]", "applyPurge": "true"}), groups)


def _rewrite_files(tx: Transaction, groups: list[list[DataFile]]) -> CompactResult:
    """Rewrite each group of files into new files (`dataChange=false`), one commit for all."""
    snapshot, removed, added, rows = tx.snapshot, 0, 0, 0
    for group in groups:
        data = pa.concat_tables(snapshot.read_files(group))
        adds = write_data_files(snapshot.storage, data, snapshot.partition_columns, data_change=False,
                                mapping=snapshot.column_mapping)
        tx.remove(*group, data_change=False).add(*adds)
        rows, removed, added = rows + data.num_rows, removed + len(group), added + len(adds)
    if not removed:
        return CompactResult(None, 0, 0, 0)
    tx.info({"numRemovedFiles": removed, "numAddedFiles": added, "numRows": rows})
    return CompactResult(tx.commit().version, removed, added, rows)


_STORE_STAMP_SLACK_MS = 999


def store_now_ms(log: LogReader) -> int:
    """The current time as the store's clock tells it, never later than this machine's.

    The store stamps a probe file it is given (a hidden temp file in `_delta_log`,
    removed at once); a store that reports no times falls back to the newest commit's
    time. Taking the earlier of that and the local clock means a clock that runs
    ahead, here or in the store, can only make maintenance delete less.
    """
    local = int(time.time() * 1000)
    probe = f".clock.{uuid.uuid4().hex}.tmp"
    log.storage.write(f"{LOG_DIR}/{probe}", b"")
    try:
        store = next((i.mtime_ms for i in log.storage.list_dir(LOG_DIR) if i.name == probe), None)
    finally:
        log.storage.delete(f"{LOG_DIR}/{probe}")
    if store is None:
        store = max((ts for _, ts in log.timeline()), default=local)
    # Stores stamp coarsely: S3 in whole seconds, local file systems by a clock that
    # ticks every few milliseconds. The probe was written within a second of its stamp.
    return min(local, store + _STORE_STAMP_SLACK_MS)


def _deletion_times(snapshot: Snapshot, listing: LogListing, since: int) -> dict[str, int]:
    """When each tombstoned file was removed, by the store's time where the log has it.

    A `deletionTimestamp` from a clock running behind would make a file look old: a
    remove in a commit the store stamped at or after `since` counts from that stamp.
    """
    times = {check_data_path(r.path, "a tombstone"): r.deletion_timestamp or 0
             for r in snapshot.state.tombstones.values()}
    times.update((p, r.deletion_timestamp or 0) for r in snapshot.state.tombstones.values()
                 for p in _dv_files(r.deletion_vector, "a tombstone"))
    # Commit times only where the store gives no mtime: they mean reading every commit.
    stamps = dict(snapshot.log.timeline()) if any(i.mtime_ms is None for i in listing.commits.values()) else {}
    for v, info in listing.commits.items():
        stamp = info.mtime_ms if info.mtime_ms is not None else stamps.get(v)
        if stamp is None or stamp < since:
            continue
        try:
            actions = read_commit(snapshot.storage, v)
        except FileNotFoundError:
            continue  # cleaned up since the listing: its tombstones keep their deletionTimestamp
        for a in actions:
            if not isinstance(a, Remove):
                continue
            # A DV file replaced in this commit (remove and add of the same data file) is
            # in no tombstone of the state: its remove here says when it left the table.
            path = check_data_path(a.path, f"commit {v}")
            if path in times:
                times[path] = max(times[path], stamp)
            for dv_path in _dv_files(a.deletion_vector, f"commit {v}"):
                times[dv_path] = max(times.get(dv_path, 0), stamp)
    return times


def _dv_files(descriptor: Mapping[str, Any] | None, where: str) -> tuple[str, ...]:
    """The deletion vector file a DV descriptor names (none for inline DVs)."""
    if not descriptor:
        return ()
    dv = DeletionVector.parse(descriptor, where)
    return (dv.file_path,) if dv.storage_type == "u" else ()


def _dv_removal_times(snapshot: Snapshot, listing: LogListing, paths: set[str]) -> dict[str, int]:
    """When the DV files `paths` left the table: the latest `deletionTimestamp` of a remove naming each.

    A DV file replaced by a newer DV of the same data file is in no tombstone of
    the state (the data file is live), so only the commits that removed it say
    when; one the log no longer holds leaves its file to its mtime.
    """
    times: dict[str, int] = {}
    for v in sorted(listing.commits):
        try:
            actions = read_commit(snapshot.storage, v)
        except FileNotFoundError:
            continue
        for r in (a for a in actions if isinstance(a, Remove)):
            for path in _dv_files(r.deletion_vector, f"commit {v}"):
                if path in paths:
                    times[path] = max(times.get(path, 0), r.deletion_timestamp or 0)
    return times


def _listed_files(storage: Storage) -> list[tuple[str, int, int | None]]:
    """(path, size, mtime ms) of every file vacuum may consider: data and temp files.

    The log is left alone except for temp files; hidden directories hold no data
    files (e.g. the late-row quarantine table).
    """
    fs, root = storage.arrow_fs()
    root = root.rstrip("/")
    out: list[tuple[str, int, int | None]] = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root) + 1:]
        top, name = rel.split("/", 1)[0], rel.rsplit("/", 1)[-1]
        hidden = "/" in rel and top.startswith(("_", ".")) and top != CHANGE_DATA_DIR
        if hidden and not (top == LOG_DIR and _TEMP_RE.match(name)):
            continue
        mtime = int(info.mtime.timestamp() * 1000) if info.mtime is not None else None
        out.append((rel, info.size or 0, mtime))
    return out


def vacuum(snapshot: Snapshot, retention: dt.timedelta = dt.timedelta(days=7), dry_run: bool = False,
           enforce_retention: bool = True) -> VacuumResult:
    """Delete data files that no version within `retention` references.

    A file is deleted when it is not part of the latest version and either was
    removed (tombstone) before the retention window, or is not in the log at all
    (an orphan of a failed write) and is older than the window. Temporary files of
    killed writers (in `_delta_log` too) go once older than the window and at least
    `TEMP_FILE_GRACE`, so a commit in flight keeps its own. Ages are measured on the
    store's clock (`store_now_ms`), not this machine's. The log itself is never
    touched here (see `cleanup_log`).

    Raises:
        InvalidArgumentError: `retention` is shorter than the table's
            `delta.deletedFileRetentionDuration` (default 7 days) while
            `enforce_retention` is on: readers of older versions, and writers
            still committing, could lose files.
        UnsupportedFeatureError: the table is read-only for lakeflow.
    """
    if not isinstance(retention, dt.timedelta) or retention < dt.timedelta(0):
        raise InvalidArgumentError(f"retention must be a non-negative timedelta, got {retention!r}")
    check_vacuumable(snapshot.protocol, snapshot.metadata)
    configured = snapshot.config.deleted_file_retention_ms
    retention_ms = int(retention.total_seconds() * 1000)
    if enforce_retention and retention_ms < configured:
        raise InvalidArgumentError(
            f"retention {retention} is shorter than the table's deletedFileRetentionDuration "
            f"({configured // 3_600_000} h): concurrent writers and readers of recent versions "
            "could lose files; pass enforce_retention=False if no one else uses the table"
        )
    now = store_now_ms(snapshot.log)
    cutoff = now - retention_ms
    temp_cutoff = min(cutoff, now - int(TEMP_FILE_GRACE.total_seconds() * 1000))
    active = {f.path for f in snapshot.files}
    active |= {f.deletion_vector.file_path for f in snapshot.files
               if f.deletion_vector is not None and f.deletion_vector.storage_type == "u"}
    listing, listed = list_log(snapshot.storage), _listed_files(snapshot.storage)
    tombstones = _deletion_times(snapshot, listing, cutoff)
    replaced = {rel for rel, _, _ in listed if _DV_RE.match(rel.rsplit("/", 1)[-1]) and rel not in active
                and rel not in tombstones}
    if replaced:
        tombstones.update(_dv_removal_times(snapshot, listing, replaced))
    doomed: list[tuple[str, int]] = []
    for rel, size, mtime in listed:
        if rel in active:
            continue
        if _TEMP_RE.match(rel.rsplit("/", 1)[-1]):
            expired = mtime is not None and mtime < temp_cutoff
        elif rel in tombstones:
            expired = tombstones[rel] < cutoff
        else:
            # No mtime (some stores): only a tombstone can prove a file is old enough.
            expired = mtime is not None and mtime < cutoff
        if expired:
            doomed.append((rel, size))
    if not dry_run:
        for rel, _ in doomed:
            snapshot.storage.delete(rel)
    return VacuumResult(tuple(sorted(r for r, _ in doomed)), sum(s for _, s in doomed), dry_run)


def _mtime(listing: LogListing, version: int) -> int:
    info = listing.commits.get(version)
    return 0 if info is None or info.mtime_ms is None else info.mtime_ms


def _cleanup_order(listing: LogListing, anchor: int) -> list[str]:
    """The log files before `anchor`, in an order that keeps the log readable throughout.

    Oldest first, and each checkpoint right after the commits it covers, before any
    commit after it: a cleanup stopped at any point leaves every version either
    reconstructable or cleanly gone (no checkpoint with a missing commit after it).
    """
    order: list[str] = []
    commits = sorted(v for v in listing.commits if v < anchor)
    for cp in [*sorted(v for v in listing.checkpoints if v < anchor), anchor]:
        order += [commit_path(v) for v in commits if v <= cp]
        commits = [v for v in commits if v > cp]
        if cp < anchor:
            order += [f"{LOG_DIR}/{name}" for name in listing.checkpoints[cp]]
    return order


def cleanup_log(snapshot: Snapshot, retention: dt.timedelta | None = None) -> list[int]:
    """Delete commit files older than the log retention that a newer checkpoint covers.

    Keeps the newest checkpoint older than the cutoff, so every version from it on
    stays readable; versions before it are no longer reachable by time travel.
    `retention` defaults to `delta.logRetentionDuration` (30 days).

    Returns:
        The versions whose commit files were deleted.

    Raises:
        UnsupportedFeatureError: the table is read-only for lakeflow.
    """
    check_writable(snapshot.protocol, snapshot.metadata)
    retention_ms = (int(retention.total_seconds() * 1000) if retention is not None
                    else snapshot.config.log_retention_ms)
    cutoff = store_now_ms(snapshot.log) - retention_ms
    listing = list_log(snapshot.storage)
    stamps = dict(snapshot.log.timeline())
    # A checkpoint is old enough by its commit's time and by the store's stamp on it.
    anchors = [v for v in listing.checkpoints
               if v in stamps and max(stamps[v], _mtime(listing, v)) < cutoff]
    if not anchors:
        return []
    anchor = max(anchors)
    deleted = [v for v in sorted(listing.commits) if v < anchor]
    for path in _cleanup_order(listing, anchor):
        snapshot.storage.delete(path)
    return deleted
