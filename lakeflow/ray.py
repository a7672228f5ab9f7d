"""Ray: append a `ray.data.Dataset` exactly once, and read a table as one.

As for Dask (`lakeflow.dask`): workers write and read data files only, the
driver reads and writes the log. `append` stages each block's files with
`write_files` in Ray tasks and commits them in one commit; `read` plans the
scan on the driver and gives each read task a picklable `ScanTask`. Needs
`pip install 'lakeflow[ray]'`.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from lakeflow.ops.staged import StagedFiles, committed_version, write_files
from lakeflow.snapshot import ScanTask
from lakeflow.table import Table

_STAGED = "staged"


def append(dataset: ray.data.Dataset, uri: str, app_id: str | None = None, txn_version: int | None = None,
           storage_options: Mapping[str, Any] | None = None,
           metadata: Mapping[str, Any] | None = None) -> int:
    """Append the rows of `dataset` to the table at `uri` in one commit; return its version.

    Each block is written to data files by a Ray task; the driver then commits
    them all at once (`Table.commit_files`). With `app_id` and `txn_version`, a
    job that already committed is not run again, and an attempt that loses to
    another one deletes its files.

    Raises:
        TableNotFoundError: there is no table at `uri`.
        SchemaMismatchError: the rows do not fit the table schema.
    """
    table = Table(uri, storage_options)
    snap = table.snapshot()
    done = committed_version(snap, app_id, txn_version)
    if done is not None:
        return done
    kwargs = {"uri": uri, "partition_by": snap.partition_columns, "schema": snap.schema,
              "storage_options": storage_options, "job_id": uuid.uuid4().hex,
              "column_mapping": snap.column_mapping}
    written = dataset.map_batches(_write_block, batch_format="pyarrow", batch_size=None, fn_kwargs=kwargs)
    staged = [pickle.loads(row[_STAGED]) for row in written.take_all()]
    return table.commit_files(staged, app_id, txn_version, metadata=metadata)


def _write_block(block: pa.Table, **kwargs: Any) -> pa.Table:
    """In a Ray task: write one block's files; the `StagedFiles`, pickled, as a one-row table."""
    staged: StagedFiles = write_files(data=block, **kwargs)
    return pa.table({_STAGED: pa.array([pickle.dumps(staged)], pa.binary())})


def read(uri: str, version: int | None = None, columns: Sequence[str] | None = None,
         filter: pc.Expression | None = None, storage_options: Mapping[str, Any] | None = None
         ) -> ray.data.Dataset:
    """The table at `uri` (latest, or `version`) as a Ray Dataset, one read task per file group.

    Files are pruned on the driver by partition values and statistics.

    Raises:
        TableNotFoundError: there is no table at `uri`.
        VersionNotFoundError: the version is not in the log.
        SchemaMismatchError: `columns` or `filter` names an unknown column.
    """
    snap = Table(uri, storage_options).snapshot(version)
    names = list(columns) if columns is not None else snap.schema.names
    tasks = snap.scan_tasks(filter, columns)
    if not tasks:
        return ray.data.from_arrow(snap.schema.empty_table().select(names))
    dataset: ray.data.Dataset = ray.data.read_datasource(_Source(tasks, names, filter))
    return dataset


class _Source(Datasource):
    """Scan tasks planned on the driver, as Ray read tasks."""

    def __init__(self, tasks: Sequence[ScanTask], columns: Sequence[str], filter: pc.Expression | None) -> None:
        self._tasks = list(tasks)
        self._columns = list(columns)
        self._filter = filter

    def estimate_inmemory_data_size(self) -> int | None:
        """Unknown before reading (the files' sizes are compressed)."""
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        """One read task per scan task (the driver already grouped the files)."""
        out = []
        for task in self._tasks:
            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                                 input_files=tuple(f.path for f in task.files))
            out.append(ReadTask(_reader(task, self._columns, self._filter), meta,
                                per_task_row_limit=per_task_row_limit))
        return out


def _reader(task: ScanTask, columns: Sequence[str], filter: pc.Expression | None
            ) -> Any:
    def read_fn() -> Iterable[pa.Table]:
        return [task.to_table(columns, filter)]
    return read_fn


__all__ = ["append", "read"]
