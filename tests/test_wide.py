"""Wide tables: thousands of columns read, filtered, diffed and merged correctly.

Statistics bounds are attached per filter (only for the columns a filter names),
so these checks also hold the pruning of that per-filter path to account.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf
from lakeflow.testing import assert_table_equal

from helpers import sql_scan

WIDTH = 3000
ODD = "odd name, with \"quotes\" and é"


def wide_rows(ids: list[int], value: int) -> pa.Table:
    cols = {"id": ids, **{f"c{i}": [value + i] * len(ids) for i in range(WIDTH)}}
    cols[ODD] = [f"v{value}"] * len(ids)
    return pa.table(cols)


@pytest.fixture
def wide(table_uri: str) -> lf.Table:
    t = lf.Table.create(table_uri, wide_rows([0], 0).schema, key=["id"])
    for k in range(3):  # one file per batch, each with its own statistics
        t.append(wide_rows([10 * k, 10 * k + 1], 100 * k))
    return t


@pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)
def test_filters_on_any_column_prune_by_statistics(wide: lf.Table) -> None:
    snap = wide.snapshot()
    last = f"c{WIDTH - 1}"
    for column, value in (("c0", 100), (last, 200 + WIDTH - 1), ("id", 21)):
        expr = pc.field(column) == value
        assert len(snap.files_matching(expr)) == 1, column
        got = snap.to_arrow(columns=["id"], filter=expr)
        assert got.num_rows == (1 if column == "id" else 2)
    assert len(snap.files_matching(pc.field(ODD) == "v100")) == 1
    assert snap.to_arrow(filter=pc.field(ODD) == "v100").column("id").to_pylist() == [10, 11]
    # A filter on a column without usable bounds prunes nothing and still filters.
    assert len(snap.files_matching(pc.field("c5") > 0)) == 3


@pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)
def test_wide_merge_and_diff_match_a_recomputation(wide: lf.Table) -> None:
    before = wide.snapshot()
    result = wide.merge(wide_rows([1, 99], 7), on=["id"])
    assert (result.inserted, result.updated) == (1, 1)
    d = wide.diff(before.version, result.version)
    assert (d.inserted.num_rows, d.updated.num_rows, d.deleted.num_rows) == (1, 1, 0)
    expected = pa.concat_tables([before.to_arrow().filter(pc.field("id") != 1), wide_rows([1, 99], 7)])
    assert_table_equal(wide.snapshot().to_arrow(), expected)


def test_deltalake_reads_a_wide_table(tmp_path) -> None:
    uri = str(tmp_path / "wide")
    t = lf.Table.create(uri, wide_rows([0], 0).schema)
    t.append(wide_rows([1, 2], 5))
    oracle = sql_scan(uri)
    assert_table_equal(oracle, t.to_arrow())
    assert lf.Table(uri).snapshot().to_polars().filter(pl.col("c0") == 5).collect().height == 2
