"""Replace rows by key in one commit: what incremental maintenance writes (O(change)).

Rows whose key is among the keys to replace are removed (their files rewritten
without them, copy-on-write, or marked in a deletion vector on tables with
deletion vectors enabled); the new rows are added, in the same files as the rows
kept from rewritten files (up to the target file size); an application `txn`
in the same commit makes the replacement exactly-once. Derived assets and views
use it to write only the groups or rows a source change touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from lakeflow.actions import Add, Cdc
from lakeflow.config import DEFAULT_TARGET_FILE_SIZE
from lakeflow.errors import SchemaMismatchError
from lakeflow.keys import any_file, frame_of, key_candidates
from lakeflow.log import check_writable
from lakeflow.ops.rewrite import IndexArray, Written, change_rows, mark_rows, uses_deletion_vectors, writes_change_data
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.transaction import CommitResult, Transaction
from lakeflow.write import conform, discard, write_cdc_files, write_data_files


@dataclass(frozen=True)
class Replacement:
    """What a key replacement changed.

    Attributes:
        result: the commit (None: the application transaction was already there,
            or there was nothing to write and no txn to record).
        rows_removed: rows of the table whose key was replaced.
        rows_added: new rows written.
        files_rewritten: files rewritten without the replaced rows (or dropped).
        rows_of: the rows of files the commit added, by their log path (`add.path`), where
            known: what reading that file (with its deletion vector) returns, so a caller
            that keeps a table's rows need not read them back.
    """

    result: CommitResult | None
    rows_removed: int
    rows_added: int
    files_rewritten: int
    rows_of: Mapping[str, pa.Table] = field(default_factory=dict)


def replace_keys(snapshot: Snapshot, rows: pa.Table, key: Sequence[str], replaced: pa.Table | None = None,
                 *, app_id: str, txn_version: int, operation: str = "WRITE",
                 parameters: Mapping[str, Any] | None = None,
                 read: Mapping[str, pa.Table] | None = None) -> Replacement:
    """Remove the rows whose `key` is in `rows` or `replaced`, add `rows`; one commit with a txn.

    Args:
        snapshot: the table to write, as read.
        rows: the new rows (conformed to the table schema).
        key: the key columns (unique in the table and in `rows`).
        replaced: more keys to remove without a new row (columns `key`).
        app_id: the application writing (exactly-once with `txn_version`).
        txn_version: the application's version of this write (e.g. a source version).
        operation: the Delta operation name for the commitInfo.
        parameters: more operationParameters for the commitInfo.
        read: rows of files of `snapshot` the caller already read, by path (not read again).

    Raises:
        SchemaMismatchError: `rows` or `replaced` lack a key column or do not fit.
        CommitConflictError: a concurrent commit touched the files read.
    """
    check_writable(snapshot.protocol, snapshot.metadata)
    seen = snapshot.state.txns.get(app_id)
    if seen is not None and seen.version >= txn_version:
        return Replacement(None, 0, 0, 0)
    key = list(key)
    rows = conform(rows, snapshot.schema).table
    if replaced is not None and any(c not in replaced.column_names for c in key):
        raise SchemaMismatchError(f"the keys to replace must have the key columns {key}")
    keys = rows.select(key)
    if replaced is not None and replaced.num_rows:
        keys = pa.concat_tables([keys, replaced.select(key).cast(keys.schema)])
    gone = frame_of(keys).unique()
    files, could_match = key_candidates(snapshot, gone.to_arrow()) if gone.height else ([], any_file)
    tx = Transaction(snapshot, operation, {"key": key, **(parameters or {})})
    written: list[Add | Cdc] = []
    marked = Written()
    rows_of: dict[str, pa.Table] = {}
    kept: list[tuple[pa.Table, int]] = []
    deleted: list[pa.Table] = []
    try:
        removed, rewritten, whole_dv = _rewrite(tx, files, gone, key, kept, marked, read or {}, rows_of, deleted)
        limit = snapshot.config.target_file_size or DEFAULT_TARGET_FILE_SIZE
        for part in _packed(rows, kept, limit):
            written += _written(snapshot, part, rows_of)
        if writes_change_data(snapshot) and (kept or whole_dv):
            # Without change data files readers take a commit's changes from its files: the rows
            # copied out of rewritten files would read as deleted and inserted, and deltalake reads
            # the remove of a file with a vector as that vector's rows (see ops.delete).
            changes = change_rows(snapshot.schema, [*((d, "delete") for d in deleted), (rows, "insert")])
            written += write_cdc_files(snapshot.storage, changes, snapshot.partition_columns,
                                       mapping=snapshot.column_mapping)
        tx.add(*written, *marked.marked)
        tx.read([f.add.path for f in files], could_match)
        # The txn read: a concurrent write of the same application conflicts (its keys are unknown here).
        tx.read(txns=[app_id]).set_txn(app_id, txn_version)
        tx.info({"numRemovedRows": removed, "numAddedRows": rows.num_rows, "numRewrittenFiles": rewritten})
        result = tx.commit()
    except BaseException:
        discard(snapshot.storage, written)
        marked.discard(snapshot.storage)
        raise
    if result.deduplicated:  # another attempt of the same write won
        discard(snapshot.storage, written)
        marked.discard(snapshot.storage)
        return Replacement(None, 0, 0, 0)
    return Replacement(result, removed, rows.num_rows, rewritten, rows_of)


def _packed(rows: pa.Table, kept: Sequence[tuple[pa.Table, int]], limit: int) -> list[pa.Table]:
    """The new rows and the rows kept from rewritten files, in as few files as stay under `limit` bytes.

    A file per rewritten file would add a file to the table at each replacement that
    touches more than one; the rewritten files' sizes bound what their kept rows take.
    """
    bins: list[list[pa.Table]] = [[rows]]
    size = 0
    for table, file_size in kept:
        if size and size + file_size > limit:
            bins.append([])
            size = 0
        bins[-1].append(table)
        size += file_size
    return [pa.concat_tables(b) for b in bins if any(t.num_rows for t in b)]


def _written(snapshot: Snapshot, rows: pa.Table, rows_of: dict[str, pa.Table]) -> list[Add]:
    """Write `rows` as data files; the rows of an unpartitioned table's file go to `rows_of` by its path.

    (Partitioned, a file holds its partition's rows in an order not known here.)
    """
    adds = write_data_files(snapshot.storage, rows, snapshot.partition_columns, mapping=snapshot.column_mapping)
    if not snapshot.partition_columns and len(adds) == 1:
        rows_of[adds[0].path] = rows
    return adds


def _rewrite(tx: Transaction, files: Sequence[DataFile], gone: pl.DataFrame, key: list[str],
             kept: list[tuple[pa.Table, int]], marked: Written, read: Mapping[str, pa.Table],
             rows_of: dict[str, pa.Table], deleted: list[pa.Table]) -> tuple[int, int, bool]:
    """Stage each file holding a replaced key as removed, its other rows (and its size) into `kept`.

    The replaced rows go to `deleted`. Returns the rows removed, the files touched, and
    whether a file that has a deletion vector is removed whole.

    With deletion vectors the file is re-added instead, its replaced rows marked
    deleted (recorded in `marked`, whose DV file is then written; the rows it then
    reads go to `rows_of`).
    """
    snapshot, removed, rewritten, whole_dv = tx.snapshot, 0, 0, False
    dv = uses_deletion_vectors(snapshot)
    marks: list[tuple[DataFile, IndexArray]] = []
    unread = [f for f in files if f.path not in read]
    fresh = dict(zip((f.path for f in unread), snapshot.read_files(unread), strict=True))
    for f in files:
        table = read[f.path] if f.path in read else fresh[f.path]
        frame = frame_of(table).with_row_index(_POSITION)
        hit = frame.join(gone, on=key, how="semi", nulls_equal=True)[_POSITION].to_numpy().astype("int64")
        if not len(hit):
            continue
        removed, rewritten = removed + len(hit), rewritten + 1
        whole_dv = whole_dv or (len(hit) == table.num_rows and f.deletion_vector is not None)
        deleted.append(table.take(pa.array(hit, pa.int64())))
        tx.remove(f)
        if dv:
            marks.append((f, np.sort(hit)))
            live = np.ones(table.num_rows, np.bool_)
            live[hit] = False
            rows_of[f.add.path] = table.filter(pa.array(live))  # what the file reads with its new vector
        elif len(hit) < table.num_rows:
            rest = frame.join(gone, on=key, how="anti", nulls_equal=True).drop(_POSITION)
            kept.append((rest.to_arrow().cast(table.schema), f.size))
    if marks:
        marked.marked, path = mark_rows(snapshot, marks)
        marked.dv_files += [path] if path else []
        for gone_file in {f.add.path for f, _ in marks} - {a.path for a in marked.marked}:
            del rows_of[gone_file]  # every row deleted: removed, not re-added
    return removed, rewritten, whole_dv


_POSITION = "__lakeflow_position"



__all__ = ["Replacement", "replace_keys"]
