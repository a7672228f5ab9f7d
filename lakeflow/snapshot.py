"""An immutable table state at one version, and how to scan it.

Scans go through a pyarrow dataset built from the log's file list. Each file
carries a *guarantee* expression: its partition values, and for columns without
nulls the [min, max] range from its statistics. pyarrow simplifies the user's
filter against each guarantee and never opens files where it becomes false, so
partition pruning and stats skipping come from one mechanism.

Files with a deletion vector, and tables with column mapping, cannot be read as
plain dataset fragments: `Scan` prunes them by the same guarantees, then reads
each file itself, drops deleted rows and renames physical columns to logical.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lakeflow import pruning
from lakeflow.actions import Add, Metadata, Protocol
from lakeflow.column_mapping import NO_MAPPING, ColumnMapping, mapping_mode
from lakeflow.config import TableConfig
from lakeflow.deletion_vectors import DeletionVector, RowIndexes, RowSelection, physical_rows
from lakeflow.errors import (
    CorruptLogError,
    DataFileNotFoundError,
    InvalidArgumentError,
    LakeflowError,
    SchemaMismatchError,
    StorageError,
)
from lakeflow.file_set import FileSet, SortedFiles
from lakeflow.log import TableState, check_data_path, check_readable, check_schema
from lakeflow.log_reader import LogReader, from_ms
from lakeflow.partitions import parse_partition_value, temporal_bounds
from lakeflow.schema import delta_to_arrow, widened_from
from lakeflow.storage import Storage, open_storage
from lakeflow.variant import check_unshredded, has_variant

if TYPE_CHECKING:
    import polars as pl

_SCAN_CACHE_SIZE = 8
_DATASET_BOUNDS_COLUMNS = 32  # Delta's default delta.dataSkippingNumIndexedCols
_HEAD_BATCH_ROWS = 64 * 1024  # a peek (`head`) reads a file this many rows at a time
SCAN_TASK_BYTES = 128 * 1024 * 1024  # data files grouped into one distributed read task

# No pre-buffering: local files are read natively and object-store files arrive whole
# in memory (`storage.arrow_fs`), so coalesced read-ahead only costs CPU (~1/6 of a scan).
PARQUET_FORMAT = ds.ParquetFileFormat(
    read_options=ds.ParquetReadOptions(coerce_int96_timestamp_unit="us"),
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False),
)


@dataclass(frozen=True)
class DataFile:
    """One data file of a snapshot: path relative to the table root (decoded).

    Attributes:
        path: the file, relative to the table root.
        size: its size in bytes.
        partition_values: typed values of the partition columns (logical names):
            Python values, or Arrow scalars for dates and timestamps outside the
            years 1-9999.
        num_records: rows the file contributes (deleted rows not counted), if
            the log records it.
        add: the `add` action.
        deletion_vector: the rows soft-deleted from the file, if any.
    """

    path: str
    size: int
    partition_values: Mapping[str, Any]
    num_records: int | None
    add: Add
    deletion_vector: DeletionVector | None = None

    @property
    def identity(self) -> tuple[str, str | None]:
        """The logical file: (path, deletion vector id); the same path with another vector holds other rows."""
        return self.path, self.deletion_vector.unique_id if self.deletion_vector is not None else None


@dataclass(frozen=True)
class Snapshot:
    """The table as of one version. Immutable: reading it never changes the table.

    Attributes:
        log: the reader of the table's log (commits, timestamps, other versions).
        state: the replayed log state at this version.
    """

    log: LogReader
    state: TableState

    def __post_init__(self) -> None:
        check_readable(self.state.protocol, self.state.metadata)
        check_schema(self.state)

    @property
    def storage(self) -> Storage:
        """The table's storage."""
        return self.log.storage

    @functools.cached_property
    def timestamp(self) -> dt.datetime | None:
        """When this version was committed (None: its commit is gone from the log)."""
        return from_ms(self.log.commit_ts(self.state.version))

    @functools.cached_property
    def config(self) -> TableConfig:
        """The table's properties at this version, decoded."""
        return TableConfig.of(self.state.metadata)

    def at(self, version: int) -> Snapshot:
        """The snapshot of another version of the same table.

        Raises:
            VersionNotFoundError: the version is not in the log.
        """
        return self if version == self.version else Snapshot(self.log, self.log.load(version))

    def latest(self) -> Snapshot:
        """The snapshot of the newest version, read now (this one does not change)."""
        return Snapshot(self.log, self.log.refresh())

    @property
    def version(self) -> int:
        """The version this snapshot reflects."""
        return self.state.version

    @property
    def metadata(self) -> Metadata:
        """The table's metaData action at this version."""
        return self.state.metadata

    @property
    def protocol(self) -> Protocol:
        """The table's protocol action at this version."""
        return self.state.protocol

    @functools.cached_property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the table at this version (Delta column order, logical names)."""
        return delta_to_arrow(self.state.metadata.schema_string)

    @functools.cached_property
    def column_mapping(self) -> ColumnMapping:
        """How logical columns are named in the data files and the log."""
        return ColumnMapping.of(self.state.metadata.schema_string,
                                mapping_mode(self.state.metadata))

    @property
    def partition_columns(self) -> tuple[str, ...]:
        """Partition columns, in Delta order."""
        return self.state.metadata.partition_columns

    @property
    def properties(self) -> Mapping[str, str]:
        """The table configuration at this version."""
        return self.state.metadata.configuration

    @functools.cached_property
    def _adds(self) -> SortedFiles:
        """The active files' `add` actions, sorted by path (the order of `files`), built on demand."""
        return FileSet.of(self.state.files).by_path()

    def _data_file(self, add: Add) -> DataFile:
        """The `DataFile` of one active file (its path checked, values typed)."""
        where = f"version {self.version}"
        path = check_data_path(add.path, where)
        dv = (DeletionVector.parse(add.deletion_vector, f"the add of {path} ({where})")
              if add.deletion_vector else None)
        values = typed_partition_values(self.column_mapping.logical_keys(add.partition_values),
                                        self.schema, self.partition_columns)
        records = add.num_records()
        if records is not None and dv is not None:
            records -= dv.cardinality
        return DataFile(path, add.size, values, records, add, dv)

    @functools.cached_property
    def files(self) -> tuple[DataFile, ...]:
        """The active data files, sorted by path."""
        return tuple(self._data_file(add) for add in self._adds)

    @functools.cached_property
    def num_rows(self) -> int:
        """Row count from the files' statistics (Parquet footers where stats are missing)."""
        total = 0
        for f in self.files:
            if f.num_records is None:
                fs, root = self.storage.arrow_fs()
                with reading_data(self.storage, [f.path], one_file=True), \
                        fs.open_input_file(f"{root}/{f.path}") as fh:
                    total += pq.ParquetFile(fh).metadata.num_rows
                total -= f.deletion_vector.cardinality if f.deletion_vector else 0
            else:
                total += f.num_records
        return total

    def _bounds(self, f: DataFile, names: frozenset[str]) -> pc.Expression:
        """What the file's statistics say about the (non-partition) columns in `names`."""
        schema = self.schema
        terms = []
        stats = f.add.parsed_stats() or {}
        mins, maxs, nulls = (self.column_mapping.logical_keys(stats.get(k) or {})
                             for k in ("minValues", "maxValues", "nullCount"))
        for name in mins.keys() & maxs.keys() & names:
            if name in f.partition_values or schema.get_field_index(name) < 0:
                continue
            if nulls.get(name) != 0:
                continue  # a range guarantee would wrongly exclude null rows
            bounds = stat_bounds(schema.field(name).type, mins[name], maxs[name])
            if bounds is not None and "float" in self._widened.get(name, ()):  # now a double
                bounds = _float32_tolerant(*bounds)
            if bounds is not None:
                lo, hi = bounds
                terms.append((pc.field(name) >= lo) & (pc.field(name) <= hi))
        return functools.reduce(lambda a, b: a & b, terms, pc.scalar(True))

    @functools.cached_property
    def _widened(self) -> dict[str, tuple[str, ...]]:
        """Columns whose type was widened, with their earlier types (files may hold those)."""
        text = self.state.metadata.schema_string
        return widened_from(text) if "delta.typeChanges" in text else {}

    @functools.cached_property
    def _scans(self) -> dict[frozenset[str], Scan]:
        """Scans by the columns their bounds cover (a snapshot is immutable, so they keep)."""
        return {}

    def _scan(self, names: frozenset[str]) -> Scan:
        """A scan whose files carry statistics bounds for the columns in `names` only.

        pyarrow simplifies every file's guarantee against the scan's projection at a
        cost quadratic in the guarantee's size, so a 2,000-column table with bounds
        on every column took seconds to read one row. Bounds on columns a filter does
        not name cannot prune anything; leaving them out keeps reads linear.
        """
        scan = self._scans.get(names)
        if scan is None:
            scan = self._scan_of(self.files, names)
            if len(self._scans) >= _SCAN_CACHE_SIZE:
                self._scans.pop(next(iter(self._scans)))
            self._scans[names] = scan
        return scan

    def _scan_of(self, files: Sequence[DataFile], names: frozenset[str]) -> Scan:
        """A scan of `files` whose guarantees carry statistics bounds for `names`."""
        return scan_files(self.storage, self.schema,
                          [ScanFile(f.path, f.partition_values, self._bounds(f, names), f.deletion_vector)
                           for f in files],
                          self.column_mapping)

    def _filter_scan(self, filter: pc.Expression | None) -> tuple[Scan, Sequence[DataFile]]:
        """The scan for `filter`, and its files: those the filter may need, with bounds.

        Bounds go on every column whose name the filter's text contains: the text
        test may name more columns than the filter reads (never fewer, so no file a
        bound could prune is kept for lack of it); extra bounds only cost time.
        Files the vectorized test (`lakeflow.pruning`) rules out get no guarantee
        and no fragment; the guarantees then prune the rest exactly.
        """
        if filter is None:
            return self._scan(frozenset()), self.files
        text = str(filter)
        names = frozenset(n for n in self.schema.names if n in text)
        keep = pruning.may_match(pruning.parse_filter(filter), self._prune_stats(names),
                                 len(self._adds))
        if keep.false_count == 0:
            return self._scan(names), self.files
        # Only the files kept become DataFile objects (unless `files` was built already).
        built = self.__dict__.get("files")
        positions = np.flatnonzero(keep.to_numpy(zero_copy_only=False)).tolist()
        files = [built[i] if built is not None else self._data_file(self._adds[i]) for i in positions]
        return self._scan_of(files, names), files

    def _prune_stats(self, names: frozenset[str]) -> dict[str, pruning.ColumnStats]:
        """Per-file stats arrays of the columns in `names` that vectorized pruning can use."""
        cache = self._prune_cache
        if names not in cache:
            if len(cache) >= _SCAN_CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[names] = prune_stats(self, sorted(names))
        return cache[names]

    @functools.cached_property
    def _prune_cache(self) -> dict[frozenset[str], dict[str, pruning.ColumnStats]]:
        return {}

    def to_pyarrow_dataset(self) -> ds.Dataset:
        """A pyarrow dataset over this snapshot, with partition columns filled in.

        A lazy file dataset; for tables with deletion vectors or column mapping an
        in-memory dataset of the snapshot's rows (they are read by this call).
        """
        # The dataset serves any later filter (polars pushes its predicates into it):
        # bounds on the first columns, as many as Delta collects statistics for by default.
        return self._scan(frozenset(self.schema.names[:_DATASET_BOUNDS_COLUMNS])).to_dataset()

    def filter_expression(self, filter: pc.Expression | str | None) -> pc.Expression | None:
        """`filter` as a pyarrow expression.

        A SQL string (`"amount < 0 AND day = '2024-05-01'"`) is parsed by
        `lakeflow.sql.predicate` against this snapshot's schema.

        Raises:
            InvalidArgumentError: the SQL does not parse, or names an unknown column.
        """
        if not isinstance(filter, str):
            return filter
        from lakeflow.sql import predicate  # sqlglot loads only when SQL is given

        return predicate(filter, self.schema)

    def files_matching(self, filter: pc.Expression | str | None) -> list[DataFile]:
        """The files a scan with `filter` must read (after partition and stats pruning).

        Raises:
            SchemaMismatchError: `filter` names an unknown column.
            InvalidArgumentError: `filter` does not fit the column types.
        """
        filter = self.filter_expression(filter)
        if filter is not None:
            check_filter(self.schema, filter)
        scan, files = self._filter_scan(filter)
        return [files[i] for i in scan.matching(filter)]

    def _check_read(self, columns: Sequence[str] | None, filter: pc.Expression | None) -> None:
        """Refuse unknown columns and bad filters before any file is read."""
        if columns is not None:
            unknown = [c for c in columns if self.schema.get_field_index(c) < 0]
            if unknown:
                raise SchemaMismatchError(
                    f"unknown column(s) {unknown}; the table has {self.schema.names}"
                )
        if filter is not None:
            check_filter(self.schema, filter)

    def _empty(self, columns: Sequence[str] | None, filter: pc.Expression | None) -> pa.Table:
        table = self.schema.empty_table()
        if filter is not None:
            table = table.filter(filter)
        return table.select(list(columns)) if columns is not None else table

    def to_arrow(self, columns: Sequence[str] | None = None,
                 filter: pc.Expression | str | None = None) -> pa.Table:
        """Read the rows of this snapshot.

        Args:
            columns: columns to return (default: all, in table order).
            filter: a `pyarrow.compute` expression or a SQL predicate string;
                partitions and files whose statistics rule it out are not read.

        Raises:
            SchemaMismatchError: a requested column does not exist.
            InvalidArgumentError: `filter` is not a pyarrow expression or valid SQL.
            StorageError: the store failed while reading a data file.
        """
        filter = self.filter_expression(filter)
        self._check_read(columns, filter)
        if not self.state.files:
            return self._empty(columns, filter)
        with self._reading():
            return self._filter_scan(filter)[0].to_table(columns=list(columns) if columns is not None else None,
                                                      filter=filter)

    def head(self, num_rows: int, columns: Sequence[str] | None = None,
             filter: pc.Expression | str | None = None) -> pa.Table:
        """The first `num_rows` rows (in file order) where `filter` holds, reading no further.

        Only `columns` (and what `filter` needs) are read, and files are read
        until there are enough rows, so a peek at a big table stays cheap.

        Raises:
            InvalidArgumentError: `num_rows` is negative, or `filter` is not a pyarrow expression.
            SchemaMismatchError: a requested column does not exist.
            StorageError: the store failed while reading a data file.
        """
        if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 0:
            raise InvalidArgumentError(f"num_rows must be a non-negative int, got {num_rows!r}")
        filter = self.filter_expression(filter)
        self._check_read(columns, filter)
        if not self.state.files:
            return self._empty(columns, filter)
        with self._reading():
            return self._filter_scan(filter)[0].head(num_rows, list(columns) if columns is not None else None, filter)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:  # the store failed while pyarrow read a data file
            raise StorageError(
                f"cannot read the data files of {self.storage.uri} at version {self.version}: {e}"
            ) from e

    def scan_tasks(self, filter: pc.Expression | str | None = None, columns: Sequence[str] | None = None,
                   target_bytes: int = SCAN_TASK_BYTES) -> list[ScanTask]:
        """The files a scan with `filter` reads, in groups of about `target_bytes`, to read elsewhere.

        Each `ScanTask` is a picklable description (URI, storage options, schema,
        files with their partition values and deletion vectors, column mapping):
        a worker reads it with `ScanTask.to_table`, never reading the log. Files
        are grouped in path order, so a group mostly holds one partition.

        Raises:
            SchemaMismatchError: `columns` or `filter` names an unknown column.
            InvalidArgumentError: `filter` does not fit the column types.
        """
        filter = self.filter_expression(filter)
        self._check_read(columns, filter)
        groups: list[list[DataFile]] = []
        size = target_bytes
        for f in self.files_matching(filter):
            if size >= target_bytes:
                groups.append([])
                size = 0
            groups[-1].append(f)
            size += f.size
        return [ScanTask(self.storage.uri, self.log.storage_options, self.schema,
                         tuple(ScanFile(f.path, f.partition_values, rows=f.deletion_vector) for f in group),
                         self.column_mapping)
                for group in groups]

    def read_files(self, files: Sequence[DataFile], columns: Sequence[str] | None = None) -> list[pa.Table]:
        """The rows of each of `files` (partition columns filled in, deleted rows left out).

        The read path of operations that rewrite files (merge, delete, compaction):
        one parallel scan, one table per file, in the order given.

        Raises:
            DataFileNotFoundError: a file is gone from the store.
            StorageError: the store failed while reading.
        """
        if not files:
            return []
        scan = scan_files(self.storage, self.schema,
                          [ScanFile(f.path, f.partition_values, rows=f.deletion_vector) for f in files],
                          self.column_mapping)
        return scan.per_file(columns)

    def read_rows(self, picks: Sequence[tuple[DataFile, npt.NDArray[np.int64]]],
                  columns: Sequence[str] | None = None) -> list[pa.Table]:
        """The rows at positions `at` of each (file, at) in `picks`, as `read_files` numbers them.

        Positions count the rows `read_files` returns (deleted rows left out), in
        increasing order; only the row groups holding them are read.

        Raises:
            DataFileNotFoundError: a file is gone from the store.
            StorageError: the store failed while reading.
        """
        files = [ScanFile(f.path, f.partition_values,
                          rows=RowSelection(physical_rows(deleted_rows(self.storage, f.path, f.deletion_vector), at),
                                            keep=True))
                 for f, at in picks]
        return scan_files(self.storage, self.schema, files, self.column_mapping).per_file(columns) if files else []

    def to_polars(self) -> pl.LazyFrame:
        """A polars LazyFrame over this snapshot; filters and projections are pushed down.

        On tables with deletion vectors or column mapping the rows are read by
        this call (see `to_pyarrow_dataset`).
        """
        import polars as pl

        if not self.files:
            return pl.from_arrow(self.schema.empty_table()).lazy()  # type: ignore[union-attr]
        return pl.scan_pyarrow_dataset(self.to_pyarrow_dataset())


