"""The active files (and tombstones) of a table state: Arrow columns plus a small overlay of objects.

A checkpoint holds tens of thousands of `add` rows; decoding each into an `Add`
object cost more than the rest of opening a table. A `FileSet` keeps the
checkpoint's rows as an Arrow table (the *base*; an open reads only its paths,
the other columns when first needed) and the commits after it as a dict of
`Add` objects (the *overlay*), plus the base paths those commits replaced or
removed. It is a read-only mapping of path to `Add`: `len`, `in` and `get`
decode nothing or one row; iterating the values decodes the base in one
column-wise pass, once per base (later states share it); `by_path` serves scans
columns in path order without building objects for the files pruning drops.
`Tombstones` are the same mapping of the checkpoint's `remove` rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence, ValuesView
from typing import Any, Generic, TypeVar, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Add, Remove, as_map
from lakeflow.errors import CorruptLogError

_STR_MAP = pa.map_(pa.string(), pa.string())
DV_TYPE = pa.struct([("storageType", pa.string()), ("pathOrInlineDv", pa.string()), ("offset", pa.int32()),
                     ("sizeInBytes", pa.int32()), ("cardinality", pa.int64())])
# The columns of a base: an `add` action's fields as a checkpoint stores them.
ADD_SCHEMA = pa.schema([("path", pa.string()), ("partitionValues", _STR_MAP), ("size", pa.int64()),
                        ("modificationTime", pa.int64()), ("dataChange", pa.bool_()),
                        ("stats", pa.string()), ("tags", _STR_MAP), ("deletionVector", DV_TYPE),
                        ("baseRowId", pa.int64()), ("defaultRowCommitVersion", pa.int64())])


def _conform(column: pa.Array, typ: pa.DataType) -> pa.Array:
    """`column` as `typ`; structs field by field (by name: writers order or omit fields)."""
    if column.type == typ:
        return column
    if pa.types.is_struct(typ) and pa.types.is_struct(column.type):
        names = {column.type.field(i).name: i for i in range(column.type.num_fields)}
        children = [_conform(column.field(names[f.name]), f.type) if f.name in names
                    else pa.nulls(len(column), f.type) for f in typ]
        return pa.StructArray.from_arrays(children, fields=list(typ), mask=column.is_null())
    return column.cast(typ)


def add_table(column: pa.StructArray) -> pa.Table:
    """The valid rows of a checkpoint's `add` struct column as a table of `ADD_SCHEMA`.

    Raises:
        ValueError: the column is no struct, or its paths are not strings.
        pa.ArrowException: a field cannot be read as its Delta type.
    """
    if not pa.types.is_struct(column.type):
        raise ValueError(f"add is a {column.type}, not a struct")
    names = {column.type.field(i).name: i for i in range(column.type.num_fields)}
    path = column.type.field(names["path"]).type if "path" in names else pa.string()
    if not (pa.types.is_string(path) or pa.types.is_large_string(path)):
        raise ValueError(f"add.path is a {path}, not a string")
    arrays = [_conform(column.field(names[f.name]), f.type) if f.name in names
              else pa.nulls(len(column), f.type) for f in ADD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=ADD_SCHEMA)


# The fields of a `remove` action `Remove` reads, as a checkpoint stores them.
REMOVE_TYPE = pa.struct([("path", pa.string()), ("deletionTimestamp", pa.int64()), ("dataChange", pa.bool_()),
                         ("extendedFileMetadata", pa.bool_()), ("partitionValues", _STR_MAP),
                         ("size", pa.int64()), ("stats", pa.string()), ("tags", _STR_MAP),
                         ("deletionVector", DV_TYPE)])


def remove_table(column: pa.StructArray) -> pa.Table:
    """The valid rows of a checkpoint's `remove` struct column: `path`, and `remove` as `REMOVE_TYPE`.

    Raises:
        ValueError: the column is no struct.
        pa.ArrowException: a field cannot be read as its Delta type.
    """
    if not pa.types.is_struct(column.type):
        raise ValueError(f"remove is a {column.type}, not a struct")
    conformed = _conform(column, REMOVE_TYPE)
    return pa.table({"path": conformed.field("path"), "remove": conformed})


def decode_removes(table: pa.Table) -> list[Remove]:
    """`Remove` objects of the rows of a `remove_table`.

    Raises:
        ValueError, KeyError, TypeError: a row is no valid remove action.
    """
    return [Remove.from_json(row) for row in table.column("remove").to_pylist()]


def decode_adds(table: pa.Table) -> list[Add]:
    """`Add` objects of the rows of an `ADD_SCHEMA` table, decoded column by column."""
    paths, pvs, sizes, mtimes, changes, stats, tags, dvs, row_ids, row_versions = (
        table.column(f.name).to_pylist() for f in ADD_SCHEMA)
    return [
        Add(path=paths[i], partition_values=as_map(pvs[i]), size=sizes[i] or 0,
            modification_time=mtimes[i] or 0, data_change=changes[i] is not False, stats=stats[i],
            tags=as_map(tags[i]) or None, deletion_vector=dvs[i], base_row_id=row_ids[i],
            default_row_commit_version=row_versions[i])
        for i in range(table.num_rows)
    ]


def encode_adds(adds: Sequence[Add]) -> pa.Table:
    """An `ADD_SCHEMA` table of `adds` (the inverse of `decode_adds`)."""
    return pa.Table.from_pydict({
        "path": [a.path for a in adds],
        "partitionValues": [list(a.partition_values.items()) for a in adds],
        "size": [a.size for a in adds],
        "modificationTime": [a.modification_time for a in adds],
        "dataChange": [a.data_change for a in adds],
        "stats": [a.stats for a in adds],
        "tags": [list(a.tags.items()) if a.tags else None for a in adds],
        "deletionVector": [dict(a.deletion_vector) if a.deletion_vector else None for a in adds],
        "baseRowId": [a.base_row_id for a in adds],
        "defaultRowCommitVersion": [a.default_row_commit_version for a in adds],
    }, schema=ADD_SCHEMA)


A = TypeVar("A", bound=Add | Remove)
_ONE_BY_ONE = 64  # rows decoded one at a time before a base is decoded whole


RowsLoader = Callable[[], pa.Table]  # reads a base's rows whole when first needed
# Reads a base's `stats_parsed` of the physical columns given (leaf types as given), or
# None where the checkpoint has none.
StatsLoader = Callable[[Mapping[str, pa.DataType]], pa.StructArray | None]


class _Base(Generic[A]):
    """A checkpoint's rows of one action, with what was decoded of them (shared by the states after it).

    Of a path's rows the last counts. With `load`, `rows` need hold only the
    paths: the other columns (statistics are most of a checkpoint's bytes) are
    read when a row is decoded or a column asked for.
    """

    def __init__(self, rows: pa.Table, decode: Callable[[pa.Table], list[A]], load: RowsLoader | None,
                 parsed: StatsLoader | None = None) -> None:
        self._rows = rows
        self._decode = decode
        self._load = load
        self._parsed = parsed
        self._decoded: dict[int, A] = {}
        self._all: list[A] | None = None

    @functools.cached_property
    def _keep(self) -> pa.Array | None:
        """The rows to keep (the last of each path), or None for all."""
        paths = self._rows.column("path").combine_chunks()
        if _increasing(paths) or pc.count_distinct(paths).as_py() == len(paths):
            return None
        last = {p: i for i, p in enumerate(paths.to_pylist())}
        return pa.array(sorted(last.values()), pa.int64())

    @functools.cached_property
    def paths(self) -> pa.Array:
        """The path of each row."""
        paths = self._rows.column("path").combine_chunks()
        return paths if self._keep is None else paths.take(self._keep)

    @functools.cached_property
    def table(self) -> pa.Table:
        """The rows whole (e.g. an `ADD_SCHEMA` table)."""
        rows = self._load() if self._load is not None else self._rows
        if rows.num_rows != self._rows.num_rows:
            raise CorruptLogError(f"a checkpoint has {self._rows.num_rows} rows of paths, and "
                                  f"{rows.num_rows} when read whole; it is damaged")
        return rows if self._keep is None else rows.take(self._keep)

    def parsed_stats(self, columns: Mapping[str, pa.DataType]) -> pa.StructArray | None:
        """The rows' `stats_parsed` of `columns` (physical name: leaf type), None: not in the checkpoint."""
        stats = self._parsed(columns) if self._parsed is not None else None
        if stats is None:
            return None
        if len(stats) != self._rows.num_rows:
            raise CorruptLogError(f"a checkpoint has {self._rows.num_rows} rows of paths, and "
                                  f"{len(stats)} of stats_parsed; it is damaged")
        return stats if self._keep is None else stats.take(self._keep)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Row of each path (built on the first lookup by path)."""
        return {p: i for i, p in enumerate(self.paths.to_pylist())}

    def one(self, row: int) -> A:
        if self._all is not None:
            return self._all[row]
        found = self._decoded.get(row)
        if found is None:
            if len(self._decoded) >= _ONE_BY_ONE:  # many lookups (e.g. dict(files)): decode all
                return self.all()[row]
            found = self._decoded[row] = self._decode(self.table.slice(row, 1))[0]
        return found

    def all(self) -> list[A]:
        if self._all is None:
            self._all = self._decode(self.table)
            for row, add in self._decoded.items():  # keep the objects already handed out
                self._all[row] = add
            self._decoded = {}
        return self._all


def _increasing(paths: pa.Array) -> bool:
    """Whether `paths` are strictly increasing (sorted and unique: a lakeflow checkpoint's are)."""
    n = len(paths)
    return n < 2 or bool(pc.all(pc.less(paths.slice(0, n - 1), paths.slice(1))).as_py())


class ActionSet(Mapping[str, A]):
    """An immutable mapping of path to action: Arrow base rows, less `masked` paths, plus `overlay`.

    Derive the next state with `edit`.
    """

    def __init__(self, base: _Base[A] | None, masked: frozenset[str], overlay: Mapping[str, A]) -> None:
        self._base = base
        self._masked = masked
        self._overlay = overlay

    def edit(self) -> Edit[A]:
        """A mutable copy of the changes on top of the base, to replay commits into."""
        return Edit(type(self), self._base, set(self._masked), dict(self._overlay))

    # ---- the base rows still active ---------------------------------------------------

    @functools.cached_property
    def _live(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Positions of the base rows not masked by a later commit."""
        if self._base is None:
            return np.arange(0, dtype=np.int64)
        n = len(self._base.paths)
        if not self._masked:
            return np.arange(n, dtype=np.int64)
        hit = pc.is_in(self._base.paths, value_set=pa.array(list(self._masked), pa.string()))
        return np.flatnonzero(~hit.to_numpy(zero_copy_only=False)).astype(np.int64)

    def _base_row(self, path: str) -> int | None:
        if self._base is None or path in self._masked:
            return None
        return self._base.index.get(path)

    # ---- the mapping ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._live) + len(self._overlay)

    def __bool__(self) -> bool:
        if self._overlay or (self._base is not None and len(self._base.paths) > len(self._masked)):
            return True
        return len(self) > 0

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self._overlay or self._base_row(path) is not None)

    def __getitem__(self, path: str) -> A:
        found = self._overlay.get(path)
        if found is not None:
            return found
        row = self._base_row(path) if isinstance(path, str) else None
        if row is None:
            raise KeyError(path)
        assert self._base is not None
        return self._base.one(row)

    def __iter__(self) -> Iterator[str]:
        if self._base is not None:
            paths = self._base.paths
            yield from (paths.take(pa.array(self._live)) if self._masked else paths).to_pylist()
        yield from self._overlay

    def values(self) -> _Values[A]:
        """The actions, the base's decoded in one pass."""
        return _Values(self)

    def items(self) -> _Items[A]:
        """(path, action) pairs, the base's decoded in one pass."""
        return _Items(self)

    def _actions(self) -> Iterator[A]:
        if self._base is not None:
            actions = self._base.all()
            yield from (actions[i] for i in self._live) if self._masked else actions
        yield from self._overlay.values()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} entries, {len(self._overlay)} after the checkpoint)"


class FileSet(ActionSet[Add]):
    """A state's active files. Build with `FileSet.of` (objects) or `FileSet.from_table` (a checkpoint's rows)."""

    @classmethod
    def of(cls, files: Mapping[str, Add]) -> FileSet:
        """A file set of `Add` objects (no base); a `FileSet` is returned as it is."""
        return files if isinstance(files, FileSet) else cls(None, frozenset(), dict(files))

    @classmethod
    def from_table(cls, table: pa.Table, load: RowsLoader | None = None,
                   parsed: StatsLoader | None = None) -> FileSet:
        """A file set of the rows of an `ADD_SCHEMA` table (of a path's rows, the last counts).

        Args:
            table: the rows (with `load`, only their paths count).
            load: reads the rows whole, as an `ADD_SCHEMA` table, when first needed.
            parsed: reads columns of the rows' `stats_parsed` (pruning without the JSON).
        """
        return cls(_Base(table, decode_adds, load, parsed) if table.num_rows else None, frozenset(), {})

    def table(self) -> pa.Table:
        """The active files as an `ADD_SCHEMA` table (base rows first, then later commits' adds)."""
        overlay = encode_adds(list(self._overlay.values()))
        if self._base is None:
            return overlay
        base = self._base.table.take(pa.array(self._live)) if self._masked else self._base.table
        return pa.concat_tables([base, overlay]).combine_chunks()

    def by_path(self) -> SortedFiles:
        """The active files sorted by path, as columns and lazily built `Add` objects."""
        return self._sorted

    @functools.cached_property
    def _sorted(self) -> SortedFiles:
        return SortedFiles(self)


class Tombstones(ActionSet[Remove]):
    """A state's removed files. Build with `Tombstones.of` (objects) or `Tombstones.from_table`."""

    @classmethod
    def of(cls, removes: Mapping[str, Remove]) -> Tombstones:
        """Tombstones of `Remove` objects (no base); `Tombstones` are returned as they are."""
        return removes if isinstance(removes, Tombstones) else cls(None, frozenset(), dict(removes))

    @classmethod
    def from_table(cls, table: pa.Table, decode: Callable[[pa.Table], list[Remove]],
                   masked: frozenset[str] = frozenset()) -> Tombstones:
        """Tombstones of the rows of `table` (a `path` column, and what `decode` reads), less `masked`."""
        return cls(_Base(table, decode, None) if table.num_rows else None, masked, {})


class _Values(ValuesView[A]):
    """An action set's values, decoded in one pass."""

    _mapping: ActionSet[A]

    def __iter__(self) -> Iterator[A]:
        return self._mapping._actions()


class _Items(ItemsView[str, A]):
    """An action set's items, decoded in one pass."""

    _mapping: ActionSet[A]

    def __iter__(self) -> Iterator[tuple[str, A]]:
        return zip(iter(self._mapping), self._mapping._actions(), strict=True)


class SortedFiles(Sequence[Add]):
    """A file set's `Add`s in path order: columns for vectorized work, objects built on demand."""

    def __init__(self, files: FileSet) -> None:
        base, live = files._base, files._live
        self._files = files
        self._columns: pa.Table | None = None
        self._base = base
        self._live = live
        self._overlay = list(files._overlay.values())
        self._n_base = len(live)
        parts = [] if base is None else [base.paths.take(pa.array(live)) if files._masked else base.paths]
        parts.append(pa.array([a.path for a in self._overlay], pa.string()))
        self.paths: pa.Array = pa.concat_arrays(parts)
        self._order = None if _increasing(self.paths) else pc.sort_indices(self.paths).to_numpy()
        if self._order is not None:
            self.paths = self.paths.take(pa.array(self._order))

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> Add: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Add]: ...

    def __getitem__(self, i: int | slice) -> Add | Sequence[Add]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = int(self._order[i]) if self._order is not None else range(len(self))[i]
        if j >= self._n_base:
            return self._overlay[j - self._n_base]
        assert self._base is not None
        return self._base.one(int(self._live[j]))

    def __iter__(self) -> Iterator[Add]:
        unordered = list(self._unordered())
        return iter(unordered) if self._order is None else (unordered[j] for j in self._order)

    def _unordered(self) -> Iterator[Add]:
        if self._base is not None:
            adds = self._base.all()
            yield from (adds[i] for i in self._live)
        yield from self._overlay

    def _column(self, name: str) -> pa.Array:
        if self._columns is None:
            self._columns = self._files.table()
        column = self._columns.column(name).combine_chunks()
        return column if self._order is None else column.take(pa.array(self._order))

    def stats(self) -> pa.StringArray:
        """Each file's `stats` JSON (null where absent), in path order."""
        column: pa.StringArray = self._column("stats")
        return column

    def parsed_stats(self, columns: Mapping[str, pa.DataType]) -> pa.StructArray | None:
        """The checkpoint's `stats_parsed` of `columns` for the files of the base, in base order.

        With `overlay_stats` and `in_path_order` it gives every file's statistics
        without the base's JSON. None: the checkpoint has no `stats_parsed`.
        """
        if self._base is None:
            return None
        stats = self._base.parsed_stats(columns)
        return stats if stats is None or self._n_base == len(self._base.paths) else stats.take(
            pa.array(self._live))

    def overlay_stats(self) -> list[str | None]:
        """The `stats` JSON of the files added after the checkpoint (`in_path_order`'s second part)."""
        return [a.stats for a in self._overlay]

    def overlay(self) -> list[Add]:
        """The files added after the checkpoint, in `overlay_stats` order."""
        return list(self._overlay)

    def in_path_order(self, base: pa.Array, overlay: pa.Array) -> pa.Array:
        """Per-file values of the base files (base order) and the later ones, in path order."""
        joined = pa.concat_arrays([base, overlay])
        return joined if self._order is None else joined.take(pa.array(self._order))

    def partition_values(self) -> list[dict[str, str | None]]:
        """Each file's raw `partitionValues` (physical keys), in path order."""
        return [as_map(v) for v in self._column("partitionValues").to_pylist()]


class Edit(Generic[A]):
    """The changes of commits replayed on top of an action set; `build` (once) makes the next one."""

    def __init__(self, kind: type[ActionSet[A]], base: _Base[A] | None, masked: set[str],
                 overlay: dict[str, A]) -> None:
        self._kind = kind
        self._base = base
        self._masked = masked
        self._overlay = overlay

    def put(self, action: A) -> None:
        """Make `action` the entry of its path."""
        self._overlay[action.path] = action
        if self._base is not None:
            self._masked.add(action.path)

    def drop(self, path: str) -> None:
        """Make `path` absent."""
        self._overlay.pop(path, None)
        if self._base is not None:
            self._masked.add(path)

    def build(self) -> ActionSet[A]:
        """The action set after the changes."""
        return self._kind(self._base, frozenset(self._masked), self._overlay)
