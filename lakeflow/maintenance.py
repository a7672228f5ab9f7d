"""Table maintenance: compact small files, vacuum unreferenced files, clean up the log.

Compaction is a commit like any other (remove + add with `dataChange=false`), so
readers never see an intermediate state and diffs see no change. Vacuum and log
cleanup only ever delete what no reachable version needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from lakeflow.actions import Action, Add
from lakeflow.checkpoint import parse_interval_ms
from lakeflow.errors import InvalidArgumentError
from lakeflow.log import LOG_DIR, LogListing, check_data_path, commit_path, list_log
from lakeflow.snapshot import Snapshot
from lakeflow.transaction import Transaction
from lakeflow.write import CHANGE_DATA_DIR, write_data_files

if TYPE_CHECKING:
    from lakeflow.table import Table

DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
_WEEK_MS = 7 * 86_400_000
_MONTH_MS = 30 * 86_400_000


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


def vacuum(table: Table, retention: dt.timedelta = dt.timedelta(days=7), dry_run: bool = False,
           enforce_retention: bool = True) -> VacuumResult:
    """Delete data files that no version within `retention` references.

    A file is deleted when it is not part of the latest version and either was
    removed (tombstone) before the retention window, or is not in the log at all
    (an orphan of a failed write) and is older than the window. The log itself is
    never touched here (see `cleanup_log`).

    Raises:
        InvalidArgumentError: `retention` is shorter than the table's
            `delta.deletedFileRetentionDuration` (default 7 days) while
            `enforce_retention` is on: readers of older versions, and writers
            still committing, could lose files.
    """
    if not isinstance(retention, dt.timedelta) or retention < dt.timedelta(0):
        raise InvalidArgumentError(f"retention must be a non-negative timedelta, got {retention!r}")
    table.refresh()
    state = table.state
    configured = _retention_ms(table, "delta.deletedFileRetentionDuration", _WEEK_MS)
    retention_ms = int(retention.total_seconds() * 1000)
    if enforce_retention and retention_ms < configured:
        raise InvalidArgumentError(
            f"retention {retention} is shorter than the table's deletedFileRetentionDuration "
            f"({configured // 3_600_000} h): concurrent writers and readers of recent versions "
            "could lose files; pass enforce_retention=False if no one else uses the table"
        )
    cutoff = int(time.time() * 1000) - retention_ms
    active = {check_data_path(a.path, "the latest version") for a in state.files.values()}
    tombstones = {check_data_path(r.path, "a tombstone"): r.deletion_timestamp or 0
                  for r in state.tombstones.values()}
    fs, root = table.storage.arrow_fs()
    root = root.rstrip("/")
    doomed: list[tuple[str, int]] = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root) + 1:]
        if rel.startswith(f"{LOG_DIR}/") or rel in active:
            continue
        top = rel.split("/", 1)[0]
        if "/" in rel and top.startswith(("_", ".")) and top != CHANGE_DATA_DIR:
            continue  # hidden directories hold no data files, e.g. the late-row quarantine table
        if rel in tombstones:
            expired = tombstones[rel] < cutoff
        else:
            mtime = info.mtime.timestamp() * 1000 if info.mtime is not None else None
            # No mtime (some stores): only a tombstone can prove a file is old enough.
            expired = mtime is not None and mtime < cutoff
        if expired:
            doomed.append((rel, info.size or 0))
    if not dry_run:
        for rel, _ in doomed:
            table.storage.delete(rel)
    return VacuumResult(tuple(sorted(r for r, _ in doomed)), sum(s for _, s in doomed), dry_run)


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
    cutoff = int(time.time() * 1000) - retention_ms
    listing = list_log(table.storage)
    stamps = {v: ts for v, ts in table.commit_timestamps().items() if ts is not None}
    anchors = [v for v in listing.checkpoints if v in stamps and stamps[v] < cutoff]
    if not anchors:
        return []
    anchor = max(anchors)
    deleted = [v for v in sorted(listing.commits) if v < anchor]
    for path in _cleanup_order(listing, anchor):
        table.storage.delete(path)
    return deleted
