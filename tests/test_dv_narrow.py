"""Deletes and updates on deletion-vector tables find the rows by reading only the predicate's columns.

The other columns are read only for the rows that need them (change data, the
new values of an update), so a candidate file the predicate matches nowhere is
never read whole and gets no new action. Each case is checked against a model of
the rows, lakeflow's change feed against a recomputation, and (local) deltalake's
SQL scan and `load_cdf` at every version.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, WriterProperties, write_deltalake
from test_dv_writes import (
    agrees_with_deltalake,
    agrees_with_recomputation,
    change_keys,
    changes_agree,
    dv_files,
    expected_changes,
)

import lakeflow as lf

from helpers import commit_actions

# The predicates below name `v`, which is not the first column; `v` holds nulls.
SCHEMA = pa.schema([("id", pa.int64()), ("note", pa.string()), ("v", pa.int64())])


def rows(ids: range | list[int]) -> pa.Table:
    """Rows whose `v` is null for every id divisible by 5, else id % 7."""
    ids = list(ids)
    return pa.table({"id": ids, "note": [f"n{i}" for i in ids], "v": [None if i % 5 == 0 else i % 7 for i in ids]},
                    schema=SCHEMA)


def narrow_table(uri: str, cdf: bool) -> lf.Table:
    """A DV table of three files: ids 0-99, 100-199 and the even ids 300-398."""
    t = lf.Table.create(uri, SCHEMA, key=["id"], properties={
        "delta.enableDeletionVectors": "true", "delta.enableChangeDataFeed": str(cdf).lower()})
    t.append(rows(range(100)))
    t.append(rows(range(100, 200)))
    t.append(rows(range(300, 400, 2)))
    return t


def live(t: lf.Table) -> dict[int, tuple[str, int | None]]:
    got = t.to_arrow()
    return {r["id"]: (r["note"], r["v"]) for r in got.to_pylist()}


def check_changes(t: lf.Table, cdf: bool) -> None:
    """Diffs (and, with change data files, the change feed) equal a recomputation from the versions' rows."""
    agrees_with_recomputation(t)
    if cdf:  # without change data files the feed is the files' rows, copies included
        changes_agree(t)


def model() -> dict[int, tuple[str, int | None]]:
    return {r["id"]: (r["note"], r["v"]) for r in pa.concat_tables(
        [rows(range(100)), rows(range(100, 200)), rows(range(300, 400, 2))]).to_pylist()}


@pytest.mark.parametrize("cdf", [False, True])
def test_dv_deletes_on_a_later_column_keep_null_rows_and_union_vectors(table_uri, cdf):
    t = narrow_table(table_uri, cdf)
    want = model()
    # SQL three-valued logic: a null `v` is neither > 4 nor NOT > 4, so both deletes keep it.
    assert t.delete("v > 4") == sum(1 for _, v in want.values() if v is not None and v > 4)
    want = {i: r for i, r in want.items() if not (r[1] is not None and r[1] > 4)}
    assert live(t) == want
    assert t.delete(~(pc.field("v") > 1)) == sum(1 for _, v in want.values() if v is not None and v <= 1)
    want = {i: r for i, r in want.items() if not (r[1] is not None and r[1] <= 1)}
    assert live(t) == want  # every file now holds a DV: the union of both deletes
    assert sorted(d["cardinality"] for d in dv_files(t).values()) == sorted(
        n - sum(1 for i in want if i in ids) for n, ids in
        ((100, range(100)), (100, range(100, 200)), (50, range(300, 400, 2))))
    # On the vectors: rows numbered as read (deleted ones left out) map back to the file's rows.
    assert t.update("v = 2 AND id > 150", set={"note": "'x'"}) == sum(
        1 for i, (_, v) in want.items() if v == 2 and i > 150)
    want = {i: ("x" if v == 2 and i > 150 else n, v) for i, (n, v) in want.items()}
    assert live(t) == want
    check_changes(t, cdf)


