"""Changes between two versions of a table, planned from the log and consolidated as a Z-set.

Every commit is a Z-set of rows: the rows of each file it adds weigh +1 and
those of each file it removes -1; when the writer recorded change data files
(`cdc` actions, written by MERGE/UPDATE/DELETE with the change data feed on),
those files are read instead and each row weighs by its `_change_type`. A diff
over (from, to] is the sum of its commits with identical rows summed, so a row
rewritten unchanged (compaction, a no-op merge, an overwrite with the same data)
cancels out, and duplicate rows keep their multiplicity.

The plan comes from the log alone. Every data file gets a net weight over the
range; a file added and removed again (or removed and re-added under the same
path) nets to zero and is never opened. Only files with a non-zero net weight
and the change data files are read, so the cost follows the size of the change,
not of the table. Like every change data feed reader, the plan trusts the
`dataChange` flag: actions without it (compaction) only rearrange rows and weigh
nothing. But when a file the plan would read was itself rewritten without
`dataChange` in the range (its rows moved into a compacted file, and vacuum may
have deleted it), the weights come from the files of the two ends instead: +1
for a logical file only at `to`, -1 only at `from`; every readable version keeps
those. Both ends are read whole only when the range really replaced every file
(an overwrite): then the log cannot tell which rows survived.

With deletion vectors a logical file is a data file minus the rows its vector
deletes, and the net weight is kept per (path, vector). A row of the file then
weighs the sum of the weights of the logical files that keep it: a commit that
replaces (path, dv1) by (path, dv2) weighs -1 exactly on the rows dv2 deletes and
dv1 did not (and +1 on the rows dv1 deleted and dv2 restores); only those are read.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Action, Add, Cdc, CommitInfo, Metadata, Protocol, Remove
from lakeflow.column_mapping import ColumnMapping, mapping_mode
from lakeflow.deletion_vectors import DeletionVector, RowSelection
from lakeflow.errors import (
    CorruptLogError,
    DataFileNotFoundError,
    DuplicateKeyError,
    InvalidArgumentError,
    LakeflowError,
    SchemaMismatchError,
    StorageError,
    VacuumedDataError,
    VersionNotFoundError,
)
from lakeflow.log import TableState, check_data_path, check_readable, replay
from lakeflow.log_reader import LogReader
from lakeflow.schema import delta_to_arrow, widen_to_newest
from lakeflow.snapshot import ScanFile, Snapshot, scan_files, typed_partition_values
from lakeflow.storage import Storage

CHANGE_TYPE = "_change_type"
COMMIT_VERSION = "_commit_version"
COMMIT_TIMESTAMP = "_commit_timestamp"
CHANGED_COLUMNS = "_changed_columns"
_WEIGHT = "__lakeflow_weight"
_SIDE, _SAME = "__lakeflow_side", "__lakeflow_same"  # only ever beside _WEIGHT
_RESERVED = (CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP, _WEIGHT)
_CHANGE_WEIGHTS = {"insert": 1, "update_postimage": 1, "delete": -1, "update_preimage": -1}
_CHANGE_ORDER = {"delete": 0, "update_preimage": 1, "update_postimage": 2, "insert": 3}
# The names delta-spark's change data feed preview (before 1.0) wrote.
_OLD_CHANGE_TYPES = {"update_pre": "update_preimage", "update_post": "update_postimage"}
_META_FIELDS = [pa.field(CHANGE_TYPE, pa.string()), pa.field(COMMIT_VERSION, pa.int64()),
                pa.field(COMMIT_TIMESTAMP, pa.timestamp("ms", tz="UTC"))]

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
        files_skipped: data files whose adds and removes in the range cancelled
            (added then removed, or removed then re-added), so they were not opened.
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
        `_commit_timestamp` of the commit that wrote the row (where copies of an
        equal row partly cancelled, the newest of their commits).
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
    """A data or change data file to read, with the commit that wrote or removed it.

    With a deletion vector it is a logical file: the data file minus those rows.
    `partition_values` (logical keys) and `mapping` follow the metadata the file
    was written under, which may differ from the range's newest.
    """

    path: str
    size: int
    partition_values: Mapping[str, str | None]
    version: int
    mapping: ColumnMapping
    deletion_vector: DeletionVector | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """The logical file's identity: (path, deletion vector id)."""
        return self.path, self.deletion_vector.unique_id if self.deletion_vector else None


