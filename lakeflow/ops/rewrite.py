"""What the operations that rewrite files share: written files, change data rows, packing.

Merge and delete write their new data and change files in parallel
(`Written.of`) and delete them again when the commit loses (`Written.commit`);
their change rows carry Delta's `_change_type`. On tables with deletion vectors
(`uses_deletion_vectors`) they mark removed rows in a DV file instead of copying
the rest of the file (`mark_rows`: the same path re-added with the union DV). Merge and compaction group the
files they rewrite into files of about a target size (`pack`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Add, Cdc
from lakeflow.deletion_vectors import physical_rows, write_vectors
from lakeflow.diff import CHANGE_TYPE
from lakeflow.errors import CommitConflictError, LakeflowError
from lakeflow.log import writer_features
from lakeflow.pruning import parse_filter
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.storage import Storage
from lakeflow.transaction import Transaction
from lakeflow.write import discard, write_cdc_files, write_data_files

T = TypeVar("T")
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
IndexArray = np.ndarray[Any, np.dtype[np.int64]]
Content: TypeAlias = "pa.Table | Callable[[], pa.Table]"  # a callable is built when written

# File reads and writes overlap I/O with pyarrow's own (GIL-free) work; more
# threads than cores only contend.
_IO_THREADS = max(2, os.cpu_count() or 1)


def writes_change_data(snap: Snapshot) -> bool:
    """Whether the protocol requires change data files for this table.

    `delta.enableChangeDataFeed` counts only where the protocol has the feature:
    writer version 4 to 6, or 7 with `changeDataFeed` among the writer features.
    """
    if not snap.config.change_data_feed:
        return False
    p = snap.protocol
    if p.min_writer_version >= 7:
        return "changeDataFeed" in (p.writer_features or ())
    return p.min_writer_version >= 4


def uses_deletion_vectors(snap: Snapshot) -> bool:
    """Whether removed rows are marked in deletion vectors (merge-on-read) rather than copied out.

    Needs `delta.enableDeletionVectors=true` and the `deletionVectors` feature in the protocol.
    """
    return snap.config.deletion_vectors and "deletionVectors" in writer_features(snap.protocol)


def mark_rows(snap: Snapshot, marks: Sequence[tuple[DataFile, IndexArray]]) -> tuple[list[Add], str | None]:
    """Mark rows (logical positions, as read) of files deleted; the new adds and the DV file written (if any).

    Each file's new DV is the union of its current one and the marked rows; a
    file all of whose rows are then deleted gets no add (removing it says it all).
    Small DVs go inline in the log; the others into one new file, as Spark writes them.
    """
    unions, files = [], []
    for f, logical in marks:
        deleted = f.deletion_vector.read(snap.storage) if f.deletion_vector else np.empty(0, np.uint64)
        union = np.union1d(deleted, physical_rows(deleted, logical))
        total = f.add.num_records()
        if total is None or len(union) < total:
            unions.append(union)
            files.append(f)
    if not unions:
        return [], None
    path, descriptors = write_vectors(snap.storage, unions)
    return [dataclasses.replace(f.add, data_change=True, deletion_vector=d, stats=_loose_stats(f.add.stats))
            for f, d in zip(files, descriptors, strict=True)], path


def _loose_stats(stats: str | None) -> str | None:
    """The file's stats, flagged as bounds of the data file (`tightBounds: false`), not of its live rows."""
    if not stats:
        return stats
    return json.dumps({**json.loads(stats), "tightBounds": False}, separators=(",", ":"))


def change_rows(schema: pa.Schema, parts: Sequence[tuple[pa.Table, str]]) -> pa.Table:
    """Change data rows: each part's rows in `schema`, with its `_change_type`."""
    tables = [t.cast(schema).append_column(CHANGE_TYPE, pa.array([kind] * t.num_rows, pa.string()))
              for t, kind in parts if t.num_rows]
    return pa.concat_tables(tables)


def replacement_changes(snap: Snapshot, removed: Sequence[DataFile], inserted: pa.Table) -> list[Cdc]:
    """Change data files for a commit that removes the files `removed` whole and adds `inserted`, when needed.

    Needed (with change data on) when a removed file has a deletion vector: deltalake
    (1.6) reads the remove of such a file as the vector's rows, where the protocol
    means the rows the file still holds; change data files alone then describe the
    commit, so they hold every change (the removed files' rows out, `inserted` in).
    """
    if not writes_change_data(snap) or not any(f.deletion_vector is not None for f in removed):
        return []
    parts = [*((rows, "delete") for rows in snap.read_files(list(removed))), (inserted, "insert")]
    if not any(rows.num_rows for rows, _ in parts):
        return []
    return write_cdc_files(snap.storage, change_rows(snap.schema, parts), snap.partition_columns,
                           mapping=snap.column_mapping)


def predicate_columns(schema: pa.Schema, where: pc.Expression) -> list[str]:
    """The columns `where` reads, in schema order; all of them when that cannot be told."""
    named: set[str] = set()
    node = parse_filter(where)
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        named.update([n.name] if n.kind == "field" else [])
        stack.extend(n.args)
    columns = [c for c in schema.names if c in named]
    try:  # it binds on these columns alone: it reads no other
        schema.empty_table().select(columns).filter(where)
    except (pa.ArrowException, KeyError):
        return list(schema.names)
    return columns


@dataclass(frozen=True)
class Matches:
    """The rows of one file a predicate is true for.

    Attributes:
        file: the file.
        rows: its rows as read (deleted rows left out), only the columns read.
        at: the positions in `rows` of the rows the predicate is true for.
    """

    file: DataFile
    rows: pa.Table
    at: IndexArray


