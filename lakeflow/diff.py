"""Changes between two versions of a table, planned from the log and consolidated as a Z-set.

Every commit is a Z-set of rows: the rows of each file it adds weigh +1 and
those of each file it removes -1; when the writer recorded change data files
(`cdc` actions, written by MERGE/UPDATE/DELETE with the change data feed on),
those files are read instead and each row weighs by its `_change_type`. A diff
over (from, to] is the sum of its commits with identical rows summed, so a row
rewritten unchanged (compaction, a no-op merge, an overwrite with the same data)
cancels out, and duplicate rows keep their multiplicity.

The plan comes from the log alone. Walking the commits from the file set at
`from`, every data file gets a net weight; a file added and removed again in the
range nets to zero and is never opened. Only files with a non-zero net weight
and the change data files are read, so the cost follows the size of the change,
not of the table. Actions flagged `dataChange=false` only rearrange rows and
weigh nothing. Both snapshots are read whole only when the range really replaced
every file (an overwrite): then the log cannot tell which rows survived.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Action, Add, Cdc, CommitInfo, Metadata, Protocol, Remove
from lakeflow.errors import (
    CorruptLogError,
    DuplicateKeyError,
    InvalidArgumentError,
    SchemaMismatchError,
    UnsupportedFeatureError,
    VersionNotFoundError,
)
from lakeflow.log import TableState, check_data_path, check_readable, replay
from lakeflow.schema import delta_to_arrow
from lakeflow.snapshot import partition_guarantee, scan_files, typed_partition_values
from lakeflow.storage import Storage

if TYPE_CHECKING:
    from lakeflow.table import Table

CHANGE_TYPE = "_change_type"
COMMIT_VERSION = "_commit_version"
COMMIT_TIMESTAMP = "_commit_timestamp"
CHANGED_COLUMNS = "_changed_columns"
_WEIGHT = "__lakeflow_weight"
_RESERVED = (CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP, _WEIGHT)
_CHANGE_WEIGHTS = {"insert": 1, "update_postimage": 1, "delete": -1, "update_preimage": -1}
_CHANGE_ORDER = {"delete": 0, "update_preimage": 1, "update_postimage": 2, "insert": 3}
_META_FIELDS = [pa.field(CHANGE_TYPE, pa.string()), pa.field(COMMIT_VERSION, pa.int64()),
                pa.field(COMMIT_TIMESTAMP, pa.timestamp("ms", tz="UTC"))]

VersionRef = int | dt.datetime | str
"""A version number, or an instant (aware datetime or ISO-8601 string) as in `as_of`."""


@dataclass(frozen=True)
class DiffSummary:
    """How big a diff is and what computing it read.

    Attributes:
        inserted: with a key, keys only in `to_version`; without, rows added.
        deleted: with a key, keys only in `from_version`; without, rows removed.
        updated: keys present at both ends whose row changed (0 without a key).
        commits: commits in the range.
        files_read: data and change data files opened.
        bytes_read: their total size in bytes, as recorded in the log.
        files_skipped: data files added and removed within the range, which
            cancelled without being opened.
    """

    inserted: int
    deleted: int
    updated: int
    commits: int
    files_read: int
    bytes_read: int
    files_skipped: int


@dataclass(frozen=True)
class Diff:
    """The consolidated changes from one version to another. Immutable.

    `Snapshot(from_version)` plus `added` minus `removed` equals
    `Snapshot(to_version)` as multisets of rows.

    Attributes:
        from_version: the version the changes start from.
        to_version: the version they lead to (it may be older: a reverse diff).
        key: the columns rows were paired by (empty: not paired).
        schema: the compared columns: the union of the schemas in the range.
        added: rows of `to_version` that `from_version` lacks (one per copy).
        removed: rows of `from_version` that `to_version` lacks (one per copy).
        summary: counts and what was read.
    """

    from_version: int
    to_version: int
    key: tuple[str, ...]
    schema: pa.Schema
    added: pa.Table
    removed: pa.Table
    summary: DiffSummary
    _changes: pa.Table = field(repr=False)
    _updated: pa.Table | None = field(repr=False)

    def _require_key(self) -> pa.Table:
        if self._updated is None:
            raise InvalidArgumentError(
                "inserted, deleted and updated pair rows by key: pass key=[...] to "
                "Table.diff or declare one with Table.create(key=...); added and "
                "removed hold the unpaired changes"
            )
        return self._updated

    def _keyed(self, change_type: str) -> pa.Table:
        self._require_key()
        rows = self._changes.filter(pc.field(CHANGE_TYPE) == change_type)
        return rows.drop_columns([f.name for f in _META_FIELDS])

    @property
    def inserted(self) -> pa.Table:
        """Rows whose key exists only in `to_version` (needs a key)."""
        return self._keyed("insert")

    @property
    def deleted(self) -> pa.Table:
        """Rows whose key exists only in `from_version` (needs a key)."""
        return self._keyed("delete")

    @property
    def updated(self) -> pa.Table:
        """Keys whose row changed, old and new values side by side (needs a key).

        Columns: the key, then `<column>_old` and `<column>_new` for every other
        compared column, then `_changed_columns` (names of the columns that differ).
        """
        return self._require_key()

    def to_arrow(self) -> pa.Table:
        """All changes in one table, in the shape of the Delta change data feed.

        Columns: the compared columns, `_change_type` (`insert`, `delete`, and with
        a key `update_preimage` / `update_postimage`), `_commit_version` and
        `_commit_timestamp` of the newest commit in the range that wrote a copy of
        the row (among the files the plan read).
        """
        return self._changes

    def to_polars(self) -> pl.DataFrame:
        """`to_arrow()` as a polars DataFrame."""
        return pl.DataFrame(self._changes)


@dataclass(frozen=True)
class CommitChanges:
    """The row changes of one commit, as the Delta change data feed reports them.

    Attributes:
        version: the commit's version.
        timestamp: its commit time, if the log records one.
        operation: the commitInfo operation (WRITE, MERGE, DELETE, ...), if any.
        rows: the changed rows with `_change_type`, `_commit_version` and
            `_commit_timestamp`; columns are the union schema of the whole range,
            so the tables of one iteration concatenate.
        files_read: data or change data files opened for this commit.
        bytes_read: their total size in bytes, as recorded in the log.
    """

    version: int
    timestamp: dt.datetime | None
    operation: str | None
    rows: pa.Table
    files_read: int
    bytes_read: int


# ---- planning (log only) -----------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    """A data or change data file to read, with the commit that wrote or removed it."""

    path: str
    size: int
    partition_values: Mapping[str, str | None]
    version: int


@dataclass(frozen=True)
class _CommitPlan:
    version: int
    operation: str | None
    added: tuple[_File, ...]
    removed: tuple[_File, ...]
    cdc: tuple[_File, ...]


@dataclass(frozen=True)
class _Plan:
    schema: pa.Schema
    commits: tuple[_CommitPlan, ...]


def _resolve(table: Table, value: VersionRef | None, what: str) -> int:
    if value is None:
        return table.refresh()
    if isinstance(value, (dt.datetime, str)):
        return table.version_at(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"{what} must be a version number, an aware datetime or an ISO-8601 string, "
            f"got {value!r}"
        )
    if value > table.version:
        table.refresh()
    if value < -1 or value > table.version:
        raise VersionNotFoundError(
            f"{what}={value} does not exist; {table.uri} has versions 0..{table.version} "
            "(and -1, the empty table before version 0)"
        )
    return value


def _commit(table: Table, version: int) -> list[Action]:
    try:
        return table._read_commit_cached(version)
    except FileNotFoundError as e:
        raise VersionNotFoundError(
            f"the log entry of version {version} is gone (cleaned up), so changes across it "
            "cannot be computed; diff a more recent range"
        ) from e


def _start_state(table: Table, version: int) -> TableState:
    if version >= 0:
        return table.snapshot(version=version).state
    first = replay(None, [(0, _commit(table, 0))])
    return TableState(-1, first.protocol, first.metadata, {})


def _refuse_deletion_vector(action: Add | Remove) -> None:
    if action.deletion_vector:
        raise UnsupportedFeatureError(
            f"file {action.path} has a deletion vector (deletionVectors), which lakeflow "
            "does not support yet"
        )


def _file(action: Add | Cdc, partition_columns: Sequence[str], version: int) -> _File:
    path = check_data_path(action.path, f"commit {version}")
    values = {c: action.partition_values.get(c) for c in partition_columns}
    return _File(path, action.size, values, version)


def _plan(table: Table, lo: int, hi: int) -> _Plan:
    """Walk the commits in (lo, hi] from the file set at `lo`: what each one changed."""
    start = _start_state(table, lo)
    present = dict(start.files)
    protocol, metadata = start.protocol, start.metadata
    schemas = [metadata.schema_string]
    commits = []
    for v in range(lo + 1, hi + 1):
        actions = _commit(table, v)
        for a in actions:
            if isinstance(a, Metadata):
                metadata = a
                schemas.append(a.schema_string)
            elif isinstance(a, Protocol):
                protocol = a
        check_readable(protocol, metadata)
        columns = metadata.partition_columns
        cdc = tuple(_file(a, columns, v) for a in actions if isinstance(a, Cdc))
        added, removed = [], []
        for a in actions:
            if isinstance(a, Add):
                _refuse_deletion_vector(a)
                fresh = a.path not in present  # re-adding a present path changes no rows
                present[a.path] = a
                if fresh and a.data_change:
                    added.append(_file(a, columns, v))
            elif isinstance(a, Remove):
                _refuse_deletion_vector(a)
                gone = present.pop(a.path, None)
                if gone is not None and a.data_change:
                    _refuse_deletion_vector(gone)
                    removed.append(_file(gone, columns, v))
        operation = next((a.values.get("operation") for a in actions
                          if isinstance(a, CommitInfo)), None)
        # With change data files, they alone describe the commit (Delta CDF reader rule).
        commits.append(_CommitPlan(v, operation, () if cdc else tuple(added),
                                   () if cdc else tuple(removed), cdc))
    return _Plan(_union_schema(schemas), tuple(commits))


def _union_schema(schema_strings: Sequence[str]) -> pa.Schema:
    """Newest column order first; columns dropped or added in the range come back null."""
    schemas = [delta_to_arrow(s) for s in dict.fromkeys(reversed(schema_strings))]
    try:
        union = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SchemaMismatchError(
            f"a column changed type incompatibly within the range, so rows cannot be "
            f"compared ({e}); diff the ranges before and after the schema change separately"
        ) from e
    reserved = [c for c in union.names if c in _RESERVED]
    if reserved:
        raise SchemaMismatchError(
            f"the table has column(s) {reserved}, names the change data feed reserves for "
            "its own columns; rename them to diff this table"
        )
    return union


def _columns(schema: pa.Schema, columns: Sequence[str] | str | None, key: Sequence[str]
             ) -> list[str]:
    wanted = _names(columns) if columns is not None else schema.names
    for what, names in (("columns", wanted), ("key", key)):
        unknown = [c for c in names if c not in schema.names]
        if unknown:
            raise SchemaMismatchError(
                f"{what} names unknown column(s) {unknown}; the table has {schema.names}"
            )
    if not wanted:
        raise InvalidArgumentError("columns is empty; pass at least one column to compare")
    return [c for c in schema.names if c in wanted or c in key]


def _names(value: Sequence[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


# ---- reading -----------------------------------------------------------------------------


def _read(storage: Storage, schema: pa.Schema, files: Sequence[tuple[_File, int]],
          columns: Sequence[str], change_files: bool) -> pl.DataFrame:
    """Rows of `files` with `_change_type`, their weight and `_commit_version`.

    Data files weigh what the pair says (their change type follows); change data
    files weigh by the `_change_type` they store.
    """
    virtual = pa.field(CHANGE_TYPE, pa.string()) if change_files else pa.field(_WEIGHT, pa.int64())
    read_schema = pa.schema([*schema, virtual, pa.field(COMMIT_VERSION, pa.int64())])
    wanted = [*columns, virtual.name, COMMIT_VERSION]
    if not files:
        return pl.DataFrame(read_schema.empty_table().select(wanted)).with_columns(
            pl.lit(None, pl.String).alias(CHANGE_TYPE), pl.lit(None, pl.Int64).alias(_WEIGHT))
    scan = []
    for f, weight in files:
        values = typed_partition_values(f.partition_values, schema, list(f.partition_values))
        guarantee = partition_guarantee(schema, values) & (
            pc.field(COMMIT_VERSION) == pa.scalar(f.version, pa.int64()))
        if not change_files:
            guarantee = guarantee & (pc.field(_WEIGHT) == pa.scalar(weight, pa.int64()))
        scan.append((f.path, guarantee))
    frame = pl.DataFrame(scan_files(storage, read_schema, scan).to_table(columns=wanted))
    if not change_files:
        return frame.with_columns(
            pl.when(pl.col(_WEIGHT) > 0).then(pl.lit("insert")).otherwise(pl.lit("delete"))
            .alias(CHANGE_TYPE))
    frame = frame.with_columns(pl.col(CHANGE_TYPE).replace_strict(
        _CHANGE_WEIGHTS, default=None, return_dtype=pl.Int64).alias(_WEIGHT))
    bad = frame.filter(pl.col(_WEIGHT).is_null())
    if bad.height:
        raise CorruptLogError(
            f"a change data file holds _change_type {bad.item(0, CHANGE_TYPE)!r}; expected "
            f"one of {sorted(_CHANGE_WEIGHTS)}"
        )
    return frame


def _read_changes(storage: Storage, schema: pa.Schema, data: Sequence[tuple[_File, int]],
                  cdc: Sequence[_File], columns: Sequence[str]) -> pl.DataFrame:
    order = [*columns, CHANGE_TYPE, _WEIGHT, COMMIT_VERSION]
    return pl.concat([
        _read(storage, schema, data, columns, change_files=False).select(order),
        _read(storage, schema, [(f, 0) for f in cdc], columns, change_files=True).select(order),
    ])


def _finish(table: Table, frame: pl.DataFrame, schema: pa.Schema, columns: Sequence[str]
            ) -> pa.Table:
    """Add `_commit_timestamp` and return Arrow with the table's types."""
    versions = frame.get_column(COMMIT_VERSION).unique().to_list()
    stamps = {v: table._commit_ts(v) for v in versions}
    frame = frame.with_columns(pl.col(COMMIT_VERSION).replace_strict(
        stamps, default=None, return_dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))
        .alias(COMMIT_TIMESTAMP))
    target = pa.schema([*(schema.field(c) for c in columns), *_META_FIELDS])
    return frame.select(target.names).to_arrow().cast(target)