def prune_stats(snapshot: Snapshot, names: Sequence[str]) -> dict[str, pruning.ColumnStats]:
    """Stats arrays (one entry per file of `snapshot`) of the columns `names`, where usable.

    Columns whose type was widened are left out: their old files' statistics are
    of the old type.
    """
    schema, adds, mapping = snapshot.schema, snapshot._adds, snapshot.column_mapping
    parts = set(snapshot.partition_columns)
    out: dict[str, pruning.ColumnStats] = {}
    named = [n for n in names if n in parts]
    raw_values = adds.partition_values() if named else []
    for name in named:
        typ = schema.field(name).type
        stored = mapping.physical_name(name)
        values = [parse_partition_value(pv.get(stored), typ, name) for pv in raw_values]
        col = pruning.partition_stats(typ, values)
        if col is not None:
            out[name] = col
    data = [n for n in names if n not in parts and n not in snapshot._widened and schema.get_field_index(n) >= 0]
    parsed = _parsed_stats(snapshot, data) if data else None
    if parsed is not None:
        return {**out, **parsed}
    typed = {n: t for n in data if (t := pruning.stats_type(schema.field(n).type)) is not None}
    fast = pruning.json_stats(adds.stats(), {n: (mapping.physical_name(n), t) for n, t in typed.items()})
    return {**out, **(fast if fast is not None else _decoded_stats(snapshot, list(typed)))}


