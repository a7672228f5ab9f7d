"""Regression tests for bugs found in review of the column-mapping / refresh / log-state / bulk-write / DV merge."""

from __future__ import annotations

import collections

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.ops.replace import replace_keys

_KV = pa.schema([("id", pa.int64()), ("v", pa.int64())])


def _row_changes(t: lf.Table, v: int) -> list[tuple[int, int, str]]:
    """Commit v's changes recomputed from the rows of v - 1 and v (multisets of whole rows)."""
    before = collections.Counter((r["id"], r["v"]) for r in t.snapshot(version=v - 1).to_arrow().to_pylist())
    after = collections.Counter((r["id"], r["v"]) for r in t.snapshot(version=v).to_arrow().to_pylist())
    return sorted([(*k, "delete") for k in (before - after).elements()]
                  + [(*k, "insert") for k in (after - before).elements()])


def _feed(rows: pa.Table) -> list[tuple[int, int, str]]:
    return sorted(zip(rows["id"].to_pylist(), rows["v"].to_pylist(), rows["_change_type"].to_pylist(), strict=True))


@pytest.mark.parametrize("dv", [False, True])
def test_replace_keys_change_feed_is_the_rows_replaced(local_uri, dv):
    """Key replacement on a CDF table: deltalake's load_cdf and lakeflow's changes() report the rows
    replaced, not rows copied out of rewritten files, nor a removed file's deletion vector."""
    t = lf.Table.create(local_uri, _KV, key=["id"], properties={
        "delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": str(dv).lower()})
    t.append(pa.table({"id": [1, 2, 3], "v": [1, 2, 3]}, schema=_KV))
    replace_keys(t.snapshot(), pa.table({"id": [2], "v": [20]}, schema=_KV), ["id"], app_id="a", txn_version=1)
    t.refresh()
    t.delete("id = 3")  # (with vectors: the file keeps a vector)
    replace_keys(t.snapshot(), pa.table({"id": [9], "v": [9]}, schema=_KV), ["id"],
                 pa.table({"id": [1]}), app_id="a", txn_version=2)  # removes what is left of the first file
    t.refresh()
    for v in range(2, t.version + 1):
        expected = _row_changes(t, v)
        lakeflow_feed = sorted(x for c in t.changes(v - 1, v) for x in _feed(c.rows))
        deltalake_feed = _feed(pa.table(DeltaTable(local_uri).load_cdf(starting_version=v, ending_version=v)
                                        .read_all()))
        assert lakeflow_feed == expected, v
        assert deltalake_feed == expected, v


def test_copy_on_write_merge_removing_a_file_with_a_vector_agrees_with_deltalake_cdf(local_uri):
    """Vectors turned off again: a merge that deletes every row left in a file that still has a vector
    removes it whole; without change data files deltalake reads that remove as the vector's rows."""
    t = lf.Table.create(local_uri, _KV, key=["id"], properties={
        "delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"})
    t.append(pa.table({"id": [1, 2, 3], "v": [1, 2, 3]}, schema=_KV))
    t.delete("id = 2")
    t.set_properties({"delta.enableDeletionVectors": "false"})
    t.merge(pa.table({"id": [1, 3, 7], "v": [0, 0, 7]}, schema=_KV), when_matched="delete",
            when_not_matched="insert")
    v = t.version
    expected = _row_changes(t, v)
    assert sorted(x for c in t.changes(v - 1, v) for x in _feed(c.rows)) == expected
    assert _feed(pa.table(DeltaTable(local_uri).load_cdf(starting_version=v, ending_version=v).read_all())) \
        == expected


def test_full_overwrite_of_a_dv_table_agrees_with_deltalake_cdf(local_uri):
    """An overwrite removes every file; one that has a vector reads, in deltalake's load_cdf, as the
    vector's rows unless the commit has change data files (as a delete writes them)."""
    t = lf.Table.create(local_uri, _KV, properties={
        "delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"})
    t.append(pa.table({"id": [1, 2, 3], "v": [1, 2, 3]}, schema=_KV))
    t.delete("id = 2")
    t.overwrite(pa.table({"id": [8], "v": [8]}, schema=_KV))
    v = t.version
    expected = _row_changes(t, v)
    assert sorted(x for c in t.changes(v - 1, v) for x in _feed(c.rows)) == expected
    assert _feed(pa.table(DeltaTable(local_uri).load_cdf(starting_version=v, ending_version=v).read_all())) \
        == expected