def _size(files: Sequence[_File]) -> int:
    return sum(f.size for f in files)


# ---- per-commit changes ------------------------------------------------------------------


def iter_changes(table: Table, from_version: VersionRef, to_version: VersionRef | None = None
                 ) -> Iterator[CommitChanges]:
    """Implements `Table.changes`: validate and plan now, read lazily per commit."""
    lo = _resolve(table, from_version, "from_version")
    hi = _resolve(table, to_version, "to_version")
    if lo > hi:
        raise InvalidArgumentError(
            f"changes() walks forward but from_version {lo} is after to_version {hi}; "
            "swap them, or use Table.diff for a reverse diff"
        )
    plan = _plan(table, lo, hi)
    return _commit_changes(table, plan)


def _commit_changes(table: Table, plan: _Plan) -> Iterator[CommitChanges]:
    columns = plan.schema.names
    for c in plan.commits:
        data = [(f, 1) for f in c.added] + [(f, -1) for f in c.removed]
        rows = _read_changes(table.storage, plan.schema, data, c.cdc, columns)
        ts = table._commit_ts(c.version)
        yield CommitChanges(
            version=c.version,
            timestamp=None if ts is None else dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc),
            operation=c.operation,
            rows=_finish(table, rows, plan.schema, columns),
            files_read=len(data) + len(c.cdc),
            bytes_read=_size([f for f, _ in data]) + _size(c.cdc),
        )


