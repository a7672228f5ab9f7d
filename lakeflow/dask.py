"""Dask: append a Dask DataFrame exactly once, and read a table as one.

Workers write and read data files only; the log is read and written on the
client (the driver): `append` stages every partition's files with
`write_files` on the workers and commits them in one commit, exactly once with
an application transaction; `read` plans the scan on the driver (partition and
statistics pruning) and ships each worker a picklable `ScanTask`. Needs
`pip install 'lakeflow[dask]'`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dask.base import compute
from dask.delayed import delayed

from lakeflow.ops.staged import committed_version, write_files
from lakeflow.snapshot import ScanTask
from lakeflow.table import Table


def append(ddf: dd.DataFrame, uri: str, app_id: str | None = None, txn_version: int | None = None,
           storage_options: Mapping[str, Any] | None = None,
           metadata: Mapping[str, Any] | None = None) -> int:
    """Append the rows of `ddf` to the table at `uri` in one commit; return its version.

    Each partition is written to data files on the worker that holds it; the
    driver then commits them all at once (`Table.commit_files`). With `app_id`
    and `txn_version`, a job that already committed is not run again, and an
    attempt that loses to another one deletes its files.

    Raises:
        TableNotFoundError: there is no table at `uri`.
        SchemaMismatchError: the rows do not fit the table schema.
    """
    table = Table(uri, storage_options)
    snap = table.snapshot()
    done = committed_version(snap, app_id, txn_version)
    if done is not None:
        return done
    job = uuid.uuid4().hex
    writes = [delayed(write_files)(uri, part, snap.partition_columns, snap.schema, storage_options, job,
                                        snap.column_mapping)
              for part in ddf.to_delayed()]  # type: ignore[no-untyped-call]
    staged = list(compute(*writes))  # type: ignore[no-untyped-call]
    return table.commit_files(staged, app_id, txn_version, metadata=metadata)


def read(uri: str, version: int | None = None, columns: Sequence[str] | None = None,
         filter: pc.Expression | None = None, storage_options: Mapping[str, Any] | None = None
         ) -> dd.DataFrame:
    """The table at `uri` (latest, or `version`) as a Dask DataFrame, one partition per file group.

    Files are pruned on the driver by partition values and statistics; columns
    keep their Arrow types (pandas `ArrowDtype`).

    Raises:
        TableNotFoundError: there is no table at `uri`.
        VersionNotFoundError: the version is not in the log.
        SchemaMismatchError: `columns` or `filter` names an unknown column.
    """
    snap = Table(uri, storage_options).snapshot(version)
    tasks = snap.scan_tasks(filter, columns)
    names = list(columns) if columns is not None else snap.schema.names
    meta = _to_pandas(snap.schema.empty_table().select(names))
    if not tasks:
        frame: dd.DataFrame = dd.from_pandas(meta, npartitions=1)  # type: ignore[no-untyped-call]
        return frame
    frame = dd.from_map(_read_task, tasks, columns=names, filter=filter, meta=meta,  # type: ignore[no-untyped-call]
                        label="lakeflow-read", enforce_metadata=False)
    return frame


def _read_task(task: ScanTask, columns: Sequence[str], filter: pc.Expression | None) -> pd.DataFrame:
    """On a worker: one task's rows as pandas."""
    return _to_pandas(task.to_table(columns, filter))


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


__all__ = ["append", "read"]
