"""Small deletion vectors are written inline in the log (storage type `i`), large ones into a DV file.

Inline vectors need no DV file written nor read back; deltalake (SQL scan,
`load_cdf`, its own deletes), polars and DuckDB read them, through checkpoints too.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from test_dv_writes import agrees_with_deltalake, change_keys, changes_agree, dv_files, expected_changes

import lakeflow as lf
from lakeflow.deletion_vectors import INLINE_MAX_BYTES, encode_bitmap_array
from lakeflow.testing import assert_table_equal

from helpers import stored_files

SCHEMA = pa.schema([("id", pa.int64()), ("part", pa.string())])


def mixed_table(uri: str) -> lf.Table:
    """A DV table of a 100-row file (ids 0-99) and a 3000-row file (ids 1000-3999)."""
    t = lf.Table.create(uri, SCHEMA, properties={"delta.enableDeletionVectors": "true"})
    t.append(pa.table({"id": range(100), "part": ["a"] * 100}, schema=SCHEMA))
    t.append(pa.table({"id": range(1000, 4000), "part": ["b"] * 3000}, schema=SCHEMA))
    return t


def dv_stored(uri: str) -> set[str]:
    return {f for f in stored_files(uri) if f.startswith("deletion_vector_")}


def test_small_vectors_go_inline_and_large_ones_into_a_dv_file(table_uri):
    t = mixed_table(table_uri)
    scattered = list(range(1000, 4000, 3))  # 1000 rows: more than an inline vector holds
    assert len(encode_bitmap_array(np.arange(0, 3000, 3, dtype=np.uint64))) > INLINE_MAX_BYTES
    assert t.delete(pc.field("id").isin(pa.array([3, 50, 77, *scattered], pa.int64()))) == 1003
    kinds = {d["cardinality"]: d for d in dv_files(t).values()}
    assert kinds[3]["storageType"] == "i" and "offset" not in kinds[3]
    assert kinds[1000]["storageType"] == "u"
    assert len(dv_stored(table_uri)) == 1  # the large vector's file only
    first = t.version
    # An inline vector grows by its union, inline again, and writes no DV file.
    t.delete("id = 4 OR id = 99")
    assert sorted(d["cardinality"] for d in dv_files(t).values()) == [5, 1000]
    assert len(dv_stored(table_uri)) == 1
    want = sorted({*range(100), *range(1000, 4000)} - {3, 4, 50, 77, 99, *scattered})
    assert sorted(t.to_arrow()["id"].to_pylist()) == want
    changes_agree(t)
    vacuumed = t.vacuum(retention=dt.timedelta(0), enforce_retention=False).files
    assert not [f for f in vacuumed if f.startswith("deletion_vector_")]  # the DV file is live
    t.restore(version=first)
    assert sorted(t.to_arrow()["id"].to_pylist()) == sorted({*want, 4, 99})
    t.checkpoint()
    assert sorted(lf.Table(table_uri).to_arrow()["id"].to_pylist()) == sorted({*want, 4, 99})


def test_inline_vectors_are_read_by_deltalake_polars_and_duckdb(local_uri):
    from test_engines import read_duckdb
    t = mixed_table(local_uri)
    t.delete("id IN (3, 50, 77, 1001, 2002)")
    t.update("id IN (5, 1005)", set={"part": "'c'"})
    t.checkpoint()
    DeltaTable(local_uri).delete("id = 7")  # deltalake rewrites the file, reading the inline vector
    t = lf.Table(local_uri)
    t.delete("id = 8")
    ours = t.to_arrow()
    assert ours.num_rows == 3100 - 7
    agrees_with_deltalake(t, local_uri)
    assert_table_equal(pl.read_delta(local_uri).to_arrow().cast(ours.schema), ours)
    assert_table_equal(read_duckdb(local_uri, None, {}).select(ours.column_names).cast(ours.schema), ours)
    changes_agree(t)
    cdf = pa.table(DeltaTable(local_uri).load_cdf(starting_version=1, ending_version=3).read_all())
    assert sorted(change_keys(cdf)) == sorted(k for v in range(1, 4) for k in expected_changes(t, v))
