"""Streamed appends: a RecordBatchReader is written as it arrives and committed once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal

from helpers import sql_scan

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())])


def batches(n: int, rows: int, null_id_in: int | None = None) -> pa.RecordBatchReader:
    def gen():
        for b in range(n):
            ids = list(range(b * rows, (b + 1) * rows))
            id_array = pa.array([None if b == null_id_in else i for i in ids], pa.int64())
            yield pa.record_batch([id_array, pa.array([f"r{i}" for i in ids])], schema=SCHEMA)
    return pa.RecordBatchReader.from_batches(SCHEMA, gen())


def test_a_stream_is_written_in_chunks_and_committed_once(table_uri, monkeypatch):
    monkeypatch.setattr(lf.ops.append, "STREAM_CHUNK_BYTES", 20_000)
    t = lf.Table.create(table_uri, SCHEMA)
    v = t.append(batches(10, 1000), app_id="job", txn_version=1)
    assert v == 1 and t.version == 1  # one commit
    snap = t.snapshot()
    assert snap.num_rows == 10_000 and len(snap.files) > 1  # rolled into several files
    assert sorted(snap.to_arrow().column("id").to_pylist()) == list(range(10_000))
    # The retry of the same batch reads nothing and writes nothing.
    untouched = batches(10, 1000)
    assert t.append(untouched, app_id="job", txn_version=1) == 1
    assert untouched.read_next_batch().num_rows == 1000  # the stream was not consumed
    assert t.version == 1


def test_a_refused_chunk_leaves_no_commit_and_no_files(local_uri, monkeypatch):
    monkeypatch.setattr(lf.ops.append, "STREAM_CHUNK_BYTES", 20_000)
    t = lf.Table.create(local_uri, SCHEMA)
    before = sorted(p.name for p in Path(local_uri).glob("*.parquet"))
    with pytest.raises(lf.SchemaMismatchError, match="not nullable"):
        t.append(batches(10, 1000, null_id_in=7))
    assert t.refresh() == 0
    assert sorted(p.name for p in Path(local_uri).glob("*.parquet")) == before


def test_deltalake_reads_a_streamed_append(local_uri, monkeypatch):
    monkeypatch.setattr(lf.ops.append, "STREAM_CHUNK_BYTES", 50_000)
    t = lf.Table.create(local_uri, SCHEMA)
    t.append(batches(6, 2000))
    oracle = sql_scan(local_uri)
    assert_table_equal(oracle, t.to_arrow())


def test_keyed_tables_take_the_stream_whole(table_uri, monkeypatch):
    monkeypatch.setattr(lf.ops.append, "STREAM_CHUNK_BYTES", 20_000)
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(batches(5, 1000))
    assert len(t.snapshot().files) == 1 and t.snapshot().num_rows == 5000


def test_peak_memory_is_bounded_by_a_chunk_not_the_input(tmp_path):
    """A 400 MB stream appended in a fresh process raises its peak RSS by far less."""
    script = textwrap.dedent(f"""
        import json, resource, pyarrow as pa, lakeflow as lf
        lf.table.STREAM_CHUNK_BYTES = 16 * 1024 * 1024
        schema = pa.schema([("id", pa.int64()), ("blob", pa.binary())])
        blob = b"x" * 4000
        def gen():
            for b in range(100):  # 100 batches of 1,000 rows x 4 KB: 400 MB in all
                yield pa.record_batch([pa.array(range(b * 1000, (b + 1) * 1000), pa.int64()),
                                       pa.array([blob] * 1000, pa.binary())], schema=schema)
        t = lf.Table.create({str(tmp_path / "big")!r}, schema)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t.append(pa.RecordBatchReader.from_batches(schema, gen()))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"grew_mb": (peak - base) / 1024, "rows": t.snapshot().num_rows}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == 100_000
    assert result["grew_mb"] < 150, result  # the whole input would be 400 MB