def _parsed_stats(snapshot: Snapshot, names: Sequence[str]) -> dict[str, pruning.ColumnStats] | None:
    """`prune_stats` of data columns from the checkpoint's `stats_parsed` (None: it has none).

    Only the leaves of `names` are read from the checkpoint; files of later commits
    count by their JSON statistics (dates, timestamps and decimals of those: unknown).
    """
    schema, adds, mapping = snapshot.schema, snapshot._adds, snapshot.column_mapping
    typed = {n: t for n in names if (t := pruning.parsed_stats_type(schema.field(n).type)) is not None}
    physical = {mapping.physical_name(n): t for n, t in typed.items()}
    base = adds.parsed_stats(physical) if typed else None
    if base is None:
        return None
    texts = adds.overlay_stats()
    json_typed = {n: t for n, t in typed.items() if pruning.stats_type(schema.field(n).type) is not None}
    later = (pruning.json_stats(texts, {n: (mapping.physical_name(n), t) for n, t in json_typed.items()})
             or _decoded_stats(snapshot, list(json_typed), adds.overlay())) if texts else {}
    out = {}
    for name, typ in typed.items():
        lo, hi, nulls = (pc.struct_field(base.field(k), mapping.physical_name(name))
                         for k in ("minValues", "maxValues", "nullCount"))
        col = pruning.stats_arrays(typ, lo, hi, nulls)
        extra = later.get(name) or pruning.ColumnStats(*(pa.nulls(len(texts), t) for t in (typ, typ, pa.bool_())))
        out[name] = pruning.ColumnStats(*(adds.in_path_order(a, b) for a, b in zip(
            (col.lo, col.hi, col.no_nulls), (extra.lo, extra.hi, extra.no_nulls), strict=True)))
    return out


