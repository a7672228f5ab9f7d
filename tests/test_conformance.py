"""Every table of the conformance corpus (written by Spark, Databricks, delta-rs) is read
at every version and equals its expected rows, or is refused with a clear error.

The corpus marks the tables with deletion vectors, column mapping and v2 checkpoints
"refuse" (their expected rows are there for the reader that supports them); lakeflow
reads those features now, so they are held to their rows like every other table. A
feature lakeflow still lacks is refused (see tests/test_reader_features.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import lakeflow as lf
from lakeflow.log import list_log
from lakeflow.testing import assert_table_equal

CORPUS = Path(__file__).parent / "data" / "conformance"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())


def _meta(entry):
    return json.loads((CORPUS / entry["expected_dir"] / "meta.json").read_text())


CASES = [(e["name"], v) for e in MANIFEST for v in _meta(e)["versions"]]
BY_NAME = {e["name"]: e for e in MANIFEST}
# Features the corpus expects refused that lakeflow reads now.
READ_NOW = {"deletionVectors", "columnMapping", "v2Checkpoint"}


def _expected(meta):
    return "read" if meta["expected"] == "refuse" and meta["refuse_reason"] in READ_NOW else meta["expected"]


def test_every_refused_table_of_the_corpus_is_read_now():
    refused = {BY_NAME[n]["refuse_reason"] for n in BY_NAME if BY_NAME[n]["expected"] == "refuse"}
    assert refused == READ_NOW


@pytest.mark.parametrize("name, version", CASES, ids=[f"{n}@v{v}" for n, v in CASES])
def test_conformance_table(name, version):
    entry = BY_NAME[name]
    meta = _meta(entry)
    uri = str(CORPUS / entry["path"])
    expected_kind = _expected(meta)
    if expected_kind == "refuse":
        with pytest.raises(lf.UnsupportedFeatureError, match=meta["refuse_reason"]):
            lf.Table(uri).snapshot(version=version).to_arrow()
        return
    snap = lf.Table(uri).snapshot(version=version)
    v = str(version)
    assert snap.version == version
    assert sorted(f.path for f in snap.files) == sorted(meta["files_by_version"][v])
    assert json.loads(snap.metadata.schema_string) == json.loads(meta["schema_by_version"][v])
    assert list(snap.partition_columns) == meta["partition_columns_by_version"][v]
    proto = meta["protocol_by_version"][v]
    assert snap.protocol.min_reader_version == proto["min_reader_version"]
    assert snap.protocol.min_writer_version == proto["min_writer_version"]
    assert sorted(snap.protocol.reader_features or ()) == sorted(proto["reader_features"])
    if expected_kind == "log_only":
        return
    got = snap.to_arrow()
    expected = pq.read_table(CORPUS / entry["expected_dir"] / f"v{version}.parquet")
    assert str(got.schema) == meta["arrow_schema_by_version"][v]
    assert got.column_names == expected.column_names
    assert snap.num_rows == meta["num_rows_by_version"][v] == got.num_rows
    assert_table_equal(got, expected.cast(got.schema))
    # Every way of reading rows agrees: polars, the pyarrow dataset, a filter that keeps all.
    assert_table_equal(snap.to_polars().collect().to_arrow().cast(got.schema), got)
    assert_table_equal(snap.to_pyarrow_dataset().to_table(), got)
    if got.num_rows:
        first = got.column_names[0]
        everything = pc.field(first).is_null() | pc.field(first).is_valid()
        assert_table_equal(snap.to_arrow(filter=everything), got)


def test_edge_timestamps_do_not_overflow():
    got = lf.Table(str(CORPUS / "tables" / "table_with_edge_timestamps")).snapshot().to_arrow()
    years = sorted(v.year for c in got.columns if pa.types.is_timestamp(c.type)
                   for v in c.to_pylist() if v is not None)
    assert years and years[-1] == 9999


@pytest.mark.parametrize("name", ["simple_table_with_checkpoint", "table_failed_last_checkpoint_update",
                                  "with_checkpoint_no_last_checkpoint", "multi-part-checkpoint"])
def test_latest_version_found_with_any_checkpoint_layout(name):
    meta = _meta(BY_NAME[name])
    t = lf.Table(str(CORPUS / BY_NAME[name]["path"]))
    assert t.version == meta["latest_version"]
    assert bool(list_log(t.storage).checkpoints) == bool(meta["log_checkpoint_files"])


def test_cdc_files_are_never_part_of_a_snapshot():
    t = lf.Table(str(CORPUS / "tables" / "cdf-table"))
    for v in range(t.version + 1):
        assert not any(f.path.startswith("_change_data") for f in t.snapshot(version=v).files)