@pytest.mark.parametrize("cdf", [False, True])
def test_a_candidate_file_without_matching_rows_gets_no_action(table_uri, cdf):
    t = narrow_table(table_uri, cdf)
    even = next(f.path for f in t.snapshot().files if f.num_records == 50)
    # id 351 is within the even file's stats (300..398), so it is a candidate, but no row matches.
    # A delete's change data is in its vectors, an update's in change data files.
    for op, cdc in ((lambda: t.delete("id IN (7, 351)"), False),
                    (lambda: t.update("id IN (8, 351)", set={"v": "v + 1"}), cdf)):
        assert op() == 1
        assert any("cdc" in a for a in commit_actions(t.storage, t.version)) == cdc
        touched = {a[k]["path"] for a in commit_actions(t.storage, t.version) for k in ("add", "remove") if k in a}
        assert even not in touched
    want = model()
    del want[7]
    want[8] = (want[8][0], want[8][1] + 1)
    assert live(t) == want
    check_changes(t, cdf)


def _garble_column(path: Path, column: str, groups: set[int] | None = None) -> None:
    """Overwrite the stored bytes of `column` in a Parquet file (in row `groups`, default all):
    any read of them fails."""
    meta = pq.ParquetFile(path).metadata
    index = meta.schema.to_arrow_schema().get_field_index(column)
    data = bytearray(path.read_bytes())
    for g in range(meta.num_row_groups) if groups is None else groups:
        chunk = meta.row_group(g).column(index)
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))


def test_dv_deletes_and_updates_read_only_the_columns_they_need(local_uri):
    """Local files, garbled in place: the column no read may touch cannot be read at all."""
    t = narrow_table(local_uri, cdf=True)
    even = next(f.path for f in t.snapshot().files if f.num_records == 50)
    _garble_column(Path(local_uri) / even, "note")
    with pytest.raises(lf.LakeflowError):
        t.to_arrow()
    # The even file is a candidate without a match: only its `id` and `v` columns are read.
    assert t.delete("id = 351 OR (v = 6 AND id < 200)") == sum(
        1 for i, (_, v) in model().items() if v == 6 and i < 200)
    assert t.update("id = 351 OR (v = 5 AND id < 200)", set={"v": "v * 10"}) == sum(
        1 for i, (_, v) in model().items() if v == 5 and i < 200)
    got = t.snapshot().to_arrow(columns=["id", "v"])
    want = {i: (v * 10 if v == 5 and i < 200 else v) for i, (_, v) in model().items() if not (v == 6 and i < 200)}
    assert dict(zip(got["id"].to_pylist(), got["v"].to_pylist(), strict=True)) == want


def test_narrow_dv_writes_are_read_by_deltalake_at_every_version(local_uri):
    t = narrow_table(local_uri, cdf=True)
    t.delete("v > 4")
    t.update("v IS NULL AND id < 150", set={"v": "id"})
    t.delete("v = 3 OR id = 351")
    t.update("v = 1", set={"note": "'one'", "v": "v + 100"})
    agrees_with_deltalake(t, local_uri)
    changes_agree(t)
    cdf = pa.table(DeltaTable(local_uri).load_cdf(starting_version=1).read_all())
    assert sorted(change_keys(cdf)) == sorted(k for v in range(1, t.version + 1) for k in expected_changes(t, v))


