"""Table maintenance: compact small files, vacuum unreferenced files, clean up the log.

Compaction is a commit like any other (remove + add with `dataChange=false`), so
readers never see an intermediate state and diffs see no change. Vacuum and log
cleanup only ever delete what no reachable version needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from lakeflow.actions import Action, Add, Remove
from lakeflow.checkpoint import parse_interval_ms
from lakeflow.errors import InvalidArgumentError
from lakeflow.log import (
    LOG_DIR,
    LogListing,
    check_data_path,
    check_vacuumable,
    commit_path,
    list_log,
    read_commit,
)
from lakeflow.snapshot import Snapshot
from lakeflow.transaction import Transaction
from lakeflow.write import CHANGE_DATA_DIR, write_data_files

if TYPE_CHECKING:
    from lakeflow.table import Table

DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
_WEEK_MS = 7 * 86_400_000
_MONTH_MS = 30 * 86_400_000
# Our temp files (`.name.<uuid hex>.tmp`, storage.LocalStorage) and how long vacuum leaves
# them: no write holds its temp file this long, so an older one belongs to a dead writer.
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
TEMP_FILE_GRACE = dt.timedelta(hours=1)


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


def _bins(files: Sequence[Add], target_size: int) -> list[list[Add]]:
    """Group small files into bins of about `target_size` bytes; singletons are left alone."""
    bins: list[list[Add]] = []
    current: list[Add] = []
    size = 0
    for add in sorted(files, key=lambda a: a.size):
        if current and size + add.size > target_size:
            bins.append(current)
            current, size = [], 0
        current.append(add)
        size += add.size
    bins.append(current)
    return [b for b in bins if len(b) > 1]


def compact(table: Table, target_file_size: int = DEFAULT_TARGET_FILE_SIZE) -> CompactResult:
    """Rewrite the small files of each partition into files of about `target_file_size`.

    Raises:
        InvalidArgumentError: `target_file_size` is not positive.
        CommitConflictError: a concurrent commit removed a file being compacted.
    """
    if not isinstance(target_file_size, int) or target_file_size <= 0:
        raise InvalidArgumentError(f"target_file_size must be a positive int, got {target_file_size!r}")
    table.refresh()
    state = table.state
    by_partition: dict[tuple[tuple[str, str | None], ...], list[Add]] = defaultdict(list)
    for add in state.files.values():
        if add.size < target_file_size:
            by_partition[tuple(sorted(add.partition_values.items()))].append(add)
    now = int(time.time() * 1000)
    actions: list[Action] = []
    removed: list[str] = []
    rows = 0
    for files in by_partition.values():
        for group in _bins(files, target_file_size):
            subset = dataclasses.replace(state, files={a.path: a for a in group})
            data = Snapshot(table.storage, subset).to_arrow()
            rows += data.num_rows
            actions += [a.remove(now, data_change=False) for a in group]
            actions += write_data_files(table.storage, data, state.metadata.partition_columns,
                                        data_change=False)
            removed += [a.path for a in group]
    if not removed:
        return CompactResult(None, 0, 0, 0)
    added = len(actions) - len(removed)
    tx = Transaction(
        actions=actions, operation="OPTIMIZE",
        parameters={"targetSize": str(target_file_size)},
        metrics={"numRemovedFiles": len(removed), "numAddedFiles": added, "numRows": rows},
        read_files=frozenset(removed),
    )
    outcome = table.commit(tx)
    return CompactResult(outcome.version, len(removed), added, rows)


def _retention_ms(table: Table, key: str, default: int) -> int:
    raw = table.state.metadata.configuration.get(key)
    return parse_interval_ms(raw, default) if raw else default


_STORE_STAMP_SLACK_MS = 999


def store_now_ms(table: Table) -> int:
    """The current time as the store's clock tells it, never later than this machine's.

    The store stamps a probe file it is given (a hidden temp file in `_delta_log`,
    removed at once); a store that reports no times falls back to the newest commit's
    time. Taking the earlier of that and the local clock means a clock that runs
    ahead, here or in the store, can only make maintenance delete less.
    """
    local = int(time.time() * 1000)
    probe = f".clock.{uuid.uuid4().hex}.tmp"
    table.storage.write(f"{LOG_DIR}/{probe}", b"")
    try:
        store = next((i.mtime_ms for i in table.storage.list_dir(LOG_DIR) if i.name == probe), None)
    finally:
        table.storage.delete(f"{LOG_DIR}/{probe}")
    if store is None:
        store = max(table.commit_timestamps().values(), default=local)
    # Stores stamp coarsely: S3 in whole seconds, local file systems by a clock that
    # ticks every few milliseconds. The probe was written within a second of its stamp.
    return min(local, store + _STORE_STAMP_SLACK_MS)


def _deletion_times(table: Table, listing: LogListing, since: int) -> dict[str, int]:
    """When each tombstoned file was removed, by the store's time where the log has it.

    A `deletionTimestamp` from a clock running behind would make a file look old: a
    remove in a commit the store stamped at or after `since` counts from that stamp.
    """
    state = table.state
    times = {check_data_path(r.path, "a tombstone"): r.deletion_timestamp or 0
             for r in state.tombstones.values()}
    # Commit times only where the store gives no mtime: they mean reading every commit.
    stamps = table.commit_timestamps() if any(i.mtime_ms is None for i in listing.commits.values()) else {}
    for v, info in listing.commits.items():
        stamp = info.mtime_ms if info.mtime_ms is not None else stamps.get(v)
        if stamp is None or stamp < since:
            continue
        try:
            actions = read_commit(table.storage, v)
        except FileNotFoundError:
            continue  # cleaned up since the listing: its tombstones keep their deletionTimestamp
        for a in actions:
            path = check_data_path(a.path, f"commit {v}") if isinstance(a, Remove) else None
            if path in times:
                times[path] = max(times[path], stamp)
    return times


def _listed_files(table: Table) -> list[tuple[str, int, int | None]]:
    """(path, size, mtime ms) of every file vacuum may consider: data and temp files.

    The log is left alone except for temp files; hidden directories hold no data
    files (e.g. the late-row quarantine table).
    """
    fs, root = table.storage.arrow_fs()
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


def vacuum(table: Table, retention: dt.timedelta = dt.timedelta(days=7), dry_run: bool = False,
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
    """
    if not isinstance(retention, dt.timedelta) or retention < dt.timedelta(0):
        raise InvalidArgumentError(f"retention must be a non-negative timedelta, got {retention!r}")
    table.refresh()
    check_vacuumable(table.state.protocol, table.state.metadata)
    configured = _retention_ms(table, "delta.deletedFileRetentionDuration", _WEEK_MS)
    retention_ms = int(retention.total_seconds() * 1000)
    if enforce_retention and retention_ms < configured:
        raise InvalidArgumentError(
            f"retention {retention} is shorter than the table's deletedFileRetentionDuration "
            f"({configured // 3_600_000} h): concurrent writers and readers of recent versions "
            "could lose files; pass enforce_retention=False if no one else uses the table"
        )
    now = store_now_ms(table)
    cutoff = now - retention_ms
    temp_cutoff = min(cutoff, now - int(TEMP_FILE_GRACE.total_seconds() * 1000))
    active = {check_data_path(a.path, "the latest version") for a in table.state.files.values()}
    tombstones = _deletion_times(table, list_log(table.storage), cutoff)
    doomed: list[tuple[str, int]] = []
    for rel, size, mtime in _listed_files(table):
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
            table.storage.delete(rel)
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


def cleanup_log(table: Table, retention: dt.timedelta | None = None) -> list[int]:
    """Delete commit files older than the log retention that a newer checkpoint covers.

    Keeps the newest checkpoint older than the cutoff, so every version from it on
    stays readable; versions before it are no longer reachable by time travel.
    `retention` defaults to `delta.logRetentionDuration` (30 days).

    Returns:
        The versions whose commit files were deleted.
    """
    table.refresh()
    retention_ms = (int(retention.total_seconds() * 1000) if retention is not None
                    else _retention_ms(table, "delta.logRetentionDuration", _MONTH_MS))
    cutoff = store_now_ms(table) - retention_ms
    listing = list_log(table.storage)
    stamps = table.commit_timestamps()
    # A checkpoint is old enough by its commit's time and by the store's stamp on it.
    anchors = [v for v in listing.checkpoints
               if v in stamps and max(stamps[v], _mtime(listing, v)) < cutoff]
    if not anchors:
        return []
    anchor = max(anchors)
    deleted = [v for v in sorted(listing.commits) if v < anchor]
    for path in _cleanup_order(listing, anchor):
        table.storage.delete(path)
    return deleted
