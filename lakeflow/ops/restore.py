"""Restore: one new commit whose state equals an earlier version's (files removed and re-added)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from lakeflow.actions import Cdc
from lakeflow.column_mapping import keep_max_column_id
from lakeflow.config import DERIVED_APP_PREFIX, VIEW_APP_PREFIX
from lakeflow.constraints import keep_identity_marks
from lakeflow.errors import InvalidArgumentError, VacuumedDataError
from lakeflow.keys import any_file
from lakeflow.log import check_writable
from lakeflow.ops.create import covering
from lakeflow.ops.rewrite import change_rows, writes_change_data
from lakeflow.snapshot import DataFile, Snapshot, deleted_rows
from lakeflow.transaction import Transaction
from lakeflow.write import write_cdc_files


def _needed(f: DataFile) -> tuple[str, ...]:
    """The files a logical file reads: its data file and its deletion vector's file, if stored apart."""
    dv = f.deletion_vector
    return (f.path, dv.file_path) if dv is not None and dv.storage_type == "u" else (f.path,)


def restore(snapshot: Snapshot, target: Snapshot) -> int:
    """Commit on top of `snapshot` a state equal to `target` (an earlier version); return the version.

    Files of `target` no longer in the table are added back (they must still be
    in the store), files added since are removed; the schema and properties of
    `target` come back too, while the protocol keeps every feature the table has.

    Raises:
        VacuumedDataError: a file `target` needs was vacuumed (nothing is written).
        UnsupportedFeatureError: the table is read-only for lakeflow.
    """
    check_writable(snapshot.protocol, snapshot.metadata)
    _check_not_derived(snapshot)
    current = {f.identity: f for f in snapshot.files}
    wanted = {f.identity: f for f in target.files}
    gone = [f for k, f in current.items() if k not in wanted]
    back = [f for k, f in wanted.items() if k not in current]
    missing = [p for f in back for p in _needed(f) if not snapshot.storage.exists(p)]
    if missing:
        raise VacuumedDataError(
            f"cannot restore {snapshot.storage.uri} to version {target.version}: {len(missing)} of its data "
            f"files (or deletion vector files) were vacuumed, e.g. {missing[0]}; restore a more recent version")
    now = int(time.time() * 1000)
    tx = Transaction(snapshot, "RESTORE", {"version": target.version,
                                           "timestamp": target.timestamp.isoformat() if target.timestamp else None})
    tx.remove(*gone).read(predicate=any_file)  # a concurrent append would survive into the restored state
    tx.add(*(dataclasses.replace(f.add, data_change=True, modification_time=now) for f in back))
    tx.add(*_change_files(snapshot, target, gone, back))
    metadata = keep_max_column_id(snapshot.metadata, keep_identity_marks(snapshot.metadata, target.metadata))
    if metadata != snapshot.metadata:
        tx.add(metadata)
    protocol = covering(snapshot.protocol, target.protocol)
    if protocol != snapshot.protocol:
        tx.add(protocol)
    tx.info({"numRemovedFiles": len(gone), "numRestoredFiles": len(back),
             "numOfFilesAfterRestore": len(wanted), "tableSizeAfterRestore": sum(f.size for f in wanted.values())})
    return tx.commit().version


def _check_not_derived(snapshot: Snapshot) -> None:
    """Refuse to restore a table a view or SQL asset keeps current from its source.

    Its txn says which source version its rows reflect, and a restore brings old
    rows back under the newest txn (Delta does not restore txns): the next refresh
    would fold only newer source commits onto them.
    """
    derived = sorted(a for a in snapshot.state.txns if a.startswith((VIEW_APP_PREFIX, DERIVED_APP_PREFIX)))
    if derived:
        raise InvalidArgumentError(
            f"{snapshot.storage.uri} is kept current from its source by {derived[0]!r}: restoring it "
            "would leave its rows out of step with the source version it records; rebuild it from the "
            "source instead (View.rebuild(), Project.rebuild(asset) or `lakeflow rebuild PROJECT ASSET`)")


def _change_files(snapshot: Snapshot, target: Snapshot, gone: list[DataFile], back: list[DataFile]) -> list[Cdc]:
    """Change data files of a restore that removes a file with a deletion vector whole (else none).

    deltalake (1.6) reads such a remove as the vector's rows; with change data files
    readers take the commit's changes from them alone, so they hold all of them: the
    rows of files removed or added back whole, and of a file whose vector changes the
    rows the two vectors differ by. Restores across a schema change write none.
    """
    again = {f.path: f for f in back}
    if (not writes_change_data(snapshot) or target.schema != snapshot.schema
            or tuple(target.partition_columns) != tuple(snapshot.partition_columns)
            or not any(f.deletion_vector is not None and f.path not in again for f in gone)):
        return []
    removed = {f.path for f in gone}
    deletes = snapshot.read_files([f for f in gone if f.path not in again])
    inserts = target.read_files([f for f in back if f.path not in removed])
    for f in gone:
        if f.path not in again:
            continue
        now = deleted_rows(snapshot.storage, f.path, f.deletion_vector).astype(np.int64)
        then = deleted_rows(snapshot.storage, f.path, again[f.path].deletion_vector).astype(np.int64)
        bare = dataclasses.replace(f, deletion_vector=None)  # positions are then the file's own
        out, into = np.setdiff1d(then, now), np.setdiff1d(now, then)
        deletes += snapshot.read_rows([(bare, out)]) if len(out) else []
        inserts += snapshot.read_rows([(bare, into)]) if len(into) else []
    parts = [*((rows, "delete") for rows in deletes), *((rows, "insert") for rows in inserts)]
    if not any(rows.num_rows for rows, _ in parts):
        return []
    return write_cdc_files(snapshot.storage, change_rows(target.schema, parts), target.partition_columns,
                           mapping=target.column_mapping)


__all__ = ["restore"]
