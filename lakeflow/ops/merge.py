"""Copy-on-write merge (upsert), recorded as Delta change data.

A merge pairs source rows with target rows by key. Only files that can hold a
source key are read: their partition values and the min/max statistics of the
key columns rule the others out. Only files holding at least one changed row
are rewritten; a matched row that comes out identical is `unchanged` and costs
no write. When the table has `delta.enableChangeDataFeed=true`, the change rows
(insert, delete, update_preimage, update_postimage) go to `_change_data/`
files in the same commit, so every Delta change-feed reader sees them. As the
protocol allows, a commit whose adds and removes are exactly its changes (only
inserts, or only whole files deleted) writes no change files: readers take its
adds as inserts and its removes as deletes.

A merge runs in stages, each handing a frozen record to the next: match (check
the source, read the files that may hold its keys, join the keys; `_Match`),
decide what each row becomes (`_Changes`), judge lateness (`_Judged`), plan the
rewrites (`_Plan`), then write the files in parallel and commit.

One operation is one commit. It records the files it read and a predicate for
files a concurrent writer might add; a concurrent commit that removed a read
file, or added a file that could hold one of the keys, makes it fail with
`CommitConflictError` (or start over when `retries` allows), and any other
concurrent commit is simply stepped over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import polars as pl
import pyarrow as pa

from lakeflow.actions import Add
from lakeflow.config import LatePolicy
from lakeflow.constraints import enforce
from lakeflow.errors import DuplicateKeyError, InvalidArgumentError, SchemaMismatchError
from lakeflow.keys import KeyIndex, any_file, frame_of
from lakeflow.late import (
    EventClock,
    Quarantine,
    QuarantineTarget,
    check_quarantine_arg,
    from_micros,
    quarantine_for,
)
from lakeflow.log import check_writable
from lakeflow.ops.append import write_quarantine
from lakeflow.ops.rewrite import (
    BoolArray,
    Content,
    IndexArray,
    Written,
    change_rows,
    pack,
    positions,
    take_rows,
    uses_deletion_vectors,
    writes_change_data,
)
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.transaction import Transaction, retrying
from lakeflow.write import conform, to_arrow_table

WhenMatched = Literal["update", "ignore", "delete"]
WhenNotMatched = Literal["insert", "ignore"]
WhenNotMatchedBySource = Literal["keep", "delete"]
NullKeys = Literal["error", "skip"]
MatchedAction = WhenMatched | Mapping[str, pl.Expr] | Callable[[pl.DataFrame, pl.DataFrame], Any]

_EMPTY: IndexArray = np.zeros(0, dtype=np.int64)
REWRITE_FILE_SIZE = 32 * 1024 * 1024


@dataclass(frozen=True)
class MergeResult:
    """What a merge did.

    Attributes:
        version: the version committed (the current version when nothing changed).
        inserted: source rows inserted.
        updated: target rows whose values changed.
        deleted: target rows deleted.
        unchanged: matched target rows left as they were (identical or ignored).
        late_rows: committed changes to rows behind the table watermark.
        revised_windows: starts of the event-time windows those changes revised.
        files_read: data files read, after partition and statistics pruning.
        files_rewritten: data files replaced because they held a changed row.
        quarantined: late source rows sent to the quarantine table.
    """

    version: int
    inserted: int
    updated: int
    deleted: int
    unchanged: int
    late_rows: int
    revised_windows: tuple[dt.datetime, ...]
    files_read: int
    files_rewritten: int
    quarantined: int = 0


@dataclass(frozen=True)
class _MergeArgs:
    when_matched: MatchedAction
    when_not_matched: WhenNotMatched
    when_not_matched_by_source: WhenNotMatchedBySource
    watermark: Any
    late: LatePolicy | None
    quarantine: QuarantineTarget | None
    null_keys: NullKeys


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_args(args: _MergeArgs) -> None:
    action = args.when_matched
    if isinstance(action, Mapping):
        for col, expr in action.items():
            if not isinstance(col, str) or not isinstance(expr, pl.Expr):
                raise InvalidArgumentError(
                    "a when_matched mapping maps column names to polars expressions, e.g. "
                    "{'amount': pl.col('target.amount') + pl.col('source.amount')}")
    elif not callable(action):
        _check_choice("when_matched", action, get_args(WhenMatched))
    _check_choice("when_not_matched", args.when_not_matched, get_args(WhenNotMatched))
    _check_choice("when_not_matched_by_source", args.when_not_matched_by_source, get_args(WhenNotMatchedBySource))
    _check_choice("null_keys", args.null_keys, get_args(NullKeys))


def _key_columns(on: str | Sequence[str] | None, declared: tuple[str, ...], schema: pa.Schema,
                 source: pa.Table, action: MatchedAction) -> tuple[str, ...]:
    keys = (on,) if isinstance(on, str) else tuple(on) if on is not None else declared
    if not keys:
        raise InvalidArgumentError("merge needs key columns: pass on=[...] or create the table with key=")
    unknown = [k for k in keys if k not in schema.names]
    if unknown:
        raise SchemaMismatchError(f"on names unknown column(s) {unknown}; the table has {schema.names}")
    missing = [k for k in keys if k not in source.column_names]
    if missing:
        raise SchemaMismatchError(f"the source lacks the key column(s) {missing}")
    if len(set(keys)) != len(keys):
        raise InvalidArgumentError(f"on repeats a column: {list(keys)}")
    if declared and set(keys) != set(declared):  # an unmatched row would be inserted under a taken key
        raise InvalidArgumentError(
            f"the table declares the key {list(declared)}, so a merge pairs rows by it; on={list(keys)} "
            "could insert a row whose key is already in the table: leave on out")
    if isinstance(action, Mapping) and set(action) & set(keys):
        raise InvalidArgumentError(
            f"when_matched cannot set the key column(s) {sorted(set(action) & set(keys))}")
    if isinstance(action, Mapping) and set(action) - set(schema.names):
        raise SchemaMismatchError(
            f"when_matched sets unknown column(s) {sorted(set(action) - set(schema.names))}")
    return keys


def _missing_columns(source: pa.Table, schema: pa.Schema, inserts: bool) -> tuple[str, ...]:
    """The table columns the source lacks (Delta's `UPDATE SET *` leaves them as they are).

    Inserted rows get nulls there, so a merge that may insert refuses, before
    reading anything, a source without a non-nullable column: whether any row
    would be inserted is only known once the target is read.
    """
    given = {n.lower() for n in source.column_names}
    missing = tuple(f.name for f in schema if f.name.lower() not in given)
    required = [c for c in missing if not schema.field(c).nullable]
    if inserts and required:
        raise SchemaMismatchError(
            f"the source lacks the non-nullable column(s) {required} that inserted rows need; add "
            "them to the source, or pass when_not_matched='ignore' to only update (updated rows "
            "keep the target's values of the columns the source lacks)")
    return missing


def _prepare_source(source: pa.Table, schema: pa.Schema, on: tuple[str, ...], null_keys: NullKeys,
                    full_rows: bool, missing: Sequence[str] = ()) -> pa.Table:
    """Drop or refuse null keys, cast to the table types, refuse repeated keys.

    With `full_rows` the source is shaped like the table (its rows become table
    rows): the `missing` columns come back null, for the caller to fill in;
    otherwise only the key columns are cast and the rest kept.
    """
    null = np.zeros(source.num_rows, dtype=bool)
    for k in on:
        null |= np.asarray(source.column(k).is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if null.any():
        if null_keys == "error":
            raise SchemaMismatchError(
                f"{int(null.sum())} source row(s) have a null in the key column(s) {list(on)}; "
                "null keys never match, pass null_keys='skip' to leave them out")
        source = source.filter(pa.array(~null))
    if full_rows:
        relaxed = pa.schema([f.with_nullable(True) if f.name in missing else f for f in schema])
        source = conform(source, relaxed).table
    else:
        keys = conform(source.select(list(on)), pa.schema([schema.field(k) for k in on])).table
        for k in on:
            source = source.set_column(source.schema.get_field_index(k), schema.field(k), keys.column(k))
    frame = frame_of(source.select(list(on)))
    dupes = frame.filter(frame.is_duplicated())
    if dupes.height:
        raise DuplicateKeyError(
            f"multiple source rows have the key {dupes.row(0, named=True)} ({dupes.height} rows "
            "share a key); a merge needs at most one source row per key, deduplicate the source")
    return source


def _rows_equal(old: pa.Table, new: pa.Table) -> BoolArray:
    """Row-wise: are all columns equal (nulls equal nulls, NaN equals NaN)?"""
    a, b = frame_of(old), frame_of(new)
    same = pl.Series(np.ones(old.num_rows, dtype=bool))
    for c in old.column_names:
        same &= a.get_column(c).eq_missing(b.get_column(c))
    return same.to_numpy()


def _updated_rows(given: pa.Table, old: pa.Table, schema: pa.Schema) -> pa.Table:
    """`UPDATE SET *`: the source's values, and the target's for the columns the source lacks."""
    columns = [given.column(f.name) if f.name in given.column_names else old.column(f.name)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _apply_matched(action: MatchedAction, old: pa.Table, source_rows: pa.Table,
                   schema: pa.Schema, on: tuple[str, ...]) -> pa.Table:
    """New values for matched rows from a column->expression mapping or a callable."""
    target_frame, source_frame = frame_of(old), frame_of(source_rows)
    if isinstance(action, Mapping):
        context = pl.concat([target_frame.rename({c: f"target.{c}" for c in old.column_names}),
                             source_frame.rename({c: f"source.{c}" for c in source_rows.column_names})],
                            how="horizontal")
        try:
            out = context.select([expr.alias(c) for c, expr in action.items()]).to_arrow()
        except pl.exceptions.PolarsError as e:
            raise InvalidArgumentError(
                f"a when_matched expression failed ({e}); refer to columns as "
                "pl.col('target.<name>') and pl.col('source.<name>')") from e
    else:
        assert callable(action)
        out = to_arrow_table(action(target_frame, source_frame))
    unknown = [c for c in out.column_names if c not in schema.names]
    if unknown:
        raise SchemaMismatchError(f"when_matched returned unknown column(s) {unknown}")
    if out.num_rows != old.num_rows:
        raise InvalidArgumentError(
            f"when_matched returned {out.num_rows} rows for {old.num_rows} matched rows; "
            "it must return one row per matched row, in order")
    result = old
    for c in out.column_names:
        f = schema.field(c)
        try:
            col = out.column(c).cast(f.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaMismatchError(f"when_matched value for {c!r} cannot be stored as {f.type}: {e}") from e
        if not f.nullable and col.null_count:
            raise SchemaMismatchError(f"when_matched sets the non-nullable column {c!r} to null")
        if c in on and not col.equals(old.column(c)):
            raise InvalidArgumentError(f"when_matched cannot change the key column {c!r}")
        result = result.set_column(schema.get_field_index(c), f, col)
    return result


def merge_into(
    snapshot: Snapshot,
    data: Any,
    on: str | Sequence[str] | None = None,
    *,
    when_matched: MatchedAction = "update",
    when_not_matched: WhenNotMatched = "insert",
    when_not_matched_by_source: WhenNotMatchedBySource = "keep",
    watermark: Any = None,
    late: LatePolicy | None = None,
    quarantine: QuarantineTarget | None = None,
    null_keys: NullKeys = "error",
    retries: int = 0,
) -> MergeResult:
    """Upsert `data` by key into the table at `snapshot`; see `Table.merge`."""
    args = _MergeArgs(when_matched, when_not_matched, when_not_matched_by_source, watermark,
                      late, quarantine, null_keys)
    _check_args(args)
    source = to_arrow_table(data)
    return retrying(snapshot, retries, lambda snap: _merge_once(snap, source, on, args))


def _merge_once(snap: Snapshot, raw: pa.Table, on: str | Sequence[str] | None,
                args: _MergeArgs) -> MergeResult:
    match = _match(snap, raw, on, args)
    judged = _judge(snap, match, _changes(snap, match, args), args)
    plan = _plan(snap, match, judged.changes)
    version = _write_and_commit(snap, match, judged, plan, args)
    if judged.held is not None:
        write_quarantine(snap.log, judged.held, version)
    ch = judged.changes
    return MergeResult(
        version=version, inserted=plan.inserted.num_rows, updated=len(ch.upd_t),
        deleted=len(plan.deleted_t), unchanged=ch.unchanged, late_rows=judged.late_rows,
        revised_windows=tuple(from_micros(w) for w in sorted(judged.windows)),
        files_read=len(match.target.files), files_rewritten=len(plan.touched),
        quarantined=judged.held.rows.num_rows if judged.held is not None else 0)


# --- match: the checked source, the target files that may hold its keys, the key pairs

@dataclass(frozen=True)
class _Source:
    """The source, checked against the table and shaped for the merge.

    Attributes:
        on: the key columns.
        clock: the event clock (None: the table has no event time).
        provided: the columns the caller's source has.
        missing: the table columns it lacks (kept from the target on update).
        rows: the source rows, null keys dropped, keys (or whole rows) cast to the table types.
    """

    on: tuple[str, ...]
    clock: EventClock | None
    provided: tuple[str, ...]
    missing: tuple[str, ...]
    rows: pa.Table


@dataclass(frozen=True)
class _Target:
    """The target files read, their rows concatenated, and where each file starts.

    Attributes:
        files: the files read (all of them when unmatched target rows are deleted).
        predicate: which files added by a concurrent writer the merge would have read.
        tables: each file's rows.
        rows: all their rows.
        starts: the position in `rows` of each file's first row.
    """

    files: tuple[DataFile, ...]
    predicate: Callable[[Add], bool]
    tables: tuple[pa.Table, ...]
    rows: pa.Table
    starts: IndexArray


@dataclass(frozen=True)
class _Match:
    """Source and target, and the matched pairs (`t_idx[i]` in the target, `s_idx[i]` in the source)."""

    source: _Source
    target: _Target
    t_idx: IndexArray
    s_idx: IndexArray


def _match(snap: Snapshot, raw: pa.Table, on: str | Sequence[str] | None, args: _MergeArgs) -> _Match:
    """Check the source, read the target files that may hold its keys, pair rows by key."""
    source = _checked_source(snap, raw, on, args)
    target = _read_target(snap, source, args.when_not_matched_by_source == "delete")
    keys = list(source.on)
    pairs = (frame_of(target.rows.select(keys)).with_row_index("__t")
             .join(frame_of(source.rows.select(keys)).with_row_index("__s"), on=keys, how="inner"))
    return _Match(source, target, pairs.get_column("__t").to_numpy().astype(np.int64),
                  pairs.get_column("__s").to_numpy().astype(np.int64))


def _checked_source(snap: Snapshot, raw: pa.Table, on_arg: str | Sequence[str] | None,
                    args: _MergeArgs) -> _Source:
    """Refuse what the merge cannot do, before reading the target."""
    check_writable(snap.protocol, snap.metadata)
    schema = snap.schema
    on = _key_columns(on_arg, snap.config.key, schema, raw, args.when_matched)
    clock = EventClock.of(snap, args.watermark, args.late)
    check_quarantine_arg(clock, args.quarantine)
    full_rows = (args.when_matched == "update" or args.when_not_matched == "insert"
                 or (clock is not None and clock.policy == "quarantine"))
    missing = _missing_columns(raw, schema, args.when_not_matched == "insert") if full_rows else ()
    rows = _prepare_source(raw, schema, on, args.null_keys, full_rows, missing)
    return _Source(on, clock, tuple(raw.column_names), missing, rows)


def _read_target(snap: Snapshot, source: _Source, every_file: bool) -> _Target:
    """Read the files that may hold a source key (`every_file`: all of them)."""
    if every_file:
        files: list[DataFile] = list(snap.files)
        predicate: Callable[[Add], bool] = any_file
    else:
        index = KeyIndex(source.rows.select(list(source.on)), snap.schema, snap.partition_columns,
                     snap.column_mapping)
        files = [f for f in snap.files if index.could_match(f.add)]
        predicate = index.could_match
    tables = snap.read_files(files)
    rows = pa.concat_tables(tables) if tables else snap.schema.empty_table()
    starts = np.cumsum([0] + [t.num_rows for t in tables[:-1]]).astype(np.int64)
    return _Target(tuple(files), predicate, tuple(tables), rows, starts)


# --- changes: what each matched pair and each unmatched row becomes

@dataclass(frozen=True)
class _Changes:
    """A merge's changes as row positions: `*_t` in the target, `*_s` in the source."""

    ins_s: IndexArray
    upd_t: IndexArray
    upd_s: IndexArray
    upd_new: pa.Table
    del_t: IndexArray
    del_s: IndexArray
    gone_t: IndexArray  # deleted because no source row matched them
    unchanged: int  # matched target rows left as they were

    def images(self, source: pa.Table, target: pa.Table) -> list[pa.Table]:
        """Insert, update pre- and post-, matched-delete and unmatched-delete rows."""
        return [take_rows(source, self.ins_s), take_rows(target, self.upd_t), self.upd_new,
                take_rows(target, self.del_t), take_rows(target, self.gone_t)]

    def without(self, late_ins: BoolArray, late_upd: BoolArray, late_del: BoolArray) -> _Changes:
        """These changes less the source-driven ones the masks flag."""
        return dataclasses.replace(
            self, ins_s=self.ins_s[~late_ins], upd_t=self.upd_t[~late_upd], upd_s=self.upd_s[~late_upd],
            upd_new=self.upd_new.filter(pa.array(~late_upd)),
            del_t=self.del_t[~late_del], del_s=self.del_s[~late_del])


def _changes(snap: Snapshot, m: _Match, args: _MergeArgs) -> _Changes:
    """Apply the when_* actions to the pairs and the unmatched rows."""
    action = args.when_matched
    upd_t, upd_s, upd_new = _EMPTY, _EMPTY, snap.schema.empty_table()
    del_t, del_s, ins_s, gone_t = _EMPTY, _EMPTY, _EMPTY, _EMPTY
    unchanged = len(m.t_idx)
    if action == "delete":
        del_t, del_s, unchanged = m.t_idx, m.s_idx, 0
    elif action != "ignore":
        upd_t, upd_s, upd_new = _updates(snap, m, action)
        unchanged = len(m.t_idx) - len(upd_t)
    if args.when_not_matched == "insert":
        ins_s = _unpaired(m.source.rows.num_rows, m.s_idx)
    if args.when_not_matched_by_source == "delete":
        gone_t = _unpaired(m.target.rows.num_rows, m.t_idx)
    return _Changes(ins_s, upd_t, upd_s, upd_new, del_t, del_s, gone_t, unchanged)


def _updates(snap: Snapshot, m: _Match, action: MatchedAction) -> tuple[IndexArray, IndexArray, pa.Table]:
    """The matched pairs whose target row changes: their positions and the new rows."""
    schema = snap.schema
    old = take_rows(m.target.rows, m.t_idx)
    given = take_rows(m.source.rows, m.s_idx).drop_columns(list(m.source.missing))
    new = (_updated_rows(given, old, schema) if action == "update"
           else _apply_matched(action, old, given, schema, m.source.on)).select(schema.names)
    new = enforce(snap.state, new, provided=m.source.provided if action == "update"
                  else list(action) if isinstance(action, Mapping) else None, new_rows=False)
    changed = ~_rows_equal(old, new)
    return m.t_idx[changed], m.s_idx[changed], new.filter(pa.array(changed))


def _unpaired(num_rows: int, paired: IndexArray) -> IndexArray:
    """The positions among `num_rows` rows that are not in `paired`."""
    mask = np.ones(num_rows, dtype=bool)
    mask[paired] = False
    return positions(mask)


# --- judge: the lateness policy

@dataclass(frozen=True)
class _Judged:
    """The changes to commit, after the lateness policy held some back.

    Attributes:
        changes: the changes to commit.
        late_rows: how many of them touch rows behind the watermark.
        windows: the event-time windows (start, µs) they revise.
        held: the source rows behind held-back changes, for the quarantine.
    """

    changes: _Changes
    late_rows: int = 0
    windows: frozenset[int] = frozenset()
    held: Quarantine | None = None


def _judge(snap: Snapshot, m: _Match, ch: _Changes, args: _MergeArgs) -> _Judged:
    """Apply the lateness policy to a merge's changes.

    A change is late when any row image it writes or retires has an event time
    behind the table watermark. Reject refuses the merge; quarantine holds back
    the source rows behind late changes (deletes of unmatched target rows have
    no source row and are applied). A late `UPDATE SET *` is held as the row it
    would write (a source lacking columns gets them from the target).
    """
    clock, source, target = m.source.clock, m.source.rows, m.target.rows
    if clock is None or clock.watermark_us is None:
        return _Judged(ch)
    images = ch.images(source, target)
    masks = [clock.late(rows) for rows in images]
    late_ins, late_upd, late_del = masks[0], masks[1] | masks[2], masks[3]
    total = int(late_ins.sum() + late_upd.sum() + late_del.sum() + masks[4].sum())
    if total and clock.policy == "reject":
        earliest = min(clock.earliest(rows, mask) for rows, mask in zip(images, masks, strict=True) if mask.any())
        raise clock.refuse(total, earliest, "changed rows are")
    held = None
    if clock.policy == "quarantine" and (late_ins.any() or late_upd.any() or late_del.any()):
        updates = (ch.upd_new.filter(pa.array(late_upd)).cast(source.schema) if args.when_matched == "update"
                   else take_rows(source, ch.upd_s[late_upd]))
        rows = pa.concat_tables([take_rows(source, ch.ins_s[late_ins]), updates,
                                 take_rows(source, ch.del_s[late_del])])
        held = quarantine_for(snap, rows, clock, args.quarantine)
        ch = ch.without(late_ins, late_upd, late_del)
        images = ch.images(source, target)
        masks = [clock.late(rows) for rows in images]
    late_rows = int(masks[0].sum() + (masks[1] | masks[2]).sum() + masks[3].sum() + masks[4].sum())
    windows: set[int] = set()
    for rows, mask in zip(images, masks, strict=True):
        windows |= clock.windows(rows, mask)
    return _Judged(ch, late_rows, frozenset(windows), held)


# --- plan: the files rewritten, their new contents, the change data rows

@dataclass(frozen=True)
class _Plan:
    """What to write and what it replaces.

    Attributes:
        inserted: the rows inserted.
        deleted_t: the target rows deleted (matched and unmatched).
        touched: the files replaced (positions in `_Target.files`).
        contents: the new data files: rewrites (built when called), then the inserts.
        changes: the change data rows (None: the commit's adds and removes say it all).
        copied: unchanged rows the rewrites copy.
        marks: with deletion vectors, the touched files and the rows (positions as
            read) to mark deleted in them; the contents are then only new row images.
    """

    inserted: pa.Table
    deleted_t: IndexArray
    touched: tuple[int, ...]
    contents: tuple[Content, ...]
    changes: pa.Table | None
    copied: int
    marks: tuple[tuple[DataFile, IndexArray], ...] = ()


def _plan(snap: Snapshot, m: _Match, ch: _Changes) -> _Plan:
    """Check the inserted rows, plan the rewrites and the change data rows."""
    schema, target = snap.schema, m.target
    # Only a merge that inserts has full source rows.
    inserted = (take_rows(m.source.rows, ch.ins_s).select(schema.names) if len(ch.ins_s)
                else schema.empty_table())
    deleted_t = np.concatenate([ch.del_t, ch.gone_t])
    inserted = enforce(snap.state, inserted, provided=m.source.provided,
                       removes=bool(len(ch.upd_t) or len(deleted_t)))
    removed = np.concatenate([ch.upd_t, deleted_t])
    marks: tuple[tuple[DataFile, IndexArray], ...] = ()
    if uses_deletion_vectors(snap):
        touched, marks = _marks(target, removed)
        rewrites: list[Content] = [ch.upd_new]
        copied = 0
    else:
        # Files are packed in the order of the first key column that varies within a partition.
        order_by = next((k for k in m.source.on if k not in snap.partition_columns), m.source.on[0])
        touched, built, copied = _rewrites(target, removed, ch.upd_new, ch.upd_t,
                                           snap.column_mapping.physical_name(order_by),  # as stats name it
                                           snap.config.target_file_size or REWRITE_FILE_SIZE)
        rewrites = list(built)
    changes = None
    # A file removed whole with its vector needs them too: deltalake reads such a remove as the vector's rows.
    had_vector = any(target.files[i].deletion_vector is not None for i in touched)
    if writes_change_data(snap) and (len(ch.upd_t) or copied or marks or had_vector):
        changes = change_rows(schema, [
            (inserted, "insert"), (take_rows(target.rows, ch.upd_t), "update_preimage"),
            (ch.upd_new, "update_postimage"), (take_rows(target.rows, deleted_t), "delete")])
    return _Plan(inserted, deleted_t, tuple(touched), (*rewrites, inserted), changes, copied, marks)


def _marks(target: _Target, removed: IndexArray) -> tuple[list[int], tuple[tuple[DataFile, IndexArray], ...]]:
    """The files holding `removed` target rows, and those rows' positions in each (for deletion vectors)."""
    file_of = np.searchsorted(target.starts, removed, side="right") - 1
    touched = np.unique(file_of).tolist()
    return touched, tuple((target.files[f], np.sort(removed[file_of == f] - target.starts[f])) for f in touched)


def _rewrites(target: _Target, removed: IndexArray, replacements: pa.Table, replaced: IndexArray,
              key: str, size: int) -> tuple[list[int], list[Callable[[], pa.Table]], int]:
    """Plan the rewrite of the files holding `removed` target rows.

    `replacements` are the new versions of the `replaced` rows; each goes where
    its old row was. Files of one partition, neighbours in `key` order, are
    packed together on the way, up to `size` bytes. Returns the files to remove,
    the contents of the new files (built when called) and how many rows they copy.
    """
    files, tables, starts = target.files, target.tables, target.starts
    file_of = np.searchsorted(starts, removed, side="right") - 1
    touched = np.unique(file_of).tolist()
    repl_file = np.searchsorted(starts, replaced, side="right") - 1

    def content(group: list[int]) -> Callable[[], pa.Table]:
        def build() -> pa.Table:
            parts = []
            for f in group:
                keep = np.ones(tables[f].num_rows, dtype=bool)
                keep[removed[file_of == f] - starts[f]] = False
                parts += [tables[f].filter(pa.array(keep)),
                          take_rows(replacements, positions(repl_file == f)).cast(tables[f].schema)]
            return pa.concat_tables(parts)
        return build

    def order(f: int) -> tuple[str, bool, Any]:
        low = ((files[f].add.parsed_stats() or {}).get("minValues") or {}).get(key)
        return json.dumps(files[f].add.partition_values, sort_keys=True), low is None, low

    groups = pack(sorted(touched, key=order), lambda f: files[f].size, size, lambda f: order(f)[0])
    copied = sum(tables[f].num_rows for f in touched) - len(removed)
    return touched, [content(g) for g in groups], int(copied)


# --- write and commit

def _write_and_commit(snap: Snapshot, m: _Match, judged: _Judged, plan: _Plan, args: _MergeArgs) -> int:
    """Write the planned files in parallel and commit them; the version (unchanged: nothing to do)."""
    clock = m.source.clock
    written = Written.of(snap, plan.contents, plan.changes, plan.marks)
    if not (plan.touched or written.adds or written.cdcs or (clock is not None and clock.advances)):
        return snap.version
    tx = Transaction(snap, "MERGE", _merge_parameters(m.source.on, args))
    tx.remove(*(m.target.files[f] for f in plan.touched)).add(*written.adds, *written.marked, *written.cdcs)
    tx.read([f.add.path for f in m.target.files], m.target.predicate)
    ch = judged.changes
    tx.info({
        "numSourceRows": m.source.rows.num_rows,
        "numTargetRowsInserted": plan.inserted.num_rows,
        "numTargetRowsUpdated": len(ch.upd_t),
        "numTargetRowsDeleted": len(plan.deleted_t),
        "numTargetRowsCopied": plan.copied,
        "numTargetRowsUnchanged": ch.unchanged,
        "numOutputRows": plan.inserted.num_rows + len(ch.upd_t) + plan.copied,
        "numTargetFilesBeforeSkipping": len(snap.files),
        "numTargetFilesAfterSkipping": len(m.target.files),
        "numTargetFilesRemoved": len(plan.touched),
        "numTargetFilesAdded": len(written.adds),
        "numTargetChangeFilesAdded": len(written.cdcs),
        **({"numTargetDeletionVectorsAdded": len(written.marked)} if plan.marks else {}),
    }, **(clock.commit_info(judged.late_rows, judged.windows) if clock is not None else {}))
    return written.commit(tx)


def _merge_parameters(on: tuple[str, ...], args: _MergeArgs) -> dict[str, str]:
    action = args.when_matched
    matched = ([] if action == "ignore"
               else [{"actionType": action if isinstance(action, str) else "update"}])
    return {
        "mergePredicate": " AND ".join(f"target.{k} = source.{k}" for k in on),
        "matchedPredicates": json.dumps(matched),
        "notMatchedPredicates": json.dumps(
            [{"actionType": "insert"}] if args.when_not_matched == "insert" else []),
        "notMatchedBySourcePredicates": json.dumps(
            [{"actionType": "delete"}] if args.when_not_matched_by_source == "delete" else []),
    }


__all__ = ["MatchedAction", "MergeResult", "NullKeys", "WhenMatched", "WhenNotMatched",
           "WhenNotMatchedBySource", "merge_into"]