def _decoded_stats(snapshot: Snapshot, names: Sequence[str],
                   adds: Sequence[Add] | None = None) -> dict[str, pruning.ColumnStats]:
    """`prune_stats` of data columns, decoding each file's stats JSON (any writer's quirks).

    Of `adds` (default: every file's), in order.
    """
    raw: dict[str, tuple[list[Any], list[Any], list[Any]]] = {n: ([], [], []) for n in names}
    for add in (snapshot._adds if adds is None else adds) if names else ():
        stats = add.parsed_stats() or {}
        mins, maxs, nulls = (snapshot.column_mapping.logical_keys(stats.get(k) or {})
                             for k in ("minValues", "maxValues", "nullCount"))
        for n in names:
            lo, hi, nc = raw[n]
            lo.append(mins.get(n))
            hi.append(maxs.get(n))
            nc.append(nulls.get(n))
    out = {}
    for n in names:
        col = pruning.column_stats(snapshot.schema.field(n).type, *raw[n])
        if col is not None:
            out[n] = col
    return out


def typed_partition_values(raw: Mapping[str, str | None], schema: pa.Schema,
                           partition_columns: Sequence[str]) -> dict[str, Any]:
    """Parse a file action's `partitionValues` strings (logical keys) by the schema's types."""
    return {c: parse_partition_value(raw.get(c), schema.field(c).type, c)
            for c in partition_columns}