# ---- consolidated diff -------------------------------------------------------------------


def compute_diff(table: Table, from_version: VersionRef, to_version: VersionRef | None = None,
                 key: Sequence[str] | str | None = None,
                 columns: Sequence[str] | str | None = None) -> Diff:
    """Implements `Table.diff`."""
    start = _resolve(table, from_version, "from_version")
    end = _resolve(table, to_version, "to_version")
    keys = table.key if key is None else _names(key)
    lo, hi = min(start, end), max(start, end)
    plan = _plan(table, lo, hi)
    compared = _columns(plan.schema, columns, keys)
    values = [c for c in compared if c not in keys]
    if keys:
        _check_updated_names(keys, values)

    # Net weight per data file: what is added and removed again never gets read.
    net: dict[str, tuple[_File, int]] = {}
    for c in plan.commits:
        for f, w in [(f, 1) for f in c.added] + [(f, -1) for f in c.removed]:
            weight = net[f.path][1] + w if f.path in net else w
            net[f.path] = (f, weight)
    data = [(f, w) for f, w in net.values() if w]
    cdc = [f for c in plan.commits for f in c.cdc]
    rows = _read_changes(table.storage, plan.schema, data, cdc, compared)
    if start > end:
        rows = rows.with_columns(-pl.col(_WEIGHT))
    added, removed = _consolidate(rows, compared)

    updated = None
    if keys:
        inserted, deleted, pre, post = _pair(added, removed, keys, start, end)
        parts = [(deleted, "delete"), (pre, "update_preimage"),
                 (post, "update_postimage"), (inserted, "insert")]
        updated = _side_by_side(pre, post, keys, values)
    else:
        parts = [(removed, "delete"), (added, "insert")]
    changes = pl.concat([p.with_columns(pl.lit(t).alias(CHANGE_TYPE)) for p, t in parts])
    if keys:  # an update's pre- and postimage next to each other
        changes = changes.sort([*keys, pl.col(CHANGE_TYPE).replace_strict(_CHANGE_ORDER)],
                               nulls_last=True)
    table_out = _finish(table, changes, plan.schema, compared)
    data_schema = pa.schema([plan.schema.field(c) for c in compared])
    counts = {t: p.height for p, t in parts}
    return Diff(
        from_version=start,
        to_version=end,
        key=keys,
        schema=data_schema,
        added=added.drop(COMMIT_VERSION).to_arrow().cast(data_schema),
        removed=removed.drop(COMMIT_VERSION).to_arrow().cast(data_schema),
        summary=DiffSummary(
            inserted=counts["insert"],
            deleted=counts["delete"],
            updated=counts.get("update_postimage", 0),
            commits=hi - lo,
            files_read=len(data) + len(cdc),
            bytes_read=_size([f for f, _ in data]) + _size(cdc),
            files_skipped=len(net) - len(data),
        ),
        _changes=table_out,
        _updated=None if updated is None else _typed_updated(updated, plan.schema, keys, values),
    )


