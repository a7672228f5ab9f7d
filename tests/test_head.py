"""Snapshot.head: the first rows, reading only as far as needed, equal to a full read's rows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf

CORPUS = Path(__file__).parent / "data" / "conformance"
READABLE = [e for e in json.loads((CORPUS / "manifest.json").read_text())
            if json.loads((CORPUS / e["expected_dir"] / "meta.json").read_text())["expected"] != "log_only"]


def _rows(table: pa.Table) -> Counter[str]:
    return Counter(repr(sorted(r.items())) for r in table.to_pylist())


def _check_head(snap: lf.Snapshot, n: int, columns=None, filter=None) -> pa.Table:
    full = snap.to_arrow(columns, filter)
    got = snap.head(n, columns, filter)
    assert got.schema == full.schema
    assert got.num_rows == min(n, full.num_rows)
    assert not _rows(got) - _rows(full), "head returned rows a full read does not have"
    return got


@pytest.mark.parametrize("entry", READABLE, ids=[e["name"] for e in READABLE])
def test_head_of_every_corpus_table_is_rows_of_the_full_read(entry):
    """Deletion vectors, column mapping, partitions, nested types: head agrees with to_arrow."""
    snap = lf.Table(str(CORPUS / entry["path"])).snapshot()
    full = snap.to_arrow()
    for n in (0, 1, 3, full.num_rows + 5):
        _check_head(snap, n)
    assert _rows(snap.head(full.num_rows + 5)) == _rows(full)
    first = snap.schema.names[-1]
    _check_head(snap, 2, columns=[first])
    _check_head(snap, 2, columns=[])
    assert snap.head(full.num_rows + 5, columns=[]).num_rows == full.num_rows
    _check_head(snap, 2, filter=pc.field(first).is_valid())
    _check_head(snap, 2, columns=[], filter=pc.field(first).is_null())


def test_head_stops_reading_early(table_uri):
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64()), ("part", pa.string())]), partition_by=["part"])
    for p in ("a", "b", "c"):
        t.append(pa.table({"id": list(range(200_000)), "part": [p] * 200_000}))
    snap = t.snapshot()
    got = snap.head(3, columns=["part", "id"], filter=pc.field("id") >= 199_999)
    assert sorted(got.column("part").to_pylist()) == ["a", "b", "c"]
    assert got.column("id").to_pylist() == [199_999] * 3
    assert snap.head(5).num_rows == 5
    assert snap.head(2, filter=pc.field("part") == "b").column("part").to_pylist() == ["b", "b"]
    with pytest.raises(lf.InvalidArgumentError, match="num_rows"):
        snap.head(-1)
    with pytest.raises(lf.SchemaMismatchError, match="nope"):
        snap.head(1, columns=["nope"])


def test_head_of_an_empty_table(table_uri):
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64())]))
    assert t.snapshot().head(5, filter=pc.field("id") > 1).num_rows == 0


def test_process_exits_after_an_early_stop(tmp_path):
    """pyarrow's dataset head() left read-ahead running and hung the process at exit."""
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    for _ in range(6):
        t.append(pa.table({"id": list(range(300_000))}))
    code = f"import lakeflow as lf; print(lf.Table({uri!r}).snapshot().head(3).num_rows)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "3"), proc.stderr