def partition_guarantee(schema: pa.Schema, values: Mapping[str, Any]) -> pc.Expression:
    """What every row of a file holds in its partition columns (typed `values`)."""
    terms = [pc.field(c).is_null() if v is None
             else pc.field(c) == pa.scalar(v, type=schema.field(c).type)
             for c, v in values.items()]
    return functools.reduce(lambda a, b: a & b, terms, pc.scalar(True))


class ScanFile(NamedTuple):
    """One data or change data file to scan.

    Attributes:
        path: relative to the table root, URL-decoded.
        values: columns the file does not store, with the value every row has
            (partition columns, or virtual ones such as a commit version).
        bounds: what else is known of its rows (statistics), for pruning.
        rows: rows to leave out (a deletion vector) or to read (a selection);
            None reads every row.
        mapping: how the file names its columns, when it differs from the scan's
            (a diff reads each file with the metadata it was written under).
    """

    path: str
    values: Mapping[str, Any]
    bounds: pc.Expression = pc.scalar(True)
    rows: DeletionVector | RowSelection | None = None
    mapping: ColumnMapping | None = None


def scan_files(storage: Storage, schema: pa.Schema, files: Sequence[ScanFile],
               mapping: ColumnMapping = NO_MAPPING) -> Scan:
    """A scan of data or change files, read with `schema` (logical names).

    The one place where deletion vectors are applied and physical column names
    become logical, for snapshots and diffs alike.

    Args:
        storage: the table's storage.
        schema: the columns to read; columns a file lacks come back null.
        files: the files, with the values of the columns they do not store.
        mapping: how the table names its columns in files.
    """
    return Scan(storage, schema, tuple(files), mapping)


