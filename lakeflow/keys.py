"""Declared keys: an append to a keyed table never repeats a key.

A table created with `key=` promises one row per key (merges and keyed diffs
rely on it). An append checks its rows before writing anything: a key twice in
the batch, or a key the table already holds, is a `DuplicateKeyError`. Only the
files that may hold one of the batch's keys are read, by the same pruning as a
merge (partition values and min/max statistics of the key columns), and of
those only the key columns, through the snapshot scan. A null is a key value
like any other (as in keyed diffs); a batch with a null key reads the key
columns of every file.

The check is part of the commit's read set: the files read, and a predicate
for files a concurrent writer adds that could hold one of the keys. Such a
commit makes the append conflict; the append then checks again against the
new version and retries, so of two concurrent appends of one new key exactly
one commits.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from lakeflow.actions import Add
from lakeflow.column_mapping import ColumnMapping
from lakeflow.errors import DuplicateKeyError, LakeflowError
from lakeflow.partitions import parse_partition_value
from lakeflow.snapshot import DataFile, Snapshot, stat_bounds

SAMPLE_KEYS = 3
# Each retry follows a commit that may hold the append's keys: it loses only to real progress.
KEY_CONFLICT_RETRIES = 100


def frame_of(table: pa.Table) -> pl.DataFrame:
    """`table` as a polars DataFrame."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


class KeyIndex:
    """The source keys, grouped by partition value and sorted, for file pruning.

    `could_match(add)` is true when some source key falls in the file's partition
    and within the min/max statistics of every key column: the file may hold a
    matching row. It decides both which files a merge (or an append to a keyed
    table) reads and which files added by a concurrent writer conflict with it.
    Keys must not be null.
    """

    def __init__(self, keys: pa.Table, schema: pa.Schema, partition_columns: Sequence[str],
                 mapping: ColumnMapping) -> None:
        self._schema, self._mapping = schema, mapping
        self._part = [k for k in keys.column_names if k in partition_columns]
        self._data = [k for k in keys.column_names if k not in partition_columns]
        frame = frame_of(keys)
        if self._data:
            frame = frame.sort(self._data[0])
        self._groups: dict[tuple[Any, ...], pl.DataFrame] = (
            {tuple(k): g for k, g in frame.partition_by(self._part, as_dict=True,
                                                         maintain_order=True).items()}
            if self._part else {(): frame})
        # The sorted first key column as Python values: a bisect per file costs microseconds.
        self._sorted = {k: g.get_column(self._data[0]).to_list() for k, g in self._groups.items()
                        } if self._data else {}
        self._nan = bool(self._data) and frame.get_column(self._data[0]).dtype.is_float() and bool(
            frame.get_column(self._data[0]).is_nan().any())

    def could_match(self, add: Add) -> bool:
        """Whether the file of `add` may hold one of the keys."""
        try:
            return self._could_match(add)
        except (LakeflowError, ValueError, TypeError, ArithmeticError, pl.exceptions.PolarsError):
            return True  # when in doubt the file is read, never skipped

    def _could_match(self, add: Add) -> bool:
        logical = self._mapping.logical_keys
        stored = logical(add.partition_values)
        part = tuple(parse_partition_value(stored.get(c), self._schema.field(c).type, c) for c in self._part)
        rows = self._groups.get(part)
        if rows is None:
            return False
        stats = add.parsed_stats() or {}
        mins, maxs = logical(stats.get("minValues") or {}), logical(stats.get("maxValues") or {})
        for i, c in enumerate(self._data):
            bounds = (stat_bounds(self._schema.field(c).type, mins[c], maxs[c])
                      if c in mins and c in maxs else None)
            if bounds is None:
                continue
            lo, hi = bounds[0].as_py(), bounds[1].as_py()
            if i == 0:
                if self._nan:
                    continue  # NaN does not order: no binary search
                values = self._sorted[part]
                start = bisect.bisect_left(values, lo)
                rows = rows.slice(start, bisect.bisect_right(values, hi) - start)
            else:
                rows = rows.filter(pl.col(c).is_between(lo, hi))
            if rows.height == 0:
                return False
        return rows.height > 0



@dataclass(frozen=True)
class KeyReads:
    """What a key check read, for the commit's conflict detection.

    Attributes:
        files: paths of the files whose key columns were read.
        could_match: whether a file added by a concurrent writer could hold a
            key of the batch.
    """

    files: frozenset[str]
    could_match: Callable[[Add], bool]


def _samples(keys: pl.DataFrame) -> str:
    return ", ".join(str(row) for row in keys.head(SAMPLE_KEYS).iter_rows(named=True))


def any_file(add: Add) -> bool:
    """A file test that holds for every file (what a read of the whole table conflicts with)."""
    return True


def check_unique(rows: pa.Table, key: Sequence[str]) -> pl.DataFrame:
    """The key columns of `rows` as a frame, refusing them if a key repeats.

    Raises:
        DuplicateKeyError: naming a few of the repeated keys.
    """
    on = list(key)
    frame = pl.DataFrame(rows.select(on))
    repeated = frame.filter(frame.is_duplicated()).unique(maintain_order=True)
    if repeated.height:
        raise DuplicateKeyError(
            f"{repeated.height} key(s) of {on} appear more than once in the written rows, e.g. "
            f"{_samples(repeated)}; the table's key must be unique: deduplicate the rows, nothing "
            "was written")
    return frame


def key_candidates(snap: Snapshot, keys: pa.Table) -> tuple[list[DataFile], Callable[[Add], bool]]:
    """The files of `snap` that may hold one of `keys`, and the file test that chose them.

    The test is also what a commit records as read: a file a concurrent writer adds
    conflicts when it passes. A null key cannot be pruned by statistics: every file.
    """
    nulls = any(keys.column(c).null_count for c in keys.column_names)
    could_match = any_file if nulls else KeyIndex(keys, snap.schema, snap.partition_columns,
                                                          snap.column_mapping).could_match
    return [f for f in snap.files if could_match(f.add)], could_match


def check_new_keys(snap: Snapshot, rows: pa.Table, key: Sequence[str]) -> KeyReads:
    """Refuse `rows` (conformed to the table schema) if a key repeats in them or in the table.

    Raises:
        DuplicateKeyError: naming a few of the repeated keys.
    """
    on = list(key)
    keys = rows.select(on)
    frame = check_unique(rows, on)
    candidates, could_match = key_candidates(snap, keys)
    if candidates:
        existing = pl.DataFrame(pa.concat_tables(snap.read_files(candidates, columns=on)))
        # Probing the table's keys against the batch's (the smaller side is hashed).
        found = existing.join(frame, on=on, how="semi", nulls_equal=True).unique(maintain_order=True)
        if found.height:
            raise DuplicateKeyError(
                f"{found.height} key(s) of {on} are already in the table at version {snap.version}, "
                f"e.g. {_samples(found)}; the table's key must be unique: use merge() to update "
                "those rows, or leave them out; nothing was written")
    return KeyReads(frozenset(f.add.path for f in candidates), could_match)


__all__ = ["KEY_CONFLICT_RETRIES", "KeyIndex", "KeyReads", "any_file", "check_new_keys", "check_unique", "frame_of",
           "key_candidates"]
