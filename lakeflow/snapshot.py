"""An immutable table state at one version, and how to scan it.

Scans go through a pyarrow dataset built from the log's file list. Each file
carries a *guarantee* expression: its partition values, and for columns without
nulls the [min, max] range from its statistics. pyarrow simplifies the user's
filter against each guarantee and never opens files where it becomes false, so
partition pruning and stats skipping come from one mechanism.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lakeflow.actions import Add, Metadata, Protocol
from lakeflow.errors import (
    InvalidArgumentError,
    LakeflowError,
    SchemaMismatchError,
    StorageError,
    UnsupportedFeatureError,
)
from lakeflow.log import TableState, check_data_path, check_readable
from lakeflow.partitions import parse_partition_value
from lakeflow.schema import delta_to_arrow
from lakeflow.storage import Storage

if TYPE_CHECKING:
    import polars as pl

PARQUET_FORMAT = ds.ParquetFileFormat(
    read_options=ds.ParquetReadOptions(coerce_int96_timestamp_unit="us")
)


@dataclass(frozen=True)
class DataFile:
    """One data file of a snapshot: path relative to the table root (decoded)."""

    path: str
    size: int
    partition_values: Mapping[str, Any]
    num_records: int | None
    add: Add


@dataclass(frozen=True)
class Snapshot:
    """The table as of one version. Immutable: reading it never changes the table."""

    storage: Storage
    state: TableState
    timestamp: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_readable(self.state.protocol, self.state.metadata)

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
        """The Arrow schema of the table at this version (Delta column order)."""
        return delta_to_arrow(self.state.metadata.schema_string)

    @property
    def partition_columns(self) -> tuple[str, ...]:
        """Partition columns, in Delta order."""
        return self.state.metadata.partition_columns

    @property
    def properties(self) -> Mapping[str, str]:
        """The table configuration at this version."""
        return self.state.metadata.configuration

    @functools.cached_property
    def files(self) -> tuple[DataFile, ...]:
        """The active data files, sorted by path."""
        out = []
        for add in sorted(self.state.files.values(), key=lambda a: a.path):
            if add.deletion_vector:
                raise UnsupportedFeatureError(
                    f"file {add.path} has a deletion vector (deletionVectors), which lakeflow "
                    "does not support yet"
                )
            path = check_data_path(add.path, f"version {self.version}")
            values = typed_partition_values(add.partition_values, self.schema,
                                            self.partition_columns)
            out.append(DataFile(path, add.size, values, add.num_records(), add))
        return tuple(out)

    @functools.cached_property
    def num_rows(self) -> int:
        """Row count from the files' statistics (Parquet footers where stats are missing)."""
        total = 0
        for f in self.files:
            if f.num_records is None:
                fs, root = self.storage.arrow_fs()
                with fs.open_input_file(f"{root}/{f.path}") as fh:
                    total += pq.ParquetFile(fh).metadata.num_rows
            else:
                total += f.num_records
        return total

    def _guarantee(self, f: DataFile) -> pc.Expression:
        schema = self.schema
        terms = [partition_guarantee(schema, f.partition_values)]
        stats = f.add.parsed_stats() or {}
        mins, maxs, nulls = (stats.get(k) or {} for k in ("minValues", "maxValues", "nullCount"))
        for name in mins.keys() & maxs.keys():
            if name in f.partition_values or schema.get_field_index(name) < 0:
                continue
            if nulls.get(name) != 0:
                continue  # a range guarantee would wrongly exclude null rows
            bounds = _stat_bounds(schema.field(name).type, mins[name], maxs[name])
            if bounds is not None:
                lo, hi = bounds
                terms.append((pc.field(name) >= lo) & (pc.field(name) <= hi))
        return functools.reduce(lambda a, b: a & b, terms, pc.scalar(True))

    def to_pyarrow_dataset(self) -> ds.FileSystemDataset:
        """A pyarrow dataset over this snapshot's files, with partition columns filled in."""
        return scan_files(self.storage, self.schema,
                          [(f.path, self._guarantee(f)) for f in self.files])

    def files_matching(self, filter: pc.Expression | None) -> list[DataFile]:
        """The files a scan with `filter` must read (after partition and stats pruning)."""
        if filter is None:
            return list(self.files)
        _, root = self.storage.arrow_fs()
        by_path = {f"{root}/{f.path}": f for f in self.files}
        dataset = self.to_pyarrow_dataset()
        return [by_path[frag.path] for frag in dataset.get_fragments(filter=filter)]

    def to_arrow(self, columns: Sequence[str] | None = None,
                 filter: pc.Expression | None = None) -> pa.Table:
        """Read the rows of this snapshot.

        Args:
            columns: columns to return (default: all, in table order).
            filter: a `pyarrow.compute` expression; partitions and files whose
                statistics rule it out are not read.

        Raises:
            SchemaMismatchError: a requested column does not exist.
            InvalidArgumentError: `filter` is not a pyarrow expression.
            StorageError: the store failed while reading a data file.
        """
        if columns is not None:
            unknown = [c for c in columns if self.schema.get_field_index(c) < 0]
            if unknown:
                raise SchemaMismatchError(
                    f"unknown column(s) {unknown}; the table has {self.schema.names}"
                )
        if filter is not None and not isinstance(filter, pc.Expression):
            raise InvalidArgumentError(
                "filter must be a pyarrow.compute.Expression, e.g. pc.field('x') > 3"
            )
        if not self.files:
            table = self.schema.empty_table()
            if filter is not None:
                table = table.filter(filter)
            return table.select(list(columns)) if columns is not None else table
        try:
            return self.to_pyarrow_dataset().to_table(
                columns=list(columns) if columns is not None else None, filter=filter)
        except pa.ArrowInvalid as e:
            if "No match for FieldRef" in str(e) or "FieldRef" in str(e):
                raise SchemaMismatchError(f"filter names an unknown column: {e}") from e
            raise
        except OSError as e:  # the store failed while pyarrow read a data file
            raise StorageError(
                f"cannot read the data files of {self.storage.uri} at version {self.version}: {e}"
            ) from e

    def to_polars(self) -> pl.LazyFrame:
        """A polars LazyFrame over this snapshot; filters and projections are pushed down."""
        import polars as pl

        if not self.files:
            return pl.from_arrow(self.schema.empty_table()).lazy()  # type: ignore[union-attr]
        return pl.scan_pyarrow_dataset(self.to_pyarrow_dataset())


