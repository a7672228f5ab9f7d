"""Update rows by predicate: new values for the matching rows, copy-on-write, change data recorded.

Assignments are SQL expressions (`"amount * 1.1"`, run by polars SQL), polars
expressions or `pyarrow.compute` expressions over the row's current values. Only
files the predicate may match (partition and statistics pruning) are read; a file
with matching rows is rewritten with all its rows, the matching ones changed, or,
on tables with deletion vectors enabled, re-added with the matching rows marked in
a deletion vector, their new values written as a new file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lakeflow.constraints import enforce
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError
from lakeflow.late import EventClock
from lakeflow.log import check_writable
from lakeflow.ops.delete import may_hold
from lakeflow.ops.rewrite import (
    IndexArray,
    Written,
    change_rows,
    find_matches,
    matched_rows,
    uses_deletion_vectors,
    writes_change_data,
)
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.transaction import Transaction, retrying

Assignment = Union[str, pl.Expr, pc.Expression]  # noqa: UP007 (a runtime alias)


def _check(snap: Snapshot, where: Any, assignments: Mapping[str, Assignment]) -> pc.Expression:
    where = snap.filter_expression(where)
    if not isinstance(where, pc.Expression):
        raise InvalidArgumentError(f"where must be a SQL string or a pyarrow expression, got {type(where).__name__}")
    if not assignments:
        raise InvalidArgumentError("set= needs at least one column, e.g. set={'amount': 'amount * 2'}")
    unknown = [c for c in assignments if c not in snap.schema.names]
    if unknown:
        raise SchemaMismatchError(f"set= names unknown column(s) {unknown}; the table has {snap.schema.names}")
    fixed = [c for c in assignments if c in snap.config.key or c in snap.partition_columns]
    if fixed:
        raise InvalidArgumentError(f"cannot update key or partition column(s) {fixed}: delete and append the rows")
    bad = [c for c, v in assignments.items() if not isinstance(v, (str, pl.Expr, pc.Expression))]
    if bad:
        raise InvalidArgumentError(f"set= values must be SQL strings or polars/pyarrow expressions: {bad}")
    snap.files_matching(where)  # a bad predicate fails here, typed, before any read
    return where


def _values(rows: pa.Table, column: str, value: Assignment, field: pa.Field) -> pa.ChunkedArray:
    """`value` evaluated over `rows`, cast to the column's type."""
    try:
        if isinstance(value, pc.Expression):
            out = ds.dataset(rows).to_table(columns={column: value}).column(column)
        else:
            frame = pl.from_arrow(rows)
            assert isinstance(frame, pl.DataFrame)
            expr = pl.sql_expr(value) if isinstance(value, str) else value
            # with_columns broadcasts a constant (`"0"`) to every row, select would not
            out = frame.with_columns(expr.alias(column)).select(column).to_arrow().column(0)
        return out.cast(field.type)
    except (pa.ArrowException, pl.exceptions.PolarsError, ValueError) as e:
        raise InvalidArgumentError(f"cannot compute {column} = {value}: {e}") from e


def _assigned(rows: pa.Table, assignments: Mapping[str, Assignment]) -> pa.Table:
    """`rows` with the assigned columns set to their new values."""
    out = rows
    for column, value in assignments.items():
        i = rows.schema.get_field_index(column)
        out = out.set_column(i, rows.schema.field(i), _values(rows, column, value, rows.schema.field(i)))
    return out


@dataclass(frozen=True)
class _Change:
    """One file's update: the file, the positions (as read) of its changed rows, those rows before and after."""

    file: DataFile
    at: IndexArray
    pre: pa.Table
    post: pa.Table
    rows: pa.Table  # the file's rows as read (all columns for copy-on-write, which rewrites them)

    def after(self) -> pa.Table:
        """The file's rows with the changed ones replaced, in their order."""
        n = self.rows.num_rows
        index = np.arange(n)
        # The changed positions in ascending order take the new rows in order (a take works for nested types).
        index[np.unique(self.at)] = n + np.arange(self.post.num_rows)
        take = pa.array(index)
        return pa.Table.from_arrays(
            [pa.concat_arrays([self.rows.column(c).combine_chunks(), self.post.column(c).combine_chunks()]).take(take)
             for c in self.rows.column_names], schema=self.rows.schema)


def _changes(snap: Snapshot, where: pc.Expression, assignments: Mapping[str, Assignment],
             files: list[DataFile], dv: bool) -> list[_Change]:
    """The changed rows of each file with a match; the new values computed for those rows only.

    With deletion vectors only the predicate's columns are read to find them, the
    rest for the matched rows alone; copy-on-write reads the files whole.
    """
    found = [m for m in find_matches(snap, files, where, [] if dv else None) if len(m.at)]
    pres = matched_rows(snap, found)
    if not pres:
        return []
    post = enforce(snap.state, _assigned(pa.concat_tables(pres), assignments), provided=list(assignments),
                   new_rows=False)
    ends = np.cumsum([t.num_rows for t in pres]).tolist()
    return [_Change(m.file, m.at, pre, post.slice(end - pre.num_rows, pre.num_rows), m.rows)
            for m, pre, end in zip(found, pres, ends, strict=True)]


def update_where(snapshot: Snapshot, where: pc.Expression | str, assignments: Mapping[str, Assignment], *,
                 retries: int = 0) -> int:
    """Set new values on the rows matching `where`; return how many; see `Table.update`."""
    return retrying(snapshot, retries, lambda snap: _update_once(snap, where, assignments))


def _update_once(snap: Snapshot, where_arg: Any, assignments: Mapping[str, Assignment]) -> int:
    check_writable(snap.protocol, snap.metadata)
    where = _check(snap, where_arg, assignments)
    candidates = snap.files_matching(where)
    dv = uses_deletion_vectors(snap)
    changes = _changes(snap, where, assignments, candidates, dv)
    count = sum(c.pre.num_rows for c in changes)
    if count == 0:
        return 0
    pre, post = (pa.concat_tables([getattr(c, side) for c in changes]) for side in ("pre", "post"))
    cdc = change_rows(snap.schema, [(pre, "update_preimage"), (post, "update_postimage")]) \
        if writes_change_data(snap) else None
    # With deletion vectors the new values of all files go into one new file (per partition).
    written = Written.of(snap, [post] if dv else [c.after for c in changes], cdc,
                         [(c.file, c.at) for c in changes] if dv else ())
    clock = EventClock.of(snap)
    info: dict[str, Any] = {}
    if clock is not None:
        both = pa.concat_tables([pre, post])
        mask = clock.late(both)
        info = clock.commit_info(int(mask.sum()), clock.windows(both, mask))
    tx = Transaction(snap, "UPDATE", {"predicate": str(where)})
    tx.remove(*(c.file for c in changes)).add(*written.adds, *written.marked, *written.cdcs)
    tx.read([f.add.path for f in candidates], lambda add: may_hold(snap, add, where))
    tx.info({"numUpdatedRows": count, "numCopiedRows": 0 if dv else sum(c.rows.num_rows for c in changes) - count,
             "numRemovedFiles": len(changes), "numAddedFiles": len(written.adds),
             "numAddedChangeFiles": len(written.cdcs),
             **({"numDeletionVectorsAdded": len(written.marked)} if dv else {})}, **info)
    written.commit(tx)
    return int(count)


__all__ = ["Assignment", "update_where"]
