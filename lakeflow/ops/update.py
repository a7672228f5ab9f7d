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

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lakeflow.constraints import enforce
from lakeflow.errors import InvalidArgumentError, SchemaMismatchError
from lakeflow.late import EventClock
from lakeflow.log import check_writable
from lakeflow.ops.delete import may_hold
from lakeflow.ops.rewrite import IndexArray, Written, change_rows, positions, uses_deletion_vectors, writes_change_data
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


def _updated(rows: pa.Table, mask: pa.ChunkedArray, assignments: Mapping[str, Assignment]) -> pa.Table:
    out = rows
    for column, value in assignments.items():
        i = rows.schema.get_field_index(column)
        new = _values(rows, column, value, rows.schema.field(i))
        out = out.set_column(i, rows.schema.field(i), pc.if_else(mask, new, rows.column(i)))
    return out


@dataclass(frozen=True)
class _Change:
    """One file's update: the file, its rows after, the rows before and after that changed, their positions."""

    file: DataFile
    after: pa.Table
    pre: pa.Table
    post: pa.Table
    at: IndexArray


def _changes(snap: Snapshot, where: pc.Expression, assignments: Mapping[str, Assignment],
             files: list[DataFile]) -> list[_Change]:
    out = []
    for f, rows in zip(files, snap.read_files(files), strict=True):
        mask = pc.fill_null(ds.dataset(rows).to_table(columns={"m": where}).column("m"), False)
        if not pc.any(mask).as_py():
            continue
        after = enforce(snap.state, _updated(rows, mask, assignments), provided=list(assignments), new_rows=False)
        out.append(_Change(f, after, rows.filter(mask), after.filter(mask),
                           positions(mask.to_numpy(zero_copy_only=False))))
    return out


def update_where(snapshot: Snapshot, where: pc.Expression | str, assignments: Mapping[str, Assignment], *,
                 retries: int = 0) -> int:
    """Set new values on the rows matching `where`; return how many; see `Table.update`."""
    return retrying(snapshot, retries, lambda snap: _update_once(snap, where, assignments))


def _update_once(snap: Snapshot, where_arg: Any, assignments: Mapping[str, Assignment]) -> int:
    check_writable(snap.protocol, snap.metadata)
    where = _check(snap, where_arg, assignments)
    candidates = snap.files_matching(where)
    changes = _changes(snap, where, assignments, candidates)
    count = sum(c.pre.num_rows for c in changes)
    if count == 0:
        return 0
    pre, post = (pa.concat_tables([getattr(c, side) for c in changes]) for side in ("pre", "post"))
    cdc = change_rows(snap.schema, [(pre, "update_preimage"), (post, "update_postimage")]) \
        if writes_change_data(snap) else None
    dv = uses_deletion_vectors(snap)
    written = Written.of(snap, [c.post if dv else c.after for c in changes], cdc,
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
    tx.info({"numUpdatedRows": count, "numCopiedRows": 0 if dv else sum(c.after.num_rows for c in changes) - count,
             "numRemovedFiles": len(changes), "numAddedFiles": len(written.adds),
             "numAddedChangeFiles": len(written.cdcs),
             **({"numDeletionVectorsAdded": len(written.marked)} if dv else {})}, **info)
    written.commit(tx)
    return int(count)


__all__ = ["Assignment", "update_where"]