def find_matches(snap: Snapshot, files: Sequence[DataFile], where: pc.Expression,
                 columns: Sequence[str] | None = None) -> list[Matches]:
    """Each file's rows `where` is true for (null counts as false), in the order given.

    Only the predicate's columns and `columns` are read (None: every column).
    """
    if columns is not None:
        wanted = {*predicate_columns(snap.schema, where), *columns}
        columns = [c for c in snap.schema.names if c in wanted]
    return [Matches(f, rows, matching(rows, where))
            for f, rows in zip(files, snap.read_files(files, columns), strict=True)]


def matching(rows: pa.Table, where: pc.Expression) -> IndexArray:
    """The positions of the rows `where` is true for (null counts as false)."""
    at = rows.append_column(_POSITION, pa.array(np.arange(rows.num_rows, dtype=np.int64))).filter(where)
    positions: IndexArray = at.column(_POSITION).to_numpy().astype(np.int64)
    return positions


_POSITION = "__lakeflow_position"


def matched_rows(snap: Snapshot, found: Sequence[Matches], columns: Sequence[str] | None = None) -> list[pa.Table]:
    """The matched rows of each of `found`, with `columns` (default all).

    Columns not read when matching are read now, for the matched rows only (the
    row groups holding them).
    """
    schema = pa.schema([snap.schema.field(c) for c in (columns if columns is not None else snap.schema.names)])
    unread = [c for c in schema.names if found and c not in found[0].rows.column_names]
    hits = [i for i, m in enumerate(found) if len(m.at)]
    read = dict(zip(hits, snap.read_rows([(found[i].file, found[i].at) for i in hits], unread), strict=True)) \
        if unread else {}
    out = []
    for i, m in enumerate(found):
        taken, more = take_rows(m.rows, m.at), read.get(i, schema.empty_table())
        out.append(pa.Table.from_arrays([(taken if c in taken.column_names else more).column(c) for c in schema.names],
                                        schema=schema))
    return out


def take_rows(table: pa.Table, idx: IndexArray) -> pa.Table:
    """The rows of `table` at positions `idx`, in that order."""
    return table.take(pa.array(idx, pa.int64()))


def positions(mask: BoolArray) -> IndexArray:
    """The positions where `mask` is true."""
    return np.flatnonzero(mask).astype(np.int64)


def pack(items: Iterable[T], size: Callable[[T], int], target: int,
         group: Callable[[T], Hashable] | None = None) -> list[list[T]]:
    """Cut `items`, in their order, into runs of one `group` up to `target` bytes each.

    An item larger than `target` makes a run of its own.
    """
    bins: list[list[T]] = []
    last: Hashable = None
    total = 0
    for item in items:
        key, n = (group(item) if group is not None else None), size(item)
        if bins and key == last and total + n <= target:
            bins[-1].append(item)
            total += n
        else:
            bins.append([item])
            last, total = key, n
    return bins


@dataclass
class Written:
    """Data and change files an operation wrote; deleted again if its commit loses."""

    adds: list[Add] = field(default_factory=list)
    cdcs: list[Cdc] = field(default_factory=list)
    marked: list[Add] = field(default_factory=list)  # files re-added with a new deletion vector
    dv_files: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, snap: Snapshot, contents: Sequence[Content], changes: pa.Table | None,
           marks: Sequence[tuple[DataFile, IndexArray]] = ()) -> Written:
        """Write the files (and the deletion vectors of `marks`); when any write fails, delete those written."""
        written = cls()
        try:
            written.write(snap, contents, changes)
            if marks:
                written.marked, path = mark_rows(snap, marks)
                written.dv_files += [path] if path else []
        except BaseException:
            written.discard(snap.storage)
            raise
        return written

    def write(self, snap: Snapshot, contents: Sequence[Content], changes: pa.Table | None) -> None:
        """Write data files (one per content) and change files, in parallel.

        A callable content is built in its task. Every file written is recorded,
        even when a task fails; then the first error is raised.
        """
        storage, partition_by, mapping = snap.storage, snap.partition_columns, snap.column_mapping

        def data(content: Content) -> list[Add]:
            rows = content() if callable(content) else content
            return write_data_files(storage, rows, partition_by, mapping=mapping) if rows.num_rows else []

        with ThreadPoolExecutor(_IO_THREADS) as pool:
            futures: list[Future[Any]] = [pool.submit(data, c) for c in contents]
            if changes is not None:
                futures.append(pool.submit(write_cdc_files, storage, changes, partition_by, mapping=mapping))
        errors: list[BaseException] = []
        for future in futures:
            try:
                files = future.result()
            except Exception as e:  # re-raised below, after recording the rest
                errors.append(e)
                continue
            for f in files:
                (self.adds if isinstance(f, Add) else self.cdcs).append(f)
        if errors:
            raise errors[0]

    def discard(self, storage: Storage) -> None:
        """Delete every file written (best effort: an orphan is harmless, vacuum removes it)."""
        discard(storage, [*self.adds, *self.cdcs])  # never `marked`: their data files stay
        for path in self.dv_files:
            with contextlib.suppress(OSError, LakeflowError):
                storage.delete(path)

    def commit(self, tx: Transaction) -> int:
        """Commit `tx` (which adds these files) and return its version.

        A conflict deletes the files: no version will reference them.
        """
        try:
            return tx.commit().version
        except CommitConflictError:
            self.discard(tx.snapshot.storage)
            raise


__all__ = ["BoolArray", "Content", "IndexArray", "Matches", "Written", "change_rows", "find_matches", "mark_rows",
           "matched_rows", "matching", "pack", "positions", "predicate_columns", "replacement_changes", "take_rows",
           "uses_deletion_vectors", "writes_change_data"]