@dataclass(frozen=True)
class Scan:
    """Files to read as one table. Build with `scan_files`."""

    storage: Storage
    schema: pa.Schema
    files: tuple[ScanFile, ...]
    mapping: ColumnMapping

    @functools.cached_property
    def _direct(self) -> bool:
        """Whether pyarrow can read every file as it is (no renames, no row selection).

        Variant columns are read file by file: pyarrow would silently drop the
        `typed_value` of a shredded file, which `_read` refuses instead.
        """
        return all(f.rows is None and not self._mapping(f).active for f in self.files) \
            and not has_variant(self.schema)

    def _mapping(self, f: ScanFile) -> ColumnMapping:
        return f.mapping if f.mapping is not None else self.mapping

    @functools.cached_property
    def _dataset(self) -> ds.FileSystemDataset:
        """The files as a pyarrow dataset; each file's guarantee prunes it for filters."""
        fs, root = self.storage.arrow_fs()
        return ds.FileSystemDataset.from_paths(
            [f"{root}/{f.path}" for f in self.files],
            schema=self.schema,
            format=PARQUET_FORMAT,
            filesystem=fs,
            partitions=[partition_guarantee(self.schema, f.values) & f.bounds for f in self.files],
        )

    def matching(self, filter: pc.Expression | None) -> list[int]:
        """Positions of the files a scan with `filter` must read (no file is opened)."""
        if filter is None:
            return list(range(len(self.files)))
        _, root = self.storage.arrow_fs()
        positions: dict[str, list[int]] = {}
        for i, f in enumerate(self.files):
            positions.setdefault(f"{root}/{f.path}", []).append(i)
        kept = [positions[frag.path].pop(0) for frag in self._dataset.get_fragments(filter=filter)]
        return sorted(kept)

    def to_dataset(self) -> ds.Dataset:
        """A pyarrow dataset of the rows: lazy when pyarrow can read the files as they are."""
        return self._dataset if self._direct else ds.InMemoryDataset(self.to_table())

    def to_table(self, columns: Sequence[str] | None = None,
                 filter: pc.Expression | None = None) -> pa.Table:
        """Read the rows (`columns` in that order, default all) where `filter` holds."""
        # One file reads faster by itself than through a dataset (no discovery, no plan).
        if self._direct and len(self.files) > 1:
            paths = [f.path for f in self.files]
            try:
                with reading_data(self.storage, paths):
                    return self._dataset.to_table(columns=columns, filter=filter)
            except LakeflowError as e:
                if len(paths) == 1 or any(p in str(e) for p in paths):
                    raise
                # pyarrow did not say which file failed: read them one by one, naming it
        files = [self.files[i] for i in self.matching(filter)]
        names = self._names(columns, filter)
        if len(files) > 1:
            with ThreadPoolExecutor(min(8, len(files))) as pool:
                tables = list(pool.map(lambda f: self._read(f, names), files))
        else:
            tables = [self._read(f, names) for f in files]
        return self._assemble(tables, names, columns, filter)

    def head(self, num_rows: int, columns: Sequence[str] | None = None,
             filter: pc.Expression | None = None) -> pa.Table:
        """The first `num_rows` rows where `filter` holds, reading files (and batches) in order until there are enough.

        Read here, synchronously, not by pyarrow's dataset `head()`: that one leaves its
        read-ahead running when it stops early, and the process then hangs at exit.
        """
        names, tables, found = self._names(columns, filter), [], 0
        for i in self.matching(filter):
            if found >= num_rows:
                break
            rows = self._read(self.files[i], names, limit=num_rows - found, filter=filter)
            tables.append(rows)
            found += rows.num_rows
        table = self._assemble(tables, names, columns, None)
        # Sliced past its end, a table without columns takes the slice's length.
        return table.slice(0, num_rows) if table.num_rows > num_rows else table

    def _names(self, columns: Sequence[str] | None, filter: pc.Expression | None) -> list[str]:
        """The columns to read from each file: all when a filter must see them."""
        return list(columns) if columns is not None and filter is None else self.schema.names

    def _assemble(self, tables: list[pa.Table], names: list[str], columns: Sequence[str] | None,
                  filter: pc.Expression | None) -> pa.Table:
        """Files' rows (read with `names`) as one table of `columns` where `filter` holds."""
        if not names:  # concat_tables drops the row count of tables without columns
            table = pa.table({"": pa.nulls(sum(t.num_rows for t in tables))}).select([])
        else:
            table = (pa.concat_tables(tables) if tables
                     else self.schema.empty_table().select(names))
        if filter is not None:
            table = table.filter(filter)
        return table.select(list(columns)) if columns is not None else table

    def per_file(self, columns: Sequence[str] | None = None) -> list[pa.Table]:
        """Each file's rows as its own table, in file order (`columns`, default all)."""
        names = list(columns) if columns is not None else self.schema.names
        if not self._direct:
            with ThreadPoolExecutor(max(1, min(8, len(self.files)))) as pool:
                return list(pool.map(lambda f: self._read(f, names), self.files))
        with reading_data(self.storage, [f.path for f in self.files]):
            rows = self._dataset.to_table(columns=[*names, "__fragment_index"])
        index = rows.column("__fragment_index").to_numpy()
        if len(index) and (np.diff(index) < 0).any():  # scans keep fragment order; be sure anyway
            order = np.argsort(index, kind="stable")
            rows, index = rows.take(pa.array(order)), index[order]
        rows = rows.drop_columns(["__fragment_index"])
        bounds = np.searchsorted(index, np.arange(len(self.files) + 1), side="left")
        return [rows.slice(int(a), int(b - a)) for a, b in itertools.pairwise(bounds)]

    def _read(self, f: ScanFile, names: Sequence[str], limit: int | None = None,
              filter: pc.Expression | None = None) -> pa.Table:
        """One file's rows: selected rows only, logical names, missing columns null.

        With `limit`, only the rows where `filter` holds are returned, and batches
        are read only until there are `limit` of them (a file with a deletion vector
        is read whole: the vector numbers the rows of the whole file).
        """
        fs, root = self.storage.arrow_fs()
        mapping = self._mapping(f)
        with reading_data(self.storage, [f.path], one_file=True), \
                fs.open_input_file(f"{root}/{f.path}") as fh:
            parquet = pq.ParquetFile(fh, coerce_int96_timestamp_unit="us")
            stored = {c: mapping.file_column(parquet.schema_arrow, c)
                      for c in names if c not in f.values}
            for c, physical in stored.items():
                if physical is not None and has_variant(self.schema.field(c).type):
                    check_unshredded(parquet.schema_arrow.field(physical).type, c, f.path)
            if limit is not None and f.rows is None:
                return self._leading(parquet, f, stored, names, limit, filter)
            read = [n for n in stored.values() if n is not None]
            if isinstance(f.rows, RowSelection) and f.rows.keep:
                data, mask = _read_kept(parquet, read, f.rows, f.path)
            else:
                data, mask = parquet.read(columns=read), None
            num_rows = parquet.metadata.num_rows
        rows = f.rows
        if isinstance(rows, DeletionVector):
            rows = RowSelection(deleted_rows(self.storage, f.path, rows))
        if mask is None and rows is not None:
            mask = rows.mask(num_rows, f.path)
        # Rows are selected in logical types: pyarrow cannot filter some stored ones (string_view).
        out = self._logical(f, data, stored, names)
        out = out.filter(pa.array(mask)) if mask is not None else out
        return out.filter(filter) if limit is not None and filter is not None else out

    def _leading(self, parquet: pq.ParquetFile, f: ScanFile, stored: Mapping[str, str | None],
                 names: Sequence[str], limit: int, filter: pc.Expression | None) -> pa.Table:
        """The file's first `limit` rows where `filter` holds, reading a batch at a time."""
        physical = [n for n in stored.values() if n is not None]
        parts = [self._logical(f, parquet.schema_arrow.empty_table().select(physical), stored, names)]
        found = 0
        for batch in parquet.iter_batches(batch_size=_HEAD_BATCH_ROWS, columns=physical):
            part = self._logical(f, pa.Table.from_batches([batch]), stored, names)
            part = part.filter(filter) if filter is not None else part
            parts.append(part)
            found += part.num_rows
            if found >= limit:
                break
        if not names:  # concat_tables drops the row count of tables without columns
            return pa.table({"": pa.nulls(found)}).select([])
        return pa.concat_tables(parts)

    def _logical(self, f: ScanFile, data: pa.Table, stored: Mapping[str, str | None],
                 names: Sequence[str]) -> pa.Table:
        """A file's stored columns as the logical columns `names` (partition values, nulls, types)."""
        mapping = self._mapping(f)
        out = data.select([])  # keeps the row count, even when no column is read
        for c in names:
            field, physical = self.schema.field(c), stored.get(c)
            if c in f.values and f.values[c] is not None:
                column = pa.repeat(pa.scalar(f.values[c], field.type), data.num_rows)
            elif physical is None:
                column = pa.nulls(data.num_rows, field.type)
            else:
                column = mapping.to_logical(c, data.column(physical)).cast(field.type)
            out = out.append_column(field, column)
        # Drop the file's key-value metadata (replacing it on a table without columns
        # would lose the row count).
        return out.replace_schema_metadata() if out.num_columns else out


