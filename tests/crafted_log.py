"""Delta tables crafted by hand: a log written action by action, and deltalake's SQL scan as
the oracle to compare them with (shared by the tests of foreign and odd tables)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq

import lakeflow as lf


def field(name, typ, physical=None, fid=None) -> dict:
    meta = {} if physical is None else {"delta.columnMapping.id": fid,
                                        "delta.columnMapping.physicalName": physical}
    return {"name": name, "type": typ, "nullable": True, "metadata": meta}


class Log:
    """Writes a Delta log by hand: commits of raw JSON actions."""

    def __init__(self, root: Path, fields, protocol, configuration=None, partition_columns=()):
        self.root, self.version = root, -1
        self.metadata = {"id": "crafted", "format": {"provider": "parquet", "options": {}},
                         "schemaString": json.dumps({"type": "struct", "fields": fields}),
                         "partitionColumns": list(partition_columns),
                         "configuration": configuration or {}, "createdTime": 0}
        self.protocol = protocol
        self.commit({"protocol": protocol}, {"metaData": self.metadata})

    def commit(self, *actions) -> int:
        self.version += 1
        (self.root / "_delta_log").mkdir(parents=True, exist_ok=True)
        info = {"commitInfo": {"timestamp": 1_700_000_000_000 + self.version}}
        lines = [json.dumps(a) for a in (info, *actions)]
        (self.root / "_delta_log" / f"{self.version:020d}.json").write_text("\n".join(lines) + "\n")
        return self.version

    def data(self, path: str, table: pa.Table, partition_values=None, stats=None) -> dict:
        """Write a Parquet data file; its add action body."""
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.root / path)
        return {"path": path, "partitionValues": partition_values or {},
                "size": (self.root / path).stat().st_size, "modificationTime": 0, "dataChange": True,
                "stats": json.dumps({"numRecords": table.num_rows, **(stats or {})})}


def remove(add: dict, dv=None) -> dict:
    body = {"path": add["path"], "deletionTimestamp": 0, "dataChange": True,
            "extendedFileMetadata": True, "partitionValues": add["partitionValues"],
            "size": add["size"]}
    return {"remove": {**body, "deletionVector": dv} if dv else body}


def oracle(root, version) -> pa.Table:
    """deltalake's SQL scan of `version`, with plain Arrow types."""
    t = pa.table(deltalake.QueryBuilder().register("t", deltalake.DeltaTable(str(root), version=version))
                 .execute("select * from t").read_all())
    return pa.table({n: c.cast(_plain(c.type)) for n, c in zip(t.column_names, t.columns, strict=True)})


def _plain(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _plain(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(pa.field("element", _plain(t.value_type)))
    if pa.types.is_map(t):
        return pa.map_(_plain(t.key_type), _plain(t.item_type))
    return t


def rows_of(table: pa.Table) -> collections.Counter:
    return collections.Counter(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def assert_same_rows(got: pa.Table, expected: pa.Table) -> None:
    assert got.column_names == expected.column_names
    assert rows_of(got) == rows_of(expected)


def every_read(snap: lf.Snapshot) -> list[pa.Table]:
    """The snapshot's rows by every read path."""
    return [snap.to_arrow(), snap.to_polars().collect().to_arrow(), snap.to_pyarrow_dataset().to_table()]
