"""SQL-derived assets: a row-wise query kept current from the source's diffs.

The query (projection, filter, computed columns) is checked with sqlglot and run
by polars SQL over Arrow. A row-wise query is linear: applied to the rows a
source diff adds and removes, it gives the diff of its result. With a source
key the query must select, the derived table is keyed the same way and each
refresh replaces just the changed keys (`ops.replace.replace_keys`); without
one, any removal recomputes the table. A diff that only adds rows is appended
either way (with a key, the added keys are new to the source). Every
refresh commits the source version it reflects as a Delta `txn`: exactly once.

Why polars SQL: polars is already lakeflow's row engine (diffs, merges, views,
constraints), runs over Arrow without copies, and needs no new dependency.
sqlglot parses the query so that what is not row-wise is refused by name
before anything runs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import sqlglot
from sqlglot import expressions as exp

from lakeflow.actions import Add
from lakeflow.config import DERIVED_APP_PREFIX
from lakeflow.errors import InvalidArgumentError
from lakeflow.keys import any_file, frame_of
from lakeflow.ops.replace import replace_keys
from lakeflow.ops.rewrite import replacement_changes
from lakeflow.snapshot import Snapshot
from lakeflow.table import Table
from lakeflow.transaction import Transaction, retrying
from lakeflow.write import conform, write_data_files

# Functions whose value is not a function of the row: the query would not commute with diffs.
_VOLATILE = {"random", "rand", "now", "current_timestamp", "current_date", "current_time", "uuid",
             "gen_random_uuid", "localtimestamp"}


class SqlAssetError(InvalidArgumentError):
    """A derived asset's SQL is not a row-wise query over its source."""


def check_sql(sql: str, source: str) -> None:
    """Refuse what a row-wise query over `source` cannot contain, naming it.

    Raises:
        SqlAssetError: not a single SELECT over `source`, or it aggregates, joins,
            orders, limits, deduplicates, uses windows, subqueries or volatile functions.
    """
    try:
        tree = sqlglot.parse(sql)
    except sqlglot.errors.ParseError as e:
        raise SqlAssetError(f"cannot parse the SQL: {e}") from e
    if len(tree) != 1 or not isinstance(tree[0], exp.Select):
        raise SqlAssetError("the SQL must be one SELECT statement")
    select = tree[0]
    refused = [
        (exp.Join, "a join"), (exp.Window, "a window function"), (exp.AggFunc, "an aggregate"),
        (exp.Group, "GROUP BY"), (exp.Having, "HAVING"), (exp.Distinct, "DISTINCT"), (exp.Order, "ORDER BY"),
        (exp.Limit, "LIMIT"), (exp.Offset, "OFFSET"), (exp.Subquery, "a subquery"), (exp.Union, "a set operation"),
    ]
    for kind, what in refused:
        node = select.find(kind)
        if node is not None:
            raise SqlAssetError(f"{what} ({node.sql()[:60]}) is not row-wise: derived SQL assets take "
                                "projections, filters and computed columns (use a view: for aggregates)")
    if len(list(select.find_all(exp.Select))) > 1:
        raise SqlAssetError("a subquery is not row-wise")
    tables = [t.name for t in select.find_all(exp.Table)]
    if tables != [source]:
        raise SqlAssetError(f"the SQL must read exactly one table, its source {source!r}; it reads {tables}")
    for func in select.find_all(exp.Func):
        name = (func.sql_name() if not isinstance(func, exp.Anonymous) else str(func.this)).lower()
        if name in _VOLATILE:
            raise SqlAssetError(f"{func.sql()} is volatile (changes between runs): a derived asset must be a "
                                "function of its rows")


@functools.lru_cache(maxsize=256)  # parsing costs about a millisecond; refreshes ask each time
def _passes_through(sql: str, column: str) -> bool:
    """Whether the query selects `column` as it is, under its own name (an alias does not count)."""
    for e in sqlglot.parse_one(sql).expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(e, exp.Star) or (isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star)):
            return True
        if e.alias_or_name == column and isinstance(inner, exp.Column) and inner.name == column:
            return True
    return False


def apply_sql(sql: str, source: str, rows: pa.Table) -> pa.Table:
    """The query over `rows` (as table `source`), by polars SQL.

    Raises:
        SqlAssetError: polars cannot run the query (unknown column, bad types).
    """
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    try:
        out = pl.SQLContext({source: frame}).execute(sql, eager=True)
    except (pl.exceptions.PolarsError, ValueError) as e:
        raise SqlAssetError(f"the SQL fails on {source}: {e}") from e
    return out.to_arrow()


