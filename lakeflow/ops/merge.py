"""Copy-on-write merge (upsert) and delete, recorded as Delta change data.

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

One operation is one commit. It records the files it read and a predicate for
files a concurrent writer might add; a concurrent commit that removed a read
file, or added a file that could hold one of the keys (or rows the delete
predicate matches), makes it fail with `CommitConflictError` (or start over
when `retries` allows), and any other concurrent commit is simply stepped over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Action, Add, Cdc
from lakeflow.constraints import enforce
from lakeflow.errors import (
    CommitConflictError,
    DuplicateKeyError,
    InvalidArgumentError,
    LakeflowError,
    SchemaMismatchError,
)
from lakeflow.keys import KeyIndex, frame_of
from lakeflow.late import EventClock, Quarantine, check_quarantine_arg, from_micros, quarantine_for
from lakeflow.log import check_writable
from lakeflow.ops.append import write_quarantine
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.storage import Storage
from lakeflow.transaction import Transaction, retrying
from lakeflow.write import conform, to_arrow_table, write_cdc_files, write_data_files

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
IndexArray = np.ndarray[Any, np.dtype[np.int64]]
_EMPTY: IndexArray = np.zeros(0, dtype=np.int64)
MatchedAction = str | Mapping[str, pl.Expr] | Callable[[pl.DataFrame, pl.DataFrame], Any]

CHANGE_TYPE = "_change_type"
REWRITE_FILE_SIZE = 32 * 1024 * 1024
# File reads and writes overlap I/O with pyarrow's own (GIL-free) work; more
# threads than cores only contend.
_IO_THREADS = max(2, os.cpu_count() or 1)


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
    when_not_matched: str
    when_not_matched_by_source: str
    watermark: Any
    late: str | None
    quarantine: Any
    null_keys: str


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
        _check_choice("when_matched", action, ("update", "ignore", "delete"))
    _check_choice("when_not_matched", args.when_not_matched, ("insert", "ignore"))
    _check_choice("when_not_matched_by_source", args.when_not_matched_by_source, ("keep", "delete"))
    _check_choice("null_keys", args.null_keys, ("error", "skip"))


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


def _prepare_source(source: pa.Table, schema: pa.Schema, on: tuple[str, ...], null_keys: str,
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


def _cdf_enabled(snap: Snapshot) -> bool:
    """Whether the protocol requires change data files for this table."""
    if snap.properties.get("delta.enableChangeDataFeed", "").lower() != "true":
        return False
    p = snap.protocol
    if p.min_writer_version >= 7:
        return "changeDataFeed" in (p.writer_features or ())
    return p.min_writer_version >= 4


def _change_rows(schema: pa.Schema, parts: Sequence[tuple[pa.Table, str]]) -> pa.Table:
    tables = [t.cast(schema).append_column(CHANGE_TYPE, pa.array([kind] * t.num_rows, pa.string()))
              for t, kind in parts if t.num_rows]
    return pa.concat_tables(tables)


def _take(table: pa.Table, idx: IndexArray) -> pa.Table:
    return table.take(pa.array(idx, pa.int64()))


def _positions(mask: BoolArray) -> IndexArray:
    return np.flatnonzero(mask).astype(np.int64)


@dataclass
class _Written:
    """Data and change files an operation wrote; deleted again if its commit loses."""

    adds: list[Add] = field(default_factory=list)
    cdcs: list[Cdc] = field(default_factory=list)

    def write(self, snap: Snapshot, contents: Sequence[pa.Table | Callable[[], pa.Table]],
              changes: pa.Table | None) -> None:
        """Write data files (one per content) and change files, in parallel.

        A callable content is built in its task. Every file written is recorded,
        even when a task fails; then the first error is raised.
        """
        storage, partition_by = snap.storage, snap.partition_columns

        def data(content: pa.Table | Callable[[], pa.Table]) -> list[Add]:
            rows = content() if callable(content) else content
            return write_data_files(storage, rows, partition_by) if rows.num_rows else []

        with ThreadPoolExecutor(_IO_THREADS) as pool:
            futures: list[Future[Any]] = [pool.submit(data, c) for c in contents]
            if changes is not None:
                futures.append(pool.submit(write_cdc_files, storage, changes, partition_by))
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
        for path in [a.path for a in self.adds] + [c.path for c in self.cdcs]:
            with contextlib.suppress(OSError, LakeflowError):
                storage.delete(unquote(path))


def _bins(files: Sequence[DataFile], touched: Sequence[int], key: str, target: int) -> list[list[int]]:
    """Group rewritten files to pack together.

    A group holds files of one partition, neighbours in `key` order, up to
    `target` bytes (a file larger than that stays alone).
    """

    def order(f: int) -> tuple[str, bool, Any]:
        low = ((files[f].add.parsed_stats() or {}).get("minValues") or {}).get(key)
        return json.dumps(files[f].add.partition_values, sort_keys=True), low is None, low

    bins: list[list[int]] = []
    last, size = None, 0
    for f in sorted(touched, key=order):
        part = order(f)[0]
        if bins and part == last and size + files[f].size <= target:
            bins[-1].append(f)
            size += files[f].size
        else:
            bins.append([f])
            last, size = part, files[f].size
    return bins


def _rewrites(files: Sequence[DataFile], file_tables: Sequence[pa.Table], starts: IndexArray,
              removed: IndexArray, replacements: pa.Table, replaced: IndexArray, key: str,
              target: int) -> tuple[list[int], list[Callable[[], pa.Table]], int]:
    """Plan the rewrite of the files holding `removed` target rows.

    `replacements` are the new versions of the `replaced` rows; each goes where
    its old row was. Small files are packed together on the way, up to `target`
    bytes. Returns the files to remove, the contents of the new files (built when
    called) and how many rows they copy.
    """
    file_of = np.searchsorted(starts, removed, side="right") - 1
    touched = np.unique(file_of).tolist()
    repl_file = np.searchsorted(starts, replaced, side="right") - 1

    def content(group: list[int]) -> Callable[[], pa.Table]:
        def build() -> pa.Table:
            parts = []
            for f in group:
                keep = np.ones(file_tables[f].num_rows, dtype=bool)
                keep[removed[file_of == f] - starts[f]] = False
                parts += [file_tables[f].filter(pa.array(keep)),
                          _take(replacements, _positions(repl_file == f)).cast(file_tables[f].schema)]
            return pa.concat_tables(parts)
        return build

    copied = sum(file_tables[f].num_rows for f in touched) - len(removed)
    return touched, [content(g) for g in _bins(files, touched, key, target)], int(copied)


def _commit(tx: Transaction, written: _Written) -> int:
    try:
        return tx.commit().version
    except CommitConflictError:
        written.discard(tx.snapshot.storage)
        raise


def merge_into(
    snapshot: Snapshot,
    data: Any,
    on: str | Sequence[str] | None = None,
    *,
    when_matched: MatchedAction = "update",
    when_not_matched: str = "insert",
    when_not_matched_by_source: str = "keep",
    watermark: Any = None,
    late: str | None = None,
    quarantine: Any = None,
    null_keys: str = "error",
    retries: int = 0,
) -> MergeResult:
    """Upsert `data` by key into the table at `snapshot`; see `Table.merge`."""
    args = _MergeArgs(when_matched, when_not_matched, when_not_matched_by_source, watermark,
                      late, quarantine, null_keys)
    _check_args(args)
    source = to_arrow_table(data)
    return retrying(snapshot, retries, lambda snap: _merge_once(snap, source, on, args))


def _merge_once(snap: Snapshot, raw: pa.Table, on_arg: str | Sequence[str] | None,
                args: _MergeArgs) -> MergeResult:
    check_writable(snap.protocol, snap.metadata)
    schema = snap.schema
    on = _key_columns(on_arg, snap.config.key, schema, raw, args.when_matched)
    clock = EventClock.of(snap, args.watermark, args.late)
    check_quarantine_arg(clock, args.quarantine)
    full_rows = (args.when_matched == "update" or args.when_not_matched == "insert"
                 or (clock is not None and clock.policy == "quarantine"))
    missing = _missing_columns(raw, schema, args.when_not_matched == "insert") if full_rows else ()
    source = _prepare_source(raw, schema, on, args.null_keys, full_rows, missing)

    by_source = args.when_not_matched_by_source == "delete"
    if by_source:
        files: list[DataFile] = list(snap.files)
        predicate: Callable[[Add], bool] = _any_file
    else:
        index = KeyIndex(source.select(list(on)), schema, snap.partition_columns)
        files = [f for f in snap.files if index.could_match(f.add)]
        predicate = index.could_match
    file_tables = snap.read_files(files)
    target = pa.concat_tables(file_tables) if file_tables else schema.empty_table()
    starts = np.cumsum([0] + [t.num_rows for t in file_tables[:-1]]).astype(np.int64)

    pairs = (frame_of(target.select(list(on))).with_row_index("__t")
             .join(frame_of(source.select(list(on))).with_row_index("__s"), on=list(on), how="inner"))
    t_idx = pairs.get_column("__t").to_numpy().astype(np.int64)
    s_idx = pairs.get_column("__s").to_numpy().astype(np.int64)

    # Each change: the target rows it replaces or removes, the source rows behind it.
    action = args.when_matched
    ch = _Changes(ins_s=_EMPTY, upd_t=_EMPTY, upd_s=_EMPTY, upd_new=schema.empty_table(),
                  del_t=_EMPTY, del_s=_EMPTY, gone_t=_EMPTY)
    unchanged = len(t_idx)
    if action == "delete":
        ch.del_t, ch.del_s, unchanged = t_idx, s_idx, 0
    elif action != "ignore":
        old = _take(target, t_idx)
        given = _take(source, s_idx).drop_columns(list(missing))
        new = (_updated_rows(given, old, schema) if action == "update"
               else _apply_matched(action, old, given, schema, on)).select(schema.names)
        new = enforce(snap.state, new, provided=raw.column_names if action == "update"
                      else list(action) if isinstance(action, Mapping) else None, new_rows=False)
        changed = ~_rows_equal(old, new)
        ch.upd_t, ch.upd_s, ch.upd_new = t_idx[changed], s_idx[changed], new.filter(pa.array(changed))
        unchanged = len(t_idx) - len(ch.upd_t)
    if args.when_not_matched == "insert":
        unmatched = np.ones(source.num_rows, dtype=bool)
        unmatched[s_idx] = False
        ch.ins_s = _positions(unmatched)
    if by_source:
        unmatched_t = np.ones(target.num_rows, dtype=bool)
        unmatched_t[t_idx] = False
        ch.gone_t = _positions(unmatched_t)
    late_rows, windows, held = _judge(ch, clock, snap, source, target, args.quarantine,
                                      action == "update")

    upd_t, upd_new = ch.upd_t, ch.upd_new
    # Only a merge that inserts has full source rows.
    inserted = _take(source, ch.ins_s).select(schema.names) if len(ch.ins_s) else schema.empty_table()
    deleted_t = np.concatenate([ch.del_t, ch.gone_t])
    inserted = enforce(snap.state, inserted, provided=raw.column_names,
                       removes=bool(len(upd_t) or len(deleted_t)))
    # Files are packed in the order of the first key column that varies within a partition.
    order_by = next((k for k in on if k not in snap.partition_columns), on[0])
    touched, rewrites, copied = _rewrites(
        files, file_tables, starts, np.concatenate([upd_t, deleted_t]), upd_new, upd_t, order_by,
        snap.config.target_file_size or REWRITE_FILE_SIZE)
    contents: list[pa.Table | Callable[[], pa.Table]] = [*rewrites, inserted]
    changes = None
    if _cdf_enabled(snap) and (len(upd_t) or copied):
        changes = _change_rows(schema, [
            (inserted, "insert"), (_take(target, upd_t), "update_preimage"),
            (upd_new, "update_postimage"), (_take(target, deleted_t), "delete")])
    written = _Written()
    try:
        written.write(snap, contents, changes)
    except BaseException:
        written.discard(snap.storage)
        raise
    now = int(time.time() * 1000)
    actions: list[Action] = [files[f].add.remove(now) for f in touched]
    actions += [*written.adds, *written.cdcs]
    rewritten = len(touched)

    version = snap.version
    if actions or (clock is not None and clock.advances):
        tx = Transaction(snap, "MERGE", _merge_parameters(on, args)).add(*actions)
        tx.read([f.add.path for f in files], predicate)
        tx.info({
                "numSourceRows": source.num_rows,
                "numTargetRowsInserted": inserted.num_rows,
                "numTargetRowsUpdated": len(upd_t),
                "numTargetRowsDeleted": len(deleted_t),
                "numTargetRowsCopied": copied,
                "numTargetRowsUnchanged": unchanged,
                "numOutputRows": inserted.num_rows + len(upd_t) + copied,
                "numTargetFilesBeforeSkipping": len(snap.files),
                "numTargetFilesAfterSkipping": len(files),
                "numTargetFilesRemoved": rewritten,
                "numTargetFilesAdded": len(written.adds),
                "numTargetChangeFilesAdded": len(written.cdcs),
            }, **(clock.commit_info(late_rows, windows) if clock is not None else {}))
        version = _commit(tx, written)
    if held is not None:
        write_quarantine(snap.log, held, version)
    return MergeResult(
        version=version, inserted=inserted.num_rows, updated=len(upd_t), deleted=len(deleted_t),
        unchanged=unchanged, late_rows=late_rows,
        revised_windows=tuple(from_micros(w) for w in sorted(windows)),
        files_read=len(files), files_rewritten=rewritten,
        quarantined=held.rows.num_rows if held is not None else 0)


@dataclass
class _Changes:
    """A merge's changes as row positions: `*_t` in the target, `*_s` in the source."""

    ins_s: IndexArray
    upd_t: IndexArray
    upd_s: IndexArray
    upd_new: pa.Table
    del_t: IndexArray
    del_s: IndexArray
    gone_t: IndexArray  # deleted because no source row matched them

    def images(self, source: pa.Table, target: pa.Table) -> list[pa.Table]:
        """Insert, update pre- and post-, matched-delete and unmatched-delete rows."""
        return [_take(source, self.ins_s), _take(target, self.upd_t), self.upd_new,
                _take(target, self.del_t), _take(target, self.gone_t)]

    def drop(self, late_ins: BoolArray, late_upd: BoolArray, late_del: BoolArray) -> None:
        """Leave out the source-driven changes the masks flag."""
        self.ins_s = self.ins_s[~late_ins]
        self.upd_t, self.upd_s = self.upd_t[~late_upd], self.upd_s[~late_upd]
        self.upd_new = self.upd_new.filter(pa.array(~late_upd))
        self.del_t, self.del_s = self.del_t[~late_del], self.del_s[~late_del]