def deleted_rows(storage: Storage, path: str, dv: DeletionVector | None) -> RowIndexes:
    """The rows (of the data file `path`) its deletion vector `dv` removes; none without one.

    Raises:
        DataFileNotFoundError: the DV file is missing.
        CorruptLogError: the DV is damaged.
    """
    if dv is None:
        return np.empty(0, np.uint64)
    with reading_data(storage, [dv.file_path if dv.storage_type == "u" else path], one_file=True):
        return dv.read(storage)


def _read_kept(parquet: pq.ParquetFile, columns: Sequence[str], rows: RowSelection,
               where: str) -> tuple[pa.Table, npt.NDArray[np.bool_]]:
    """The row groups holding the rows a keeping selection names, and a mask of those rows over them."""
    meta = parquet.metadata
    rows.check(meta.num_rows, where)
    sizes = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    at = rows.indexes.astype(np.int64)
    group = np.searchsorted(starts, at, side="right") - 1
    wanted = np.unique(group)
    offset = np.zeros(len(sizes), np.int64)  # where each group read starts among those read
    offset[wanted] = np.concatenate([[0], np.cumsum(sizes[wanted])[:-1]])
    mask = np.zeros(int(sizes[wanted].sum()), dtype=bool)
    mask[at - starts[group] + offset[group]] = True
    return parquet.read_row_groups(wanted.tolist(), columns=list(columns)), mask


@dataclass(frozen=True)
class ScanTask:
    """A group of a snapshot's files to read in another process (see `Snapshot.scan_tasks`).

    Picklable, and holds no log: the worker opens the store from `uri` and
    `storage_options` and reads through the snapshot scan path (partition
    values, deletion vectors, column mapping).
    """

    uri: str
    storage_options: Mapping[str, Any] | None
    schema: pa.Schema
    files: tuple[ScanFile, ...]
    mapping: ColumnMapping

    def to_table(self, columns: Sequence[str] | None = None,
                 filter: pc.Expression | None = None) -> pa.Table:
        """Read the task's rows (`columns`, default all) where `filter` holds.

        Raises:
            DataFileNotFoundError: a file is gone from the store.
            StorageError: the store failed while reading.
        """
        storage = open_storage(self.uri, self.storage_options)
        try:
            return scan_files(storage, self.schema, self.files, self.mapping).to_table(columns, filter)
        except OSError as e:  # the store failed while pyarrow read a data file
            raise StorageError(f"cannot read the data files of {self.uri}: {e}") from e


def check_filter(schema: pa.Schema, filter: Any) -> None:
    """Bind `filter` to `schema` (on no rows), so a bad filter fails typed, before any read.

    Raises:
        InvalidArgumentError: `filter` is not a pyarrow expression, or it does not fit
            the column types (e.g. an int64 column compared with a string).
        SchemaMismatchError: `filter` names an unknown column.
    """
    if not isinstance(filter, pc.Expression):
        raise InvalidArgumentError(
            "filter must be a pyarrow.compute.Expression, e.g. pc.field('x') > 3"
        )
    try:
        schema.empty_table().filter(filter)
    except pa.ArrowInvalid as e:
        if "FieldRef" not in str(e):
            raise
        raise SchemaMismatchError(f"filter names an unknown column: {e}") from e
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        text = str(filter)
        named = [f"{f.name}: {f.type}" for f in schema
                 if re.search(rf'(?<![\w"]){re.escape(f.name)}(?![\w"])', text)]
        raise InvalidArgumentError(
            f"filter {text} does not fit the column types ({', '.join(named) or schema}): {e}; "
            "compare each column with a value of its type, e.g. pc.field('x') == 3 for an "
            "integer column"
        ) from e