@dataclass(frozen=True)
class SqlAsset:
    """A derived asset defined by SQL over its source."""

    name: str
    source: str
    sql: str

    def output_schema(self, source_schema: pa.Schema) -> pa.Schema:
        """The schema the query produces over the source's schema."""
        return apply_sql(self.sql, self.source, source_schema.empty_table()).schema

    def key(self, source: Table) -> tuple[str, ...]:
        """The derived table's key: the source key, when the query passes it through.

        Each key column must be selected unchanged under its own name (`SELECT id, ...`
        or `SELECT *`); else the table has no key.
        """
        key = source.key
        return key if key and all(_passes_through(self.sql, k) for k in key) else ()

    @property
    def app_id(self) -> str:
        """The application id of its refresh commits."""
        return f"{DERIVED_APP_PREFIX}{self.name}"

    def reflected(self, snap: Snapshot) -> int:
        """The source version the derived table reflects (-1: none yet)."""
        txn = snap.state.txns.get(self.app_id)
        return txn.version if txn is not None else -1

    def refresh(self, source: Table, target: Table, retries: int = 5) -> int:
        """Fold the source changes since the reflected version in; return the source version now reflected.

        Exactly once: the commit records the source version as a `txn` it also read, so
        a concurrent refresh of the same asset conflicts, and the refresh starts over.
        """
        return retrying(target.snapshot(), retries, lambda snap: self._refresh_once(source, snap))

    def _refresh_once(self, source: Table, snap: Snapshot) -> int:
        latest = source.refresh()
        done = self.reflected(snap)
        if done >= latest:
            return done
        # Unpaired: a refresh needs the rows added and removed, not which of them are updates.
        diff = source.diff(done, latest, key=())
        if not diff.removed.num_rows:
            # Rows only added: with a source key, none of theirs was in the source (its old row
            # would be removed), so none is in the derived table either. A plain append.
            rows = conform(apply_sql(self.sql, self.source, diff.added), snap.schema).table
            tx = Transaction(snap, "DERIVE", {"sourceVersion": latest})
            tx.add(*_files(snap, rows)).read(txns=[self.app_id]).set_txn(self.app_id, latest).commit()
        elif key := self.key(source):
            added = apply_sql(self.sql, self.source, diff.added)
            replace_keys(snap, added, key, diff.removed.select(list(key)), app_id=self.app_id,
                         txn_version=latest, operation="DERIVE")
        else:
            self._rebuild_at(source, snap, latest)
        return latest

    def recompute(self, source: Table, version: int) -> pa.Table:
        """The derived rows from scratch at a source version (Kappa: replay the log's state)."""
        return apply_sql(self.sql, self.source, source.snapshot(version=version).to_arrow())

    def rebuild(self, source: Table, target: Table, version: int | None = None) -> int:
        """Replace the derived table with its recomputation at `version` (default latest); one commit."""
        version = source.refresh() if version is None else version
        return self._rebuild_at(source, target.snapshot(), version)

    def _rebuild_at(self, source: Table, snap: Snapshot, version: int) -> int:
        rows = conform(self.recompute(source, version), snap.schema).table
        tx = Transaction(snap, "DERIVE REBUILD", {"sourceVersion": version})
        # It replaces every row: a concurrent refresh's files would survive it.
        tx.remove(*snap.files).read(predicate=any_file, txns=[self.app_id]).add(*_files(snap, rows))
        tx.add(*replacement_changes(snap, snap.files, rows))
        tx.set_txn(self.app_id, version).commit()
        return version


def _files(snap: Snapshot, rows: pa.Table) -> list[Add]:
    return (write_data_files(snap.storage, rows, snap.partition_columns, mapping=snap.column_mapping)
            if rows.num_rows else [])


def differences(a: pa.Table, b: pa.Table, key: Sequence[str] = ()) -> int:
    """Rows in one table and not the other.

    With `key`, rows are paired by it and floating-point values compare within a
    relative 1e-9 (a sum folded incrementally rounds differently from one computed
    at once); without, the tables compare as exact multisets.
    """
    fa, fb = (frame_of(t.select(b.column_names)) for t in (a, b))
    if not key:
        ca, cb = fa.group_by(fa.columns).len(), fb.group_by(fb.columns).len()
        joined = ca.join(cb, on=fa.columns, how="full", coalesce=True, nulls_equal=True)
        return int(joined.filter(pl.col("len").fill_null(0) != pl.col("len_right").fill_null(0)).height)
    joined = fa.with_columns(pl.lit(True).alias("_a")).join(
        fb.with_columns(pl.lit(True).alias("_b")), on=list(key), how="full", coalesce=True, nulls_equal=True)
    differs = pl.col("_a").is_null() | pl.col("_b").is_null()
    for c in (c for c in fa.columns if c not in key):
        x, y = pl.col(c), pl.col(f"{c}_right")
        same = (x == y) | (x.is_null() & y.is_null())
        if fa.schema[c].is_float():
            same = same | ((x - y).abs() <= 1e-9 * pl.max_horizontal(x.abs(), y.abs()))
        differs = differs | ~same.fill_null(False)
    return int(joined.filter(differs).height)


__all__ = ["SqlAsset", "SqlAssetError", "apply_sql", "check_sql", "differences"]