def test_rebuilding_a_derived_table_with_vectors_agrees_with_deltalake_cdf(tmp_path):
    """A derived asset's rebuild removes every file; one with a vector (from a key replacement) reads,
    in deltalake's load_cdf, as the vector's rows unless the commit has change data files."""
    from lakeflow.factory.derived import SqlAsset

    source = lf.Table.create(str(tmp_path / "src"), _KV, key=["id"])
    source.append(pa.table({"id": [1, 2, 3], "v": [1, 2, 3]}, schema=_KV))
    spec = SqlAsset("d", "src", "SELECT id, v FROM src")
    target = lf.Table.create(str(tmp_path / "d"), _KV, key=["id"], properties={
        "delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"})
    spec.refresh(source, target)
    source.update("id = 2", set={"v": "20"})
    spec.refresh(source, target)  # marks the old row 2 in a vector
    target.refresh()
    assert any(f.deletion_vector is not None for f in target.snapshot().files)
    spec.rebuild(source, target)
    target.refresh()
    v = target.version
    # A rebuild writes every row anew: every row out, every row in (both readers must say so).
    expected = sorted([(r["id"], r["v"], "delete") for r in target.snapshot(version=v - 1).to_arrow().to_pylist()]
                      + [(r["id"], r["v"], "insert") for r in target.snapshot(version=v).to_arrow().to_pylist()])
    assert sorted(x for c in target.changes(v - 1, v) for x in _feed(c.rows)) == expected
    assert _feed(pa.table(DeltaTable(str(tmp_path / "d")).load_cdf(starting_version=v, ending_version=v)
                          .read_all())) == expected


@pytest.mark.parametrize("shrink", [False, True])
def test_restore_removing_a_file_with_a_vector_agrees_with_deltalake_cdf(local_uri, shrink):
    """Restore removes a file that has a vector whole: deltalake's load_cdf reads such a remove as the
    vector's rows unless the commit has change data files (with `shrink`, another file's vector also
    goes back to an older one in the same commit)."""
    t = lf.Table.create(local_uri, _KV, properties={
        "delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"})
    t.append(pa.table({"id": [1, 5, 6], "v": [1, 5, 6]}, schema=_KV))
    if shrink:
        t.delete("id = 5")
    first = t.version
    t.append(pa.table({"id": [2, 3, 4], "v": [2, 3, 4]}, schema=_KV))
    t.delete("id = 3")
    if shrink:
        t.delete("id = 6")
    t.restore(first)  # removes the second file, which has a vector, whole
    v = t.version
    expected = _row_changes(t, v)
    assert sorted(x for c in t.changes(v - 1, v) for x in _feed(c.rows)) == expected
    assert _feed(pa.table(DeltaTable(local_uri).load_cdf(starting_version=v, ending_version=v).read_all())) \
        == expected


def test_drop_columns_given_a_list_raises_a_lakeflow_error(local_uri):
    t = lf.Table.create(local_uri, _KV)
    with pytest.raises(lf.InvalidArgumentError):
        t.drop_columns(["v"])
    assert t.schema.names == ["id", "v"]


def test_a_view_table_is_not_restored_but_rebuilt(tmp_path):
    # A restore would bring old rows back under the newest txn: the next refresh would
    # fold only newer source commits onto them.
    from test_views import AGGS, SCHEMA, at, check, payments

    source = lf.Table.create(str(tmp_path / "src"), SCHEMA)
    view = lf.View.create(str(tmp_path / "v"), source, group_by=["account"], aggregates=AGGS)
    source.append(payments(("a", 10, 0.5, at(1)), ("b", 5, None, at(1))))
    view.refresh()
    before = view.table.version
    source.append(payments(("a", 1, 0.5, at(1)),))
    view.refresh()
    with pytest.raises(lf.InvalidArgumentError, match="rebuild"):
        view.table.restore(before)
    assert view.table.version == before + 1
    source.append(payments(("b", 2, 0.5, at(1)),))
    view.refresh()
    check(view, source, source.refresh(), ["account"])


def test_a_sql_asset_table_is_not_restored(tmp_path):
    project = tmp_path / "p"
    (project / "ingest" / "landing" / "raw").mkdir(parents=True)
    (project / "lakeflow.yaml").write_text(
        "assets:\n"
        "  raw:\n    schema: {id: int64, v: int64}\n    key: [id]\n    ingest: {format: csv}\n"
        "  big:\n    from: raw\n    sql: SELECT id, v FROM raw WHERE v > 1\n")
    (project / "ingest" / "landing" / "raw" / "a.csv").write_text("id,v\n1,1\n2,5\n")
    p = lf.Project(project)
    p.run()
    big = p.table("big")
    with pytest.raises(lf.InvalidArgumentError, match="derive/big"):
        big.restore(0)


def test_a_renamed_column_of_an_ingested_table_is_a_declaration_error_not_rejected_files(tmp_path, capsys):
    from lakeflow.cli import main

    project = tmp_path / "p"
    landing = project / "ingest" / "landing" / "raw"
    landing.mkdir(parents=True)
    (project / "lakeflow.yaml").write_text(
        "assets:\n  raw:\n    schema: {id: int64, amount: int64}\n    ingest: {format: csv}\n")
    (landing / "a.csv").write_text("id,amount\n1,1\n")
    p = lf.Project(project)
    p.run()
    p.table("raw").rename_column("amount", "amt")
    (landing / "b.csv").write_text("id,amount\n2,2\n")
    with pytest.raises(lf.DeclarationError, match=r"lakeflow.yaml: raw.schema declares \['amount'\]"):
        lf.Project(project).ingest()
    assert (landing / "b.csv").exists() and not (landing / "_rejected").exists()
    assert main(["validate", str(project)]) == 1
    assert "raw.schema declares" in capsys.readouterr().err