@dataclass(frozen=True)
class _CommitPlan:
    version: int
    operation: str | None
    added: tuple[_File, ...]
    removed: tuple[_File, ...]
    cdc: tuple[_File, ...]


@dataclass(frozen=True)
class _Plan:
    """The range's commits, and the logical files its adds and removes name.

    `touched` maps each to the file of its last action; `rearranged` holds those
    named by an action without `dataChange`.
    """

    schema: pa.Schema
    commits: tuple[_CommitPlan, ...]
    touched: Mapping[tuple[str, str | None], _File]
    rearranged: frozenset[tuple[str, str | None]]


class _Layout(NamedTuple):
    """How files written under one metaData store their columns."""

    partition_columns: tuple[str, ...]
    mapping: ColumnMapping

    @classmethod
    def of(cls, metadata: Metadata, newest: ColumnMapping | None = None, where: str = "") -> _Layout:
        """The layout of files written under `metadata`; with `newest`, read by its logical names.

        Raises:
            UnsupportedFeatureError: a column of `metadata` cannot be matched with the newest
                schema's (see `ColumnMapping.retarget`).
        """
        own = ColumnMapping.of(metadata.schema_string, mapping_mode(metadata))
        if newest is None:
            return cls(metadata.partition_columns, own)
        mapping = own.retarget(newest, where)
        parts = tuple(mapping.logical_name(own.physical_name(c)) or c for c in metadata.partition_columns)
        return cls(parts, mapping)


def _commit(log: LogReader, version: int) -> list[Action]:
    try:
        return log.read_commit(version)
    except FileNotFoundError as e:
        raise VersionNotFoundError(
            f"the log entry of version {version} is gone (cleaned up), so changes across it "
            "cannot be computed; diff a more recent range"
        ) from e


def _start_state(head: Snapshot, version: int) -> TableState:
    if version >= 0:
        return head.at(version).state
    first = replay(None, [(0, _commit(head.log, 0))])
    return TableState(-1, first.protocol, first.metadata, {})


def _deletion_vector(action: Add | Remove, version: int) -> DeletionVector | None:
    if not action.deletion_vector:
        return None
    return DeletionVector.parse(action.deletion_vector, f"file {action.path} in commit {version}")


def _file(action: Add | Cdc, layout: _Layout, version: int) -> _File:
    path = check_data_path(action.path, f"commit {version}")
    raw = layout.mapping.logical_keys(action.partition_values)
    dv = _deletion_vector(action, version) if isinstance(action, Add) else None
    return _File(path, action.size, {c: raw.get(c) for c in layout.partition_columns}, version,
                 layout.mapping, dv)


def _removed_file(remove: Remove, known: Mapping[str, Add], layout: _Layout,
                  version: int) -> _File:
    """The file a remove retires; old writers leave its partition values and size to its add."""
    add = known.get(remove.path)
    dv = _deletion_vector(remove, version)
    if add is not None and (remove.partition_values is None or remove.size is None):
        return dataclasses.replace(_file(add, layout, version), deletion_vector=dv)
    raw = layout.mapping.logical_keys(remove.partition_values or {})
    return _File(check_data_path(remove.path, f"commit {version}"), remove.size or 0,
                 {c: raw.get(c) for c in layout.partition_columns}, version, layout.mapping, dv)


def _commit_files(actions: Sequence[Action], version: int, known: dict[str, Add],
                  before: _Layout, after: _Layout) -> list[tuple[Add | Remove, _File]]:
    """A commit's adds and removes, each with its file.

    Adds are read as written under the commit's metadata (`after`), removes under
    the metadata before it (`before`).
    """
    out: list[tuple[Add | Remove, _File]] = []
    for a in actions:
        if isinstance(a, Add):
            known[a.path] = a
            out.append((a, _file(a, after, version)))
        elif isinstance(a, Remove):
            out.append((a, _removed_file(a, known, before, version)))
    return out


