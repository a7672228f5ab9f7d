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

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from lakeflow.actions import Add
from lakeflow.errors import DuplicateKeyError
from lakeflow.merge import KeyIndex
from lakeflow.snapshot import Snapshot

SAMPLE_KEYS = 3
# Each retry follows a commit that may hold the append's keys: it loses only to real progress.
KEY_CONFLICT_RETRIES = 100


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


def _any_file(add: Add) -> bool:
    return True


def check_new_keys(snap: Snapshot, rows: pa.Table, key: Sequence[str]) -> KeyReads:
    """Refuse `rows` (conformed to the table schema) if a key repeats in them or in the table.

    Raises:
        DuplicateKeyError: naming a few of the repeated keys.
    """
    on = list(key)
    keys = rows.select(on)
    frame = pl.DataFrame(keys)
    repeated = frame.filter(frame.is_duplicated()).unique(maintain_order=True)
    if repeated.height:
        raise DuplicateKeyError(
            f"{repeated.height} key(s) of {on} appear more than once in the appended rows, e.g. "
            f"{_samples(repeated)}; the table's key must be unique: deduplicate the rows, nothing "
            "was written")
    nulls = any(keys.column(c).null_count for c in on)
    could_match = _any_file if nulls else KeyIndex(keys, snap.schema, snap.partition_columns).could_match
    files = {f.add.path: f.add for f in snap.files if could_match(f.add)}
    if files:
        # The candidates alone, scanned like any snapshot (deletion vectors, column mapping).
        candidates = Snapshot(snap.storage, dataclasses.replace(snap.state, files=files))
        existing = pl.DataFrame(candidates.to_arrow(columns=on))
        # Probing the table's keys against the batch's (the smaller side is hashed).
        found = existing.join(frame, on=on, how="semi", nulls_equal=True).unique(maintain_order=True)
        if found.height:
            raise DuplicateKeyError(
                f"{found.height} key(s) of {on} are already in the table at version {snap.version}, "
                f"e.g. {_samples(found)}; the table's key must be unique: use merge() to update "
                "those rows, or leave them out; nothing was written")
    return KeyReads(frozenset(files), could_match)


__all__ = ["KEY_CONFLICT_RETRIES", "KeyReads", "check_new_keys"]