def _judge(ch: _Changes, clock: EventClock | None, snap: Snapshot, source: pa.Table,
           target: pa.Table, quarantine: Any, hold_postimages: bool
           ) -> tuple[int, set[int], Quarantine | None]:
    """Apply the lateness policy to a merge's changes.

    A change is late when any row image it writes or retires has an event time
    behind the table watermark. Reject refuses the merge; quarantine holds back
    the source rows behind late changes (deletes of unmatched target rows have
    no source row and are applied). With `hold_postimages` a late update is held
    as the row it would write (`UPDATE SET *` of a source lacking columns fills
    them from the target). Returns the late changes committed, the windows they
    revise, and the held rows.
    """
    if clock is None or clock.watermark_us is None:
        return 0, set(), None
    images = ch.images(source, target)
    masks = [clock.late(rows) for rows in images]
    late_ins, late_upd, late_del = masks[0], masks[1] | masks[2], masks[3]
    total = int(late_ins.sum() + late_upd.sum() + late_del.sum() + masks[4].sum())
    if total and clock.policy == "reject":
        earliest = min(clock.earliest(rows, m) for rows, m in zip(images, masks, strict=True) if m.any())
        raise clock.refuse(total, earliest, "changed rows are")
    held = None
    if clock.policy == "quarantine" and (late_ins.any() or late_upd.any() or late_del.any()):
        updates = (ch.upd_new.filter(pa.array(late_upd)).cast(source.schema) if hold_postimages
                   else _take(source, ch.upd_s[late_upd]))
        rows = pa.concat_tables([_take(source, ch.ins_s[late_ins]), updates, _take(source, ch.del_s[late_del])])
        held = quarantine_for(snap, rows, clock, quarantine)
        ch.drop(late_ins, late_upd, late_del)
        images = ch.images(source, target)
        masks = [clock.late(rows) for rows in images]
    late_rows = int(masks[0].sum() + (masks[1] | masks[2]).sum() + masks[3].sum() + masks[4].sum())
    windows: set[int] = set()
    for rows, m in zip(images, masks, strict=True):
        windows |= clock.windows(rows, m)
    return late_rows, windows, held