def _plan(head: Snapshot, lo: int, hi: int) -> _Plan:
    """What each commit in (lo, hi] changed, from the log alone.

    Like every change data feed reader, this trusts `dataChange`: an add flagged
    with it brings new rows, a remove flagged with it retires rows, and actions
    without it only rearrange rows.
    """
    log = [(v, _commit(head.log, v)) for v in range(lo + 1, hi + 1)]
    evolves = any(isinstance(a, (Metadata, Protocol)) for _, actions in log for a in actions)
    incomplete = any(isinstance(a, Remove) and (a.partition_values is None or a.size is None)
                     for _, actions in log for a in actions)
    # Replaying the state at `lo` (a checkpoint read) is only needed for a schema the
    # range changed, or for removes that do not say which file they retire.
    if hi == head.version and not (evolves or incomplete):
        start, known = head.state, {}
    else:
        start = _start_state(head, lo)
        known = dict(start.files)
    protocol, metadata = start.protocol, start.metadata
    schemas = [metadata.schema_string]
    newest = _newest_mapping(metadata, log)
    layouts = [_Layout.of(metadata, newest, f"version {max(lo, 0)}")]
    commits = []
    touched: dict[tuple[str, str | None], _File] = {}
    rearranged: set[tuple[str, str | None]] = set()
    for v, actions in log:
        for a in actions:
            if isinstance(a, Metadata):
                metadata = a
                schemas.append(a.schema_string)
            elif isinstance(a, Protocol):
                protocol = a
        check_readable(protocol, metadata)
        # A commit's removes retire files written under the metadata before it (an
        # overwrite may re-partition); its adds and change files follow its own.
        before = layouts[-1]
        if any(isinstance(a, Metadata) for a in actions):
            layouts.append(_Layout.of(metadata, newest, f"version {v}"))
        cdc = tuple(_file(a, layouts[-1], v) for a in actions if isinstance(a, Cdc))
        files = _commit_files(actions, v, known, before, layouts[-1])
        touched.update((f.key, f) for _, f in files)
        rearranged.update(f.key for a, f in files if not a.data_change)
        added = [f for a, f in files if a.data_change and isinstance(a, Add)]
        removed = [f for a, f in files if a.data_change and isinstance(a, Remove)]
        operation = next((a.values.get("operation") for a in actions
                          if isinstance(a, CommitInfo)), None)
        # With change data files, they alone describe the commit (Delta CDF reader rule).
        commits.append(_CommitPlan(v, operation, () if cdc else tuple(added),
                                   () if cdc else tuple(removed), cdc))
    # Under column mapping the rows take the newest names: renamed columns match, dropped ones are gone.
    return _Plan(_union_schema(schemas[-1:] if newest is not None else schemas), tuple(commits), touched,
                 frozenset(rearranged))


def _newest_mapping(start: Metadata, log: Sequence[tuple[int, Sequence[Action]]]) -> ColumnMapping | None:
    """The column mapping of the range's newest schema, when any schema of the range maps columns."""
    schemas = [start, *(a for _, actions in log for a in actions if isinstance(a, Metadata))]
    if all(mapping_mode(m) == "none" for m in schemas):
        return None
    return ColumnMapping.of(schemas[-1].schema_string, mapping_mode(schemas[-1]))


def _union_schema(schema_strings: Sequence[str]) -> pa.Schema:
    """Newest column order first; columns dropped or added in the range come back null."""
    schemas = widen_to_newest([delta_to_arrow(s) for s in dict.fromkeys(reversed(schema_strings))])
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
    known = set(schema.names)  # not `in schema.names`: that rebuilds the list per test
    for what, names in (("columns", wanted), ("key", key)):
        unknown = [c for c in names if c not in known]
        if unknown:
            raise SchemaMismatchError(
                f"{what} names unknown column(s) {unknown}; the table has {schema.names}"
            )
    if not wanted:
        raise InvalidArgumentError("columns is empty; pass at least one column to compare")
    kept = {*wanted, *key}
    return [c for c in schema.names if c in kept]


