"""Input files for `create --from`, `append` and `merge`: CSV, Parquet, NDJSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

import lakeflow as lf

FORMATS = ("csv", "parquet", "ndjson")
_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
              ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson"}
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def file_format(path: Path, given: str | None) -> str:
    """The format of `path`: `given`, else by its suffix.

    Raises:
        InvalidArgumentError: unknown format, or a suffix that does not tell.
    """
    fmt = given or _BY_SUFFIX.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise lf.InvalidArgumentError(
            f"cannot tell the format of {path}: pass --format {'|'.join(FORMATS)}" if given is None
            else f"--format must be one of {'|'.join(FORMATS)}, not {given!r}")
    return fmt


def read_file(path: Path, fmt: str | None, schema: pa.Schema | None = None) -> pa.Table:
    """A file's rows; CSV and NDJSON values are parsed as `schema`'s types when given.

    Raises:
        SchemaMismatchError: the file cannot be read as its format (or as `schema`), naming it.
    """
    fmt = file_format(path, fmt)
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            types = {f.name: f.type for f in schema} if schema is not None else None
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        return _read_ndjson(path, schema)
    except _ARROW_ERRORS as e:
        raise lf.SchemaMismatchError(f"cannot read {path} as {fmt}: {' '.join(str(e).split())}") from e


def _read_ndjson(path: Path, schema: pa.Schema | None) -> pa.Table:
    """NDJSON rows; with `schema`, dates are read as the ISO strings JSON holds, then cast."""
    if schema is None:
        return pajson.read_json(path)
    dates = {f.name for f in schema if pa.types.is_date(f.type)}
    read_as = pa.schema([f.with_type(pa.string()) if f.name in dates else f for f in schema])
    rows = pajson.read_json(path, parse_options=pajson.ParseOptions(
        explicit_schema=read_as, unexpected_field_behavior="error"))
    for name in dates & set(rows.column_names):
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, schema.field(name), rows.column(i).cast(schema.field(name).type))
    return rows


def infer_schema(path: Path, fmt: str | None) -> pa.Schema:
    """The schema a file's rows have (Parquet: from the footer; CSV, NDJSON: inferred)."""
    if file_format(path, fmt) == "parquet":
        try:
            return pq.read_schema(path).remove_metadata()
        except _ARROW_ERRORS as e:
            raise lf.SchemaMismatchError(f"cannot read {path} as parquet: {e}") from e
    return read_file(path, fmt).schema.remove_metadata()


def read_files(paths: Sequence[Path], fmt: str | None, schema: pa.Schema,
               done: Callable[[], None]) -> pa.RecordBatchReader:
    """The rows of all `paths` as one stream, read one file at a time (`done()` after each).

    Raises:
        SchemaMismatchError: a file's columns differ from the first file's, naming it.
    """
    first = read_file(paths[0], fmt, schema)

    def batches() -> Iterator[pa.RecordBatch]:
        for i, path in enumerate(paths):
            rows = first if i == 0 else read_file(path, fmt, schema)
            if rows.schema != first.schema:
                try:
                    rows = rows.select(first.schema.names).cast(first.schema)
                except (KeyError, *_ARROW_ERRORS) as e:
                    raise lf.SchemaMismatchError(
                        f"{path} has columns {rows.schema}, but {paths[0]} has {first.schema}: {e}") from e
            yield from rows.to_batches()
            done()

    return pa.RecordBatchReader.from_batches(first.schema, batches())