def typed_partition_values(raw: Mapping[str, str | None], schema: pa.Schema,
                           partition_columns: Sequence[str]) -> dict[str, Any]:
    """Parse a file action's `partitionValues` strings by the schema's types."""
    return {c: parse_partition_value(raw.get(c), schema.field(c).type, c)
            for c in partition_columns}


def partition_guarantee(schema: pa.Schema, values: Mapping[str, Any]) -> pc.Expression:
    """What every row of a file holds in its partition columns (typed `values`)."""
    terms = [pc.field(c).is_null() if v is None
             else pc.field(c) == pa.scalar(v, type=schema.field(c).type)
             for c, v in values.items()]
    return functools.reduce(lambda a, b: a & b, terms, pc.scalar(True))


def scan_files(storage: Storage, schema: pa.Schema,
               files: Sequence[tuple[str, pc.Expression]]) -> ds.FileSystemDataset:
    """A pyarrow dataset over data or change files, read with `schema`.

    Args:
        storage: the table's storage.
        schema: the columns to read; columns a file lacks come back null.
        files: (path relative to the table root, URL-decoded; guarantee) pairs.
            Columns a file does not store (partition columns, or virtual ones
            such as a commit version) are filled from equalities in its guarantee.
    """
    fs, root = storage.arrow_fs()
    return ds.FileSystemDataset.from_paths(
        [f"{root}/{path}" for path, _ in files],
        schema=schema,
        format=PARQUET_FORMAT,
        filesystem=fs,
        partitions=[g for _, g in files],
    )


def _stat_bounds(typ: pa.DataType, lo: Any, hi: Any) -> tuple[pa.Scalar, pa.Scalar] | None:
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
            return pa.scalar(flo, pa.float64()), pa.scalar(fhi, pa.float64())
        if pa.types.is_string(typ):
            if not (isinstance(lo, str) and isinstance(hi, str)):
                return None
            return pa.scalar(lo, typ), pa.scalar(hi, typ)
        if pa.types.is_date(typ):
            return (pa.scalar(dt.date.fromisoformat(str(lo)[:10]), typ),
                    pa.scalar(dt.date.fromisoformat(str(hi)[:10]), typ))
        if pa.types.is_timestamp(typ):
            tlo = parse_partition_value(str(lo), typ)
            thi = parse_partition_value(str(hi), typ)
            # Writers truncate timestamp stats to milliseconds: widen the upper bound.
            return pa.scalar(tlo, typ), pa.scalar(thi + dt.timedelta(milliseconds=1), typ)
        if pa.types.is_decimal(typ):
            return (pa.scalar(decimal.Decimal(str(lo)), typ),
                    pa.scalar(decimal.Decimal(str(hi)), typ))
    except (ValueError, TypeError, ArithmeticError, pa.ArrowException, LakeflowError):
        return None
    return None