def _names(value: Sequence[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


# ---- reading -----------------------------------------------------------------------------


def _weighted_scan(storage: Storage, files: Sequence[tuple[_File, int]]
                   ) -> list[tuple[_File, int, RowSelection | None]]:
    """Per data file, the rows to read with one weight each: (file, weight, rows).

    A data file's row weighs the sum of the weights of the logical files (path,
    deletion vector) that keep it. Rows deleted by none of the vectors weigh the
    plain sum; the few rows some vector deletes are grouped by their weight.
    """
    by_path: dict[str, list[tuple[_File, int]]] = {}
    for f, w in files:
        by_path.setdefault(f.path, []).append((f, w))
    out: list[tuple[_File, int, RowSelection | None]] = []
    for group in by_path.values():
        newest = max((f for f, _ in group), key=lambda f: f.version)
        total = sum(w for _, w in group)
        vectors = [(f.deletion_vector.read(storage), w) for f, w in group if f.deletion_vector]
        if not vectors:
            if total:
                out.append((newest, total, None))
            continue
        rows, at = np.unique(np.concatenate([d for d, _ in vectors]), return_inverse=True)
        deleted = np.concatenate([np.full(len(d), w, np.int64) for d, w in vectors])
        weights = total - np.bincount(at, weights=deleted, minlength=len(rows)).astype(np.int64)
        if total:
            out.append((newest, total, RowSelection(rows)))
        out += [(newest, int(w), RowSelection(rows[weights == w], keep=True))
                for w in np.unique(weights) if w]
    return out


def _read(storage: Storage, plan: _Plan, files: Sequence[tuple[_File, int]],
          columns: Sequence[str], change_files: bool) -> pa.Table:
    """Rows of `files` as [*columns, _change_type, weight, _commit_version].

    Data files weigh what their pair says and their change type follows; change
    data files weigh by the `_change_type` they store.
    """
    schema = plan.schema
    virtual = pa.field(CHANGE_TYPE, pa.string()) if change_files else pa.field(_WEIGHT, pa.int64())
    read_schema = pa.schema([*schema, virtual, pa.field(COMMIT_VERSION, pa.int64())])
    scan = []
    selected = ([(f, 0, None) for f, _ in files] if change_files
                else _weighted_scan(storage, files))
    for f, weight, rows in selected:
        # Virtual columns are filled like partition columns.
        values = {**typed_partition_values(f.partition_values, schema, list(f.partition_values)),
                  COMMIT_VERSION: f.version}
        if not change_files:
            values[_WEIGHT] = weight
        scan.append(ScanFile(f.path, values, rows=rows, mapping=f.mapping))
    wanted = [*columns, virtual.name, COMMIT_VERSION]
    rows_read = (scan_files(storage, read_schema, scan).to_table(columns=wanted)
                 if scan else read_schema.empty_table().select(wanted))
    order = [*columns, CHANGE_TYPE, _WEIGHT, COMMIT_VERSION]
    if not change_files:
        kinds = pc.if_else(pc.greater(rows_read[_WEIGHT], 0), "insert", "delete")
        return rows_read.append_column(CHANGE_TYPE, kinds).select(order)
    # One hash lookup names each row's change type (older writers' names renamed) and weight.
    names = [*_CHANGE_WEIGHTS, *_OLD_CHANGE_TYPES]
    current = [_OLD_CHANGE_TYPES.get(n, n) for n in names]
    at = pc.index_in(rows_read[CHANGE_TYPE], value_set=pa.array(names))
    if at.null_count:
        unknown = rows_read[CHANGE_TYPE].filter(pc.is_null(at))
        raise CorruptLogError(
            f"a change data file holds _change_type {unknown[0]}; "
            f"expected one of {sorted(_CHANGE_WEIGHTS)}"
        )
    kinds = pc.take(pa.array(current), at)
    weights = pc.take(pa.array([_CHANGE_WEIGHTS[n] for n in current], pa.int64()), at)
    rows_read = rows_read.set_column(rows_read.schema.get_field_index(CHANGE_TYPE), CHANGE_TYPE, kinds)
    return rows_read.append_column(_WEIGHT, weights).select(order)


def _gone(storage: Storage, f: _File) -> str | None:
    """The file of `f` (data file, or its deletion vector file) missing from storage."""
    dv = f.deletion_vector
    paths = [f.path, *([dv.file_path] if dv is not None and dv.storage_type == "u" else [])]
    return next((p for p in paths if not storage.exists(p)), None)


def _vacuumed(storage: Storage, data: Sequence[tuple[_File, int]], cdc: Sequence[_File]
              ) -> LakeflowError:
    """The error for a file the log names that is gone from storage (vacuum deleted it)."""
    for f, w in [*data, *((f, 0) for f in cdc)]:
        path = _gone(storage, f)
        if path is None:
            continue
        if not w:
            what, lost = f"change data file {path!r} of version {f.version}", f"version {f.version}"
        elif w > 0:
            what, lost = f"file {path!r} (added in version {f.version})", f"version {f.version}"
        else:
            what = f"file {path!r} (removed in version {f.version})"
            lost = f"the versions before {f.version} that hold it"
        return VacuumedDataError(
            f"the {what} was vacuumed (it is gone from storage), so the data of {lost} can "
            "no longer be read; diff or read changes over versions whose files vacuum still keeps"
        )
    return StorageError(f"a file of {storage.uri} vanished while it was read; retry")


def _read_changes(storage: Storage, plan: _Plan, data: Sequence[tuple[_File, int]],
                  cdc: Sequence[_File], columns: Sequence[str]) -> pa.Table:
    try:
        return pa.concat_tables([
            _read(storage, plan, data, columns, change_files=False),
            _read(storage, plan, [(f, 0) for f in cdc], columns, change_files=True),
        ])
    except (FileNotFoundError, DataFileNotFoundError) as e:  # the scan names files it misses
        raise _vacuumed(storage, data, cdc) from e


def _stamps(log: LogReader, files: Sequence[_File]) -> dict[int, int | None]:
    return {v: log.commit_ts(v) for v in sorted({f.version for f in files})}


def _stamped(rows: pa.Table, stamps: Mapping[int, int | None], schema: pa.Schema,
             columns: Sequence[str]) -> pa.Table:
    """Add `_commit_timestamp` by `_commit_version`; the table's types, CDF columns last."""
    times = pa.array(list(stamps.values()), pa.int64()).cast(_META_FIELDS[2].type)
    at = pc.index_in(rows[COMMIT_VERSION], value_set=pa.array(list(stamps), pa.int64()))
    target = pa.schema([*(schema.field(c) for c in columns), *_META_FIELDS])
    rows = rows.append_column(COMMIT_TIMESTAMP, pc.take(times, at))
    return rows.select(target.names).cast(target)


def _size(files: Sequence[_File]) -> int:
    """Bytes of the data files (each path counted once: logical files share one)."""
    return sum({f.path: f.size for f in files}.values())


def _count(files: Sequence[_File]) -> int:
    """Data files, each path counted once."""
    return len({f.path for f in files})


# ---- per-commit changes ------------------------------------------------------------------


def iter_changes(head: Snapshot, lo: int, hi: int) -> Iterator[CommitChanges]:
    """Implements `Table.changes` over versions (lo, hi] of the table at `head`.

    Validates and plans now, reads lazily per commit.

    Raises:
        InvalidArgumentError: `lo` is after `hi`.
    """
    if lo > hi:
        raise InvalidArgumentError(
            f"changes() walks forward but from_version {lo} is after to_version {hi}; "
            "swap them, or use Table.diff for a reverse diff"
        )
    plan = _plan(head, lo, hi)
    return _commit_changes(head.log, plan)


def _commit_changes(log: LogReader, plan: _Plan) -> Iterator[CommitChanges]:
    columns = plan.schema.names
    for c in plan.commits:
        data = [(f, 1) for f in c.added] + [(f, -1) for f in c.removed]
        rows = _read_changes(log.storage, plan, data, c.cdc, columns)
        ts = log.commit_ts(c.version)
        yield CommitChanges(
            version=c.version,
            timestamp=None if ts is None else dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc),
            operation=c.operation,
            rows=_stamped(rows, {c.version: ts}, plan.schema, columns),
            files_read=_count([f for f, _ in data]) + len(c.cdc),
            bytes_read=_size([f for f, _ in data]) + _size(c.cdc),
        )


# ---- consolidated diff -------------------------------------------------------------------


def compute_diff(head: Snapshot, start: int, end: int, key: Sequence[str] | str | None = None,
                 columns: Sequence[str] | str | None = None) -> Diff:
    """Implements `Table.diff` from version `start` to `end` of the table at `head`."""
    keys = head.config.key if key is None else _names(key)
    lo, hi = min(start, end), max(start, end)
    plan = _plan(head, lo, hi)
    compared = _columns(plan.schema, columns, keys)
    values = [c for c in compared if c not in keys]
    if keys:
        _check_updated_names(keys, values)

    net = _net_weights(plan)
    cdc = [f for c in plan.commits for f in c.cdc]
    if any(f.key in plan.rearranged for f, w in net.values() if w):
        # Rows the change needs were moved by a rewrite without dataChange (compaction)
        # into other files, and their old files may be vacuumed: compare the files of
        # the two ends instead, which every readable version keeps.
        net, cdc = _end_to_end(head, plan, lo, hi), []
    data = [(f, w) for f, w in net.values() if w]
    rows = _read_changes(head.storage, plan, data, cdc, compared)
    if start > end:
        rows = rows.set_column(rows.schema.get_field_index(_WEIGHT), _WEIGHT,
                               pc.negate(rows[_WEIGHT]))
    added, removed = _consolidate(rows, compared)

    updated = None
    if keys:
        changes, updated = _pair(added, removed, keys, values, start, end)
    else:
        changes = pa.concat_tables([_labelled(removed, "delete"), _labelled(added, "insert")])
    stamps = _stamps(head.log, [*(f for f, _ in data), *cdc])
    changes = _stamped(changes, stamps, plan.schema, compared)
    counts = {d["values"]: d["counts"] for d in pc.value_counts(changes[CHANGE_TYPE]).to_pylist()}
    data_schema = pa.schema([plan.schema.field(c) for c in compared])
    return Diff(
        from_version=start,
        to_version=end,
        key=keys,
        schema=data_schema,
        added=added.select(compared).cast(data_schema),
        removed=removed.select(compared).cast(data_schema),
        summary=DiffSummary(
            inserted=counts.get("insert", 0),
            deleted=counts.get("delete", 0),
            updated=counts.get("update_postimage", 0),
            commits=hi - lo,
            files_read=_count([f for f, _ in data]) + len(cdc),
            bytes_read=_size([f for f, _ in data]) + _size(cdc),
            files_skipped=_count([f for f, _ in net.values()]) - _count([f for f, _ in data]),
        ),
        _changes=changes,
        _updated=None if updated is None else _typed_updated(updated, plan.schema, keys, values),
    )


def _net_weights(plan: _Plan) -> dict[tuple[str, str | None], tuple[_File, int]]:
    """Net weight per logical file: what is added and removed again never gets read."""
    net: dict[tuple[str, str | None], tuple[_File, int]] = {}
    for c in plan.commits:
        for f, w in [(f, 1) for f in c.added] + [(f, -1) for f in c.removed]:
            weight = net[f.key][1] + w if f.key in net else w
            net[f.key] = (f, weight)
    return net


def _end_to_end(head: Snapshot, plan: _Plan, lo: int, hi: int
                ) -> dict[tuple[str, str | None], tuple[_File, int]]:
    """Weights from the files of the two ends: +1 only at `hi`, -1 only at `lo`.

    Exact whatever the `dataChange` flags say; a file no action in the range names
    is at both ends or at neither.
    """
    ends = _start_state(head, lo).files, head.at(hi).state.files

    def live(files: Mapping[str, Add], key: tuple[str, str | None], version: int) -> bool:
        add = files.get(key[0])
        dv = _deletion_vector(add, version) if add is not None else None
        return add is not None and (dv.unique_id if dv else None) == key[1]

    return {k: (f, int(live(ends[1], k, hi)) - int(live(ends[0], k, lo)))
            for k, f in plan.touched.items()}


def _consolidate(rows: pa.Table, columns: Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """Sum the weights of identical rows: (added, removed), one row per copy.

    Only a row with an equal row of the opposite sign can cancel, and equal rows
    hash equally: rows whose hash meets no opposite sign pass through as they are,
    the others are grouped on all columns, keeping the newest commit version.
    """
    adds = pc.greater(rows[_WEIGHT], 0)
    drops = pc.invert(adds)
    if not pc.any(drops).as_py() or not pc.any(adds).as_py():  # one sign only: nothing cancels
        return _signed(rows.select([*columns, _WEIGHT, COMMIT_VERSION]))
    hashes = pl.DataFrame(rows.select(columns)).hash_rows().to_arrow()
    paired = pc.or_(pc.and_(adds, pc.is_in(hashes, value_set=hashes.filter(drops))),
                    pc.and_(drops, pc.is_in(hashes, value_set=hashes.filter(adds))))
    alone = rows.select([*columns, _WEIGHT, COMMIT_VERSION])
    if not pc.any(paired).as_py():  # no hash meets the opposite sign (e.g. only updates)
        return _signed(alone)
    alone = alone.filter(pc.invert(paired))
    net = (pl.DataFrame(rows.filter(paired).select(alone.column_names))
           .group_by(columns).agg(pl.col(_WEIGHT).sum(), pl.col(COMMIT_VERSION).max())
           .to_arrow())
    return _signed(pa.concat_tables([alone, net.cast(alone.schema)]))


def _signed(rows: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(added, removed) of weighted rows, one row per copy, without the weight column."""
    weights = rows[_WEIGHT]
    body = rows.drop_columns([_WEIGHT])
    return _copies(body, weights), _copies(body, pc.negate(weights))


def _copies(rows: pa.Table, weights: pa.ChunkedArray) -> pa.Table:
    """The rows with a positive weight, each repeated `weight` times."""
    index = pc.indices_nonzero(pc.greater(weights, 0))
    counts = pc.take(weights, index)
    if len(counts) and pc.max(counts).as_py() > 1:
        index = pa.array([i for i, n in zip(index.to_pylist(), counts.to_pylist(), strict=True)
                          for _ in range(n)], pa.uint64())
    return rows.take(index)


def _labelled(rows: pa.Table, change_type: str) -> pa.Table:
    return rows.append_column(CHANGE_TYPE, pa.repeat(pa.scalar(change_type), rows.num_rows))


def _pair(added: pa.Table, removed: pa.Table, keys: Sequence[str], values: Sequence[str],
          start: int, end: int) -> tuple[pa.Table, pa.Table]:
    """Pair rows by key: (change rows ordered by key, updated rows side by side).

    Only the key columns go through polars: sorted stably by key (`removed` first),
    equal keys are neighbours, so one pass over the neighbours finds the updates
    (a key once on each side) and repeated keys. The rows are then taken once in
    that order: an update's preimage right before its postimage, and the preimages
    line up with their postimages by position.
    """
    on = list(keys)
    old, new = pl.DataFrame(removed.select(on)), pl.DataFrame(added.select(on))
    side = (pl.col(_WEIGHT) >= old.height).cast(pl.Int8)  # 0 removed, 1 added
    same = pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) for k in on])
    same = same & (pl.int_range(pl.len()) > 0)  # shift(1) of the first row is null
    # Beside the keys only _WEIGHT (reserved) holds the row number; the output drops the keys.
    flags = (pl.concat([old, new]).with_row_index(_WEIGHT)
             .sort(on, nulls_last=True, maintain_order=True)
             .select(pl.col(_WEIGHT), side.alias(_SIDE), same.alias(_SAME)))
    side = pl.col(_SIDE)
    repeated = pl.col(_SAME) & (side == side.shift(1))
    sides = flags.filter(repeated).get_column(_SIDE)
    if len(sides):  # a key twice on one side: report `removed`'s first, as a key check would
        raise _repeated_key(*((new, end) if sides.min() else (old, start)), on)
    paired = (pl.col(_SAME) | pl.col(_SAME).shift(-1, fill_value=False)).cast(pl.Int8)
    # Change type as its _CHANGE_ORDER code: 0 delete / 1 preimage, 2 postimage / 3 insert.
    codes = flags.select(side * 3 + (1 - 2 * side) * paired).to_series().to_arrow()
    changes = pa.concat_tables([removed, added]).take(flags.get_column(_WEIGHT).to_arrow())
    kinds = pc.take(pa.array(list(_CHANGE_ORDER)), codes)
    changes = changes.append_column(CHANGE_TYPE, kinds)
    pre = changes.filter(pc.equal(codes, 1))
    post = changes.filter(pc.equal(codes, 2))
    return changes, _side_by_side(pre, post, keys, values)


def _repeated_key(keys: pl.DataFrame, version: int, on: Sequence[str]) -> DuplicateKeyError:
    """The error for changed rows of one version that repeat a key (they cannot be paired)."""
    found = keys.group_by(on).agg(pl.len().alias(_WEIGHT)).filter(pl.col(_WEIGHT) > 1)
    example = {k: found.item(0, k) for k in on}
    return DuplicateKeyError(
        f"key {example} appears {found.item(0, _WEIGHT)} times among the changed rows "
        f"of version {version}, so rows cannot be paired by key {list(on)}; pass a key "
        "that identifies rows, or key=() for an unpaired diff"
    )


def _updated_names(keys: Sequence[str], values: Sequence[str]) -> list[str]:
    return [*keys, *(f"{c}_{side}" for c in values for side in ("old", "new")),
            CHANGED_COLUMNS]


def _check_updated_names(keys: Sequence[str], values: Sequence[str]) -> None:
    names = _updated_names(keys, values)
    clash = sorted(n for n, k in collections.Counter(names).items() if k > 1)
    if clash:
        raise SchemaMismatchError(
            f"the updated table would have two columns named {clash} (a key column is named "
            "like another column plus _old/_new); pass columns= to leave one out"
        )


def _side_by_side(pre: pa.Table, post: pa.Table, keys: Sequence[str],
                  values: Sequence[str]) -> pa.Table:
    """Preimages and postimages aligned by position: the key, old and new values, what differs."""
    sides = {f"{c}_{side}": rows[c] for c in values for side, rows in (("old", pre), ("new", post))}
    differ = np.zeros((pre.num_rows, len(values)), dtype=bool)
    for i, c in enumerate(values):
        differ[:, i] = _differs(pre[c], post[c])
    at, which = np.nonzero(differ)  # row by row, each row's columns in order
    offsets = np.concatenate([[0], np.cumsum(np.bincount(at, minlength=pre.num_rows))])
    changed = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                       pc.take(pa.array(list(values), pa.string()), which))
    columns = {**{k: pre[k] for k in keys}, **sides, CHANGED_COLUMNS: changed}
    return pa.table(columns).select(_updated_names(keys, values))


# Types whose Arrow comparison is polars' (nested and other types are compared by polars).
_ARROW_COMPARABLE = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                     pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                     pa.types.is_large_binary, pa.types.is_decimal, pa.types.is_timestamp,
                     pa.types.is_date, pa.types.is_time, pa.types.is_duration)


def _differs(old: pa.ChunkedArray, new: pa.ChunkedArray) -> np.ndarray:
    """Where `old` and `new` differ, as polars' `ne_missing`: null equals null, NaN equals NaN."""
    if not any(is_type(old.type) for is_type in _ARROW_COMPARABLE):
        frame = pl.DataFrame(pa.table({"old": old, "new": new}))
        return frame.select(pl.col("old").ne_missing(pl.col("new"))).to_series().to_numpy()
    differ = pc.not_equal(old, new)
    if pa.types.is_floating(old.type):
        differ = pc.and_(differ, pc.invert(pc.and_(pc.is_nan(old), pc.is_nan(new))))
    one_null = pc.xor(pc.is_null(old), pc.is_null(new))
    return np.asarray(pc.or_(pc.fill_null(differ, False), one_null).to_numpy(zero_copy_only=False))


def _typed_updated(updated: pa.Table, schema: pa.Schema, keys: Sequence[str],
                   values: Sequence[str]) -> pa.Table:
    fields = [schema.field(k) for k in keys]
    for c in values:
        f = schema.field(c)
        fields += [pa.field(f"{c}_old", f.type), pa.field(f"{c}_new", f.type)]
    fields.append(pa.field(CHANGED_COLUMNS, pa.list_(pa.string())))
    return updated.cast(pa.schema(fields))


__all__ = ["CHANGED_COLUMNS", "CHANGE_TYPE", "COMMIT_TIMESTAMP", "COMMIT_VERSION",
           "CommitChanges", "Diff", "DiffSummary", "compute_diff",
           "iter_changes"]
