"""Delete rows by predicate: copy-on-write or deletion vectors, recorded as Delta change data.

Files the predicate matches wholly are removed without being read (unless their
rows are needed for change data, lateness or a missing row count); files it
matches in part are rewritten without those rows, or, on tables with deletion
vectors enabled, re-added with those rows marked in a deletion vector. The commit records the files
it considered and a predicate for files a concurrent writer adds: a concurrent
commit that removed one of those files, or added one that could hold matching
rows, makes the delete fail with `CommitConflictError` (or start over when
`retries` allows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Add
from lakeflow.constraints import enforce
from lakeflow.errors import InvalidArgumentError, LakeflowError, SchemaMismatchError
from lakeflow.late import EventClock
from lakeflow.log import check_writable
from lakeflow.ops.rewrite import (
    IndexArray,
    Matches,
    Written,
    change_rows,
    find_matches,
    matched_rows,
    uses_deletion_vectors,
    writes_change_data,
)
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.transaction import Transaction, retrying


def delete_where(snapshot: Snapshot, where: pc.Expression | str, *, retries: int = 0) -> int:
    """Delete the rows matching `where` (an expression or SQL); see `Table.delete`."""
    where = snapshot.filter_expression(where)
    if not isinstance(where, pc.Expression):
        raise InvalidArgumentError(
            f"where must be a pyarrow.compute.Expression such as pc.field('day') < date, "
            f"got {type(where).__name__}")
    return retrying(snapshot, retries, lambda snap: _delete_once(snap, where))


@dataclass(frozen=True)
class _Found:
    """What a delete found: the files it retires, the rows it deletes, the rows it keeps.

    Attributes:
        candidates: the files the predicate may match (the commit's read set).
        removed: files all of whose rows are deleted.
        kept: files deleted in part, each with its rows as read (every column for
            copy-on-write, which rewrites them) and the positions deleted.
        gone: the deleted rows, with the columns needed (all of them for change
            data, else the event time, else none).
        count: how many rows are deleted.
        cdc: whether the commit writes change data files.
        clock: the table's event clock (None: no event time).
    """

    candidates: tuple[DataFile, ...]
    removed: tuple[DataFile, ...]
    kept: tuple[Matches, ...]
    gone: pa.Table
    count: int
    cdc: bool
    clock: EventClock | None


def _find(snap: Snapshot, where: pc.Expression) -> _Found:
    """Check the delete and find the rows it removes, reading only what it must.

    Deletion vectors only mark rows: the partly matched files are read for the
    predicate's columns (and the event time), and need no change data files.
    """
    check_writable(snap.protocol, snap.metadata)
    enforce(snap.state, removes=True)
    schema = snap.schema
    try:
        schema.empty_table().filter(where)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise SchemaMismatchError(f"cannot evaluate where={where} on the table: {e}") from e
    clock = EventClock.of(snap)
    event = [clock.column] if clock is not None and clock.watermark_us is not None else []
    surely = pc.coalesce(where, pa.scalar(False))
    candidates = snap.files_matching(where)
    may_keep = {f.path for f in snap.files_matching(pc.invert(surely))}
    whole = [f for f in candidates if f.path not in may_keep]
    partial = [f for f in candidates if f.path in may_keep]

    dv = uses_deletion_vectors(snap)
    found = [m for m in find_matches(snap, partial, where, event if dv else None) if len(m.at)]
    kept = [m for m in found if len(m.at) < m.rows.num_rows]
    removed = [*(m.file for m in found if len(m.at) == m.rows.num_rows), *whole]
    cdc = writes_change_data(snap) and _needs_change_files(bool(kept) and not dv, removed)
    columns = None if cdc else event  # of the deleted rows
    whole_read = [f for f in whole if cdc or event or f.num_records is None]
    whole_rows = snap.read_files(whole_read, columns)
    count = (sum(len(m.at) for m in found) + sum(t.num_rows for t in whole_rows)
             + sum(f.num_records or 0 for f in whole if f not in whole_read))
    gone = [*matched_rows(snap, found, columns), *whole_rows]
    return _Found(tuple(candidates), tuple(removed), tuple(kept),
                  pa.concat_tables(gone) if gone and (columns is None or columns) else schema.empty_table(),
                  int(count), cdc, clock)


def _needs_change_files(copies: bool, removed: Sequence[DataFile]) -> bool:
    """Whether a delete's change data must be written in files, with CDF on.

    Without them readers take a delete's rows from its removes, and from the
    difference of a file's old and new deletion vector (a delete only removes
    rows: PROTOCOL.md, Change Data Files). Copied rows would read as changes, and
    deltalake (1.6) reads a remove of a file with a vector as the vector's rows.
    """
    return copies or any(f.deletion_vector is not None for f in removed)


def _without(rows: pa.Table, at: IndexArray) -> pa.Table:
    """`rows` less those at positions `at`."""
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[at] = False
    return rows.filter(pa.array(keep))


def _delete_once(snap: Snapshot, where: pc.Expression) -> int:
    found = _find(snap, where)
    if found.count == 0:
        return 0
    tx, written = deleting(snap, where, found, "DELETE", {"predicate": str(where)})
    written.commit(tx)
    return found.count


def deleting(snap: Snapshot, where: pc.Expression, found: _Found | None = None, operation: str = "DELETE",
             parameters: Mapping[str, Any] | None = None) -> tuple[Transaction, Written]:
    """A transaction (not committed) deleting the rows matching `where`, and the files it wrote.

    Other operations add to it before committing (an overwrite of the rows
    `where` matches adds the new rows: Delta's replaceWhere).
    """
    found = _find(snap, where) if found is None else found
    dv = uses_deletion_vectors(snap)
    written = Written.of(snap, [] if dv else [_without(m.rows, m.at) for m in found.kept],
                         change_rows(snap.schema, [(found.gone, "delete")]) if found.cdc else None,
                         [(m.file, m.at) for m in found.kept] if dv else ())
    info: dict[str, Any] = {}
    if found.clock is not None:
        mask = found.clock.late(found.gone)
        info = found.clock.commit_info(int(mask.sum()), found.clock.windows(found.gone, mask))
    removed = [*found.removed, *(m.file for m in found.kept)]
    tx = Transaction(snap, operation, parameters)
    tx.remove(*removed).add(*written.adds, *written.marked, *written.cdcs)
    tx.read([f.add.path for f in found.candidates], lambda add: may_hold(snap, add, where))
    tx.info({"numDeletedRows": found.count, "numRemovedFiles": len(removed),
             "numAddedFiles": len(written.adds),
             "numCopiedRows": 0 if dv else sum(m.rows.num_rows - len(m.at) for m in found.kept),
             "numAddedChangeFiles": len(written.cdcs),
             **({"numDeletionVectorsAdded": len(written.marked)} if dv else {})}, **info)
    return tx, written


def may_hold(snap: Snapshot, add: Add, where: pc.Expression) -> bool:
    """Whether a file added by a concurrent writer could hold rows `where` matches."""
    try:
        alone = Snapshot(snap.log, dataclasses.replace(snap.state, files={add.path: add}))
        return bool(alone.files_matching(where))
    except (LakeflowError, pa.ArrowException):
        return True


__all__ = ["delete_where", "deleting", "may_hold"]