def _consolidate(rows: pl.DataFrame, columns: Sequence[str]
                 ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sum the weights of identical rows: (added, removed), one row per copy.

    Each row keeps the newest commit version among its copies.
    """
    net = rows.group_by(columns).agg(pl.col(_WEIGHT).sum(), pl.col(COMMIT_VERSION).max())
    return (_expand(net.filter(pl.col(_WEIGHT) > 0)),
            _expand(net.filter(pl.col(_WEIGHT) < 0)))


def _expand(rows: pl.DataFrame) -> pl.DataFrame:
    copies = pl.col(_WEIGHT).abs()
    if rows.height == 0 or rows.select(copies.max()).item() == 1:
        return rows.drop(_WEIGHT)
    others = [c for c in rows.columns if c != _WEIGHT]
    return rows.select(pl.col(others).repeat_by(copies)).explode(others)


def _pair(added: pl.DataFrame, removed: pl.DataFrame, keys: Sequence[str], start: int,
          end: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split by key: (inserted, deleted, preimages, postimages)."""
    _check_unique(removed, keys, start)
    _check_unique(added, keys, end)
    on = list(keys)

    def match(left: pl.DataFrame, right: pl.DataFrame, how: Literal["anti", "semi"]
              ) -> pl.DataFrame:
        return left.join(right.select(on), on=on, how=how, nulls_equal=True)

    return (match(added, removed, "anti"), match(removed, added, "anti"),
            match(removed, added, "semi"), match(added, removed, "semi"))


def _check_unique(rows: pl.DataFrame, keys: Sequence[str], version: int) -> None:
    dupes = rows.group_by(keys).agg(pl.len().alias(_WEIGHT)).filter(pl.col(_WEIGHT) > 1)
    if dupes.height:
        example = {k: dupes.item(0, k) for k in keys}
        raise DuplicateKeyError(
            f"key {example} appears {dupes.item(0, _WEIGHT)} times among the changed rows of "
            f"version {version}, so rows cannot be paired by key {list(keys)}; pass a key "
            "that identifies rows, or key=() for an unpaired diff"
        )


def _updated_names(keys: Sequence[str], values: Sequence[str]) -> list[str]:
    return [*keys, *(f"{c}_{side}" for c in values for side in ("old", "new")),
            CHANGED_COLUMNS]


def _check_updated_names(keys: Sequence[str], values: Sequence[str]) -> None:
    names = _updated_names(keys, values)
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise SchemaMismatchError(
            f"the updated table would have two columns named {clash} (a key column is named "
            "like another column plus _old/_new); pass columns= to leave one out"
        )


def _side_by_side(pre: pl.DataFrame, post: pl.DataFrame, keys: Sequence[str],
                  values: Sequence[str]) -> pl.DataFrame:
    old = pre.select(*keys, *(pl.col(c).alias(f"{c}_old") for c in values))
    new = post.select(*keys, *(pl.col(c).alias(f"{c}_new") for c in values))
    joined = old.join(new, on=list(keys), how="inner", nulls_equal=True)
    differs = [pl.when(pl.col(f"{c}_old").ne_missing(pl.col(f"{c}_new"))).then(pl.lit(c))
               for c in values]
    changed = (pl.concat_list(differs).list.drop_nulls() if differs
               else pl.lit([], pl.List(pl.String)))
    return joined.with_columns(changed.alias(CHANGED_COLUMNS)).select(
        _updated_names(keys, values)).sort(list(keys), nulls_last=True)


def _typed_updated(updated: pl.DataFrame, schema: pa.Schema, keys: Sequence[str],
                   values: Sequence[str]) -> pa.Table:
    fields = [schema.field(k) for k in keys]
    for c in values:
        f = schema.field(c)
        fields += [pa.field(f"{c}_old", f.type), pa.field(f"{c}_new", f.type)]
    fields.append(pa.field(CHANGED_COLUMNS, pa.list_(pa.string())))
    return updated.to_arrow().cast(pa.schema(fields))


__all__ = ["CHANGED_COLUMNS", "CHANGE_TYPE", "COMMIT_TIMESTAMP", "COMMIT_VERSION",
           "CommitChanges", "Diff", "DiffSummary", "VersionRef", "compute_diff",
           "iter_changes"]