@contextlib.contextmanager
def reading_data(storage: Storage, paths: Sequence[str], *, one_file: bool = False) -> Iterator[None]:
    """Turn a failed read of the data files `paths` into a typed error naming the file.

    Args:
        storage: the table's storage.
        paths: the files being read (relative to the root).
        one_file: the block reads just `paths[0]`, so every error is about it; else
            a filter naming an unknown column (`ArrowInvalid` ... FieldRef) passes
            through, for the caller to report.

    Raises:
        DataFileNotFoundError: the file is missing.
        CorruptLogError: the file is not Parquet, or its contents are damaged.
        StorageError: the store failed to open or read it.
    """
    try:
        yield
    except FileNotFoundError as e:
        raise DataFileNotFoundError(
            f"the data file {_culprit(e, paths, one_file)} of {storage.uri} is missing: it was "
            "deleted outside the log (a vacuum with a short retention, or by hand); restore it, "
            f"or read a version that does not use it ({_short(e)})"
        ) from e
    except pa.ArrowInvalid as e:
        if not one_file and "FieldRef" in str(e) and not any(p in str(e) for p in paths):
            raise
        raise CorruptLogError(
            f"the data file {_culprit(e, paths, one_file)} of {storage.uri} is not a readable "
            f"Parquet file ({_short(e)}); restore it from a backup or remove it from the table"
        ) from e
    except OSError as e:
        raise StorageError(
            f"cannot read the data file {_culprit(e, paths, one_file)} of {storage.uri}: {_short(e)}"
        ) from e


def _culprit(e: BaseException, paths: Sequence[str], one_file: bool) -> str:
    """The file an error is about, for messages (long names shortened)."""
    text = str(e)
    path = paths[0] if one_file or len(paths) == 1 else next((p for p in paths if p in text), None)
    if path is None:
        return f"(one of the {len(paths)} read)"
    return repr(path) if len(path) <= 200 else f"{path[:200]!r}..."


def _short(e: BaseException) -> str:
    text = str(e)
    return text if len(text) <= 400 else f"{text[:400]}..."


# A float32 written as the shortest decimal that reads back is within half a float32 ulp
# (2**-24 relative) of the float itself.
_FLOAT32_SLACK = 2.0**-22
_FLOAT32_TINY = 2.0**-149  # the smallest float32 subnormal


def _float32_tolerant(lo: pa.Scalar, hi: pa.Scalar) -> tuple[pa.Scalar, pa.Scalar]:
    """Widen [lo, hi] of a float column's statistics by float32 rounding.

    Spark prints a float statistic as the shortest decimal that reads back as the
    float, but filters compare the float's exact value (0.7f is 0.699999988...), which
    can lie just outside the printed range; so can a column widened from float to
    double, whose old files hold floats.
    """
    low, high = lo.as_py(), hi.as_py()
    if math.isfinite(low):  # an infinite bound is exact (and inf - inf would be NaN)
        low -= abs(low) * _FLOAT32_SLACK + _FLOAT32_TINY
    if math.isfinite(high):
        high += abs(high) * _FLOAT32_SLACK + _FLOAT32_TINY
    return pa.scalar(low, lo.type), pa.scalar(high, hi.type)


_WIDE = decimal.Context(prec=100)


def _decimal_bound(x: Any, typ: pa.Decimal128Type, up: bool) -> pa.Scalar:
    """A decimal statistic as a bound of `typ`, rounded outwards.

    JSON decoding reads a decimal with a fraction as a float, which keeps ~16 digits:
    1234567890123456789.123 becomes 1234567890123456768. The float is within half an ulp
    (2**-53 relative) of the written value, so the bound is moved out by 2**-52 of it.
    """
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        raise TypeError(f"not a decimal statistic: {x!r}")
    value = decimal.Decimal(x) if not isinstance(x, float) else _WIDE.multiply(
        decimal.Decimal(x), decimal.Decimal(1 + 2.0**-52 if (x >= 0) == up else 1 - 2.0**-52))
    rounding = decimal.ROUND_CEILING if up else decimal.ROUND_FLOOR
    step = decimal.Decimal(1).scaleb(-typ.scale)
    # Rounded out past the largest value of the type (999.99 for decimal(5,2)): no column
    # value lies beyond it, so the bound stays at it.
    limit = _WIDE.subtract(_WIDE.power(10, typ.precision - typ.scale), step)
    bound = max(-limit, min(limit, value.quantize(step, rounding, _WIDE)))
    return pa.scalar(bound, typ)


def stat_bounds(typ: pa.DataType, lo: Any, hi: Any) -> tuple[pa.Scalar, pa.Scalar] | None:
    """Typed [lo, hi] scalars from JSON stats; None when they cannot be trusted."""
    try:
        if pa.types.is_integer(typ):
            if not (isinstance(lo, int) and isinstance(hi, int)):
                return None
            return pa.scalar(lo, typ), pa.scalar(hi, typ)
        if pa.types.is_floating(typ):
            flo, fhi = float(lo), float(hi)
            if math.isnan(flo) or math.isnan(fhi):
                return None
            bounds = pa.scalar(flo, pa.float64()), pa.scalar(fhi, pa.float64())
            return _float32_tolerant(*bounds) if typ == pa.float32() else bounds
        if pa.types.is_string(typ):
            if not (isinstance(lo, str) and isinstance(hi, str)):
                return None
            return pa.scalar(lo, typ), pa.scalar(hi, typ)
        if pa.types.is_date(typ) or pa.types.is_timestamp(typ):
            return temporal_bounds(str(lo), str(hi), typ)  # any year (-9999, 0, 10000)
        if pa.types.is_decimal(typ):
            return _decimal_bound(lo, typ, up=False), _decimal_bound(hi, typ, up=True)
    except (ValueError, TypeError, ArithmeticError, pa.ArrowException, LakeflowError):
        return None
    return None