def test_change_data_of_dv_writes_reads_only_the_row_groups_holding_the_rows(local_uri):
    """A file of ten row groups (deltalake wrote it); the note column of all but groups 2 and 7 garbled."""
    write_deltalake(local_uri, rows(range(100)), writer_properties=WriterProperties(max_row_group_size=10))
    t = lf.Table(local_uri)
    t.set_properties({"delta.enableDeletionVectors": "true", "delta.enableChangeDataFeed": "true"})
    path = Path(local_uri) / t.snapshot().files[0].path
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 10
    _garble_column(path, "note", set(range(10)) - {2, 7})
    assert t.delete("id IN (21, 23, 78)") == 3
    assert t.update("id IN (26, 71) OR v = 100", set={"v": "v + 1"}) == 2
    changes = {c.version: sorted(zip(c.rows["id"].to_pylist(), c.rows["note"].to_pylist(),
                                     c.rows["_change_type"].to_pylist(), strict=True))
               for c in t.changes(t.version - 2, t.version)}
    assert changes[t.version - 1] == [(21, "n21", "delete"), (23, "n23", "delete"), (78, "n78", "delete")]
    assert changes[t.version] == sorted([(i, f"n{i}", k) for i in (26, 71) for k in ("update_preimage",
                                                                                      "update_postimage")])
    got = t.snapshot().to_arrow(columns=["id", "v"])
    want = {i: (v + 1 if i in (26, 71) else v) for i, (_, v) in model().items() if i < 100 and i not in (21, 23, 78)}
    assert dict(zip(got["id"].to_pylist(), got["v"].to_pylist(), strict=True)) == want


@pytest.mark.parametrize("cdf", [False, True])
def test_a_dv_over_a_file_deltalake_wrote_with_string_views_is_read(local_uri, cdf):
    """deltalake's rewrites store strings as `string_view` in the file's Arrow schema, which pyarrow cannot filter."""
    write_deltalake(local_uri, rows(range(21)), configuration={"delta.enableChangeDataFeed": str(cdf).lower()})
    DeltaTable(local_uri).delete("id = 20")  # its rewrite holds the string_view
    assert pq.read_schema(Path(local_uri) / lf.Table(local_uri).snapshot().files[0].path).field("note").type \
        == pa.string_view()
    t = lf.Table(local_uri)
    t.set_properties({"delta.enableDeletionVectors": "true"})
    assert t.delete("id = 3 OR v = 6") == 3  # ids 3, 6, 13
    assert t.update("id = 4", set={"note": "'four'"}) == 1
    want = {i: r for i, r in model().items() if i < 20 and i not in (3, 6, 13)} | {4: ("four", 4)}
    assert live(t) == want
    assert len(dv_files(t)) == 1
    agrees_with_deltalake(t, local_uri)
    if cdf:  # unkeyed: diffs do not pair an update's images, the change data files do
        changes_agree(t)


def test_dv_deletes_record_their_change_data_in_the_vectors_alone(local_uri):
    """A delete only removes rows: with vectors, readers take the deleted rows from the difference of a
    file's old and new vector (PROTOCOL.md, Change Data Files), so no change data file is written."""
    t = lf.Table.create(local_uri, pa.schema([*SCHEMA, ("part", pa.string())]), partition_by=["part"],
                        properties={"delta.enableDeletionVectors": "true"})
    for ids, part in ((range(100), "a"), (range(100, 200), "b"), (range(200, 250), "c")):
        t.append(rows(ids).append_column("part", pa.array([part] * len(ids))))
    t.delete("v = 3")  # a vector on every file
    t.delete("v = 4 OR id >= 200")  # the vectors grow; file c is removed whole
    t.overwrite(rows([1007, 1008]).append_column("part", pa.array(["a", "a"])),
                where="id IN (7, 8, 1007, 1008) AND part = 'a'")
    assert t.update("id = 103", set={"v": "0"}) == 1  # updates still write their images
    # Change data files: for the update, and for the delete that removes file c (which has a vector)
    # whole, as deltalake reads such a remove as the vector's rows.
    assert [v for v in range(4, t.version + 1) if any("cdc" in a for a in commit_actions(t.storage, v))] \
        == [5, 7]
    agrees_with_deltalake(t, local_uri)
    changes_agree(t)
    cdf = pa.table(DeltaTable(local_uri).load_cdf(starting_version=4).read_all())
    assert sorted(change_keys(cdf)) == sorted(k for v in range(4, t.version + 1) for k in expected_changes(t, v))