def _any_file(add: Add) -> bool:
    return True


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


def delete_where(snapshot: Snapshot, where: pc.Expression, *, retries: int = 0) -> int:
    """Delete the rows matching `where`; see `Table.delete`."""
    if not isinstance(where, pc.Expression):
        raise InvalidArgumentError(
            f"where must be a pyarrow.compute.Expression such as pc.field('day') < date, "
            f"got {type(where).__name__}")
    return retrying(snapshot, retries, lambda snap: _delete_once(snap, where))


def _delete_once(snap: Snapshot, where: pc.Expression) -> int:
    check_writable(snap.protocol, snap.metadata)
    enforce(snap.state, removes=True)
    schema = snap.schema
    try:
        schema.empty_table().filter(where)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise SchemaMismatchError(f"cannot evaluate where={where} on the table: {e}") from e
    clock = EventClock.of(snap)
    surely = pc.coalesce(where, pa.scalar(False))
    candidates = snap.files_matching(where)
    may_keep = {f.path for f in snap.files_matching(pc.invert(surely))}
    whole = [f for f in candidates if f.path not in may_keep]
    partial = [f for f in candidates if f.path in may_keep]

    gone: list[pa.Table] = []
    removed: list[DataFile] = []
    kept_parts: list[tuple[DataFile, pa.Table]] = []
    for f, rows in zip(partial, snap.read_files(partial), strict=True):
        hit = rows.filter(where)
        if hit.num_rows == rows.num_rows:
            removed.append(f)
        elif hit.num_rows:
            kept_parts.append((f, rows.filter(pc.invert(surely))))
        if hit.num_rows:
            gone.append(hit)
    cdc = _cdf_enabled(snap) and bool(kept_parts)
    need_rows = cdc or (clock is not None and clock.watermark_us is not None)
    whole_read = [f for f in whole if need_rows or f.num_records is None]
    gone += snap.read_files(whole_read)
    count = sum(t.num_rows for t in gone) + sum(
        f.num_records or 0 for f in whole if f not in whole_read)
    removed += whole
    if count == 0:
        return 0

    gone_rows = pa.concat_tables(gone) if gone else schema.empty_table()
    written = _Written()
    try:
        written.write(snap, [kept for _, kept in kept_parts],
                      _change_rows(schema, [(gone_rows, "delete")]) if cdc else None)
    except BaseException:
        written.discard(snap.storage)
        raise
    now = int(time.time() * 1000)
    removed += [f for f, _ in kept_parts]
    actions: list[Action] = [f.add.remove(now) for f in removed]
    actions += [*written.adds, *written.cdcs]
    copied = sum(kept.num_rows for _, kept in kept_parts)
    info: dict[str, Any] = {}
    if clock is not None:
        mask = clock.late(gone_rows)
        info = clock.commit_info(int(mask.sum()), clock.windows(gone_rows, mask))
    tx = Transaction(snap, "DELETE", {"predicate": str(where)}).add(*actions)
    tx.read([f.add.path for f in candidates], lambda add: _may_hold(snap, add, where))
    tx.info({"numDeletedRows": count, "numRemovedFiles": len(removed),
             "numAddedFiles": len(written.adds), "numCopiedRows": copied,
             "numAddedChangeFiles": len(written.cdcs)}, **info)
    _commit(tx, written)
    return int(count)


def _may_hold(snap: Snapshot, add: Add, where: pc.Expression) -> bool:
    """Whether a file added by a concurrent writer could hold rows `where` matches."""
    try:
        alone = Snapshot(snap.log, dataclasses.replace(snap.state, files={add.path: add}))
        return bool(alone.files_matching(where))
    except (LakeflowError, pa.ArrowException):
        return True


__all__ = ["KeyIndex", "MatchedAction", "MergeResult", "delete_where", "merge_into"]
