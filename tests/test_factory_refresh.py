"""Refreshes of derived assets in a kept Project: warm handles, the fast paths, exactly-once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lakeflow as lf
import lakeflow.log_reader
from lakeflow.log import LOG_DIR

PROJECT = """\
tables: {tables}
assets:
  payments:
    schema: {{id: int64, account: int64, amount: double}}
    key: [id]
    ingest: {{format: parquet}}
  big:
    from: payments
    sql: "SELECT id, account, amount * 100 AS cents FROM payments WHERE amount > 10"
  loose:
    from: payments
    sql: "SELECT account, amount FROM payments WHERE amount > 10"
  balances:
    from: payments
    view: {{group_by: [account], aggregates: {{total: [amount, sum], n: count, top: [amount, max]}}}}
"""
DERIVED = ("big", "loose", "balances")


def rows(ids: range | list[int], amount: float = 20.0) -> pa.Table:
    return pa.table({"id": pa.array(list(ids), pa.int64()), "account": pa.array([i % 7 for i in ids], pa.int64()),
                     "amount": pa.array([amount + i % 5 for i in ids], pa.float64())})


def open_project(root: Path, tables: str) -> lf.Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lakeflow.yaml").write_text(PROJECT.format(tables=f"{tables}/"))
    return lf.Project(root)


def source_of(p: lf.Project) -> lf.Table:
    try:
        return p.table("payments")
    except lf.TableNotFoundError:
        return lf.Table.create(p.table_uri("payments"), rows(range(0)).schema, key=["id"])


def check(p: lf.Project, names: tuple[str, ...] = DERIVED) -> None:
    version = p.table("payments").version
    for name in names:
        rebuilt = p.rebuild(name, verify=True)
        assert (rebuilt.source_version, rebuilt.differences) == (version, 0), name


def test_a_kept_project_folds_in_what_another_project_refreshed(tmp_path, table_uri):
    kept, other = open_project(tmp_path, table_uri), lf.Project(tmp_path)
    source = source_of(kept)
    source.append(rows(range(10)))
    kept.run()
    source.append(rows(range(10, 20)))
    other.run()  # the kept project's handles are behind the derived tables now
    source.merge(rows(range(15, 25), amount=3.0))
    source.delete("id < 3")
    assert kept.run().refreshed == dict.fromkeys(DERIVED, source.version)
    check(kept)
    check(other)


@pytest.mark.parametrize("recreated", [False, True])
def test_a_kept_project_reopens_derived_tables_deleted_under_it(tmp_path, table_uri, recreated):
    p = open_project(tmp_path, table_uri)
    source = source_of(p)
    for batch in (range(10), range(10, 12), range(12, 14)):
        source.append(rows(batch))
        p.run()
    for name in DERIVED:  # no commits left: no table there any more
        storage = p.table(name).storage
        for f in storage.list_dir(LOG_DIR):
            storage.delete(f"{LOG_DIR}/{f.name}")
    if recreated:  # by another project: fewer versions than the kept handles read
        lf.Project(tmp_path).run()
    source.append(rows(range(14, 16)))
    assert p.run().refreshed == dict.fromkeys(DERIVED, source.version)
    check(p)


def test_a_refresh_in_a_kept_project_reads_only_new_commits(tmp_path, table_uri, monkeypatch):
    p = open_project(tmp_path, table_uri)
    source = source_of(p)
    source.append(rows(range(10)))
    p.run()
    listings: list[object] = []
    real = lakeflow.log_reader.list_log
    monkeypatch.setattr(lakeflow.log_reader, "list_log", lambda *a: listings.append(a) or real(*a))
    source.append(rows(range(10, 20)))
    p.run(list(DERIVED))
    assert listings == []  # opening a table lists its log; a warm handle probes the next version
    check(p)


@pytest.mark.parametrize("asset", ["big", "loose"])
def test_an_insert_only_refresh_reads_no_derived_file(tmp_path, table_uri, asset, monkeypatch):
    """The diff only added rows: their query output is appended, nothing of the derived table is read."""
    p = open_project(tmp_path, table_uri)
    source = source_of(p)
    source.append(rows(range(0, 200, 2)))
    p.run([asset])
    source.append(rows(range(1, 21, 2)))  # keys inside the derived file's key range
    read: list[int] = []
    real = lf.Snapshot.read_files
    monkeypatch.setattr(lf.Snapshot, "read_files", lambda self, files, *a, **k: read.append(len(files)) or
                        real(self, files, *a, **k))
    p.run([asset])
    assert sum(read) == 0
    before = p.table(asset).version
    assert p.refresh(asset) == source.version and p.table(asset).version == before  # exactly once
    check(p, (asset,))


@pytest.mark.parametrize("properties", ["", "    properties: {delta.enableDeletionVectors: 'true'}\n"])
def test_a_view_refresh_reads_each_view_file_once(tmp_path, table_uri, properties, monkeypatch):
    root = tmp_path / "p"
    root.mkdir()
    (root / "lakeflow.yaml").write_text(PROJECT.format(tables=f"{table_uri}/").replace(
        "  balances:\n", f"  balances:\n{properties}"))
    p = lf.Project(root)
    source = source_of(p)
    source.append(rows(range(50)))
    p.run(["balances"])
    source.append(rows(range(50, 60)))
    source.delete("id < 5")
    view_root = p.table("balances").storage.uri
    read: list[str] = []
    real = lf.Snapshot.read_files

    def counting(self: lf.Snapshot, files: list[lf.DataFile], *a: object, **k: object) -> list[pa.Table]:
        if self.storage.uri == view_root:
            read.extend(f.path for f in files)
        return real(self, files, *a, **k)

    monkeypatch.setattr(lf.Snapshot, "read_files", counting)
    lf.Project(root).run(["balances"])  # a new project: it keeps no view rows yet
    assert read and len(read) == len(set(read))
    check(p, ("balances",))


KEPT = PROJECT + """\
  balances_dv:
    from: payments
    properties: {{delta.enableDeletionVectors: "true"}}
    view: {{group_by: [account], aggregates: {{total: [amount, sum], n: count, top: [amount, max]}}}}
"""


@pytest.mark.parametrize("view", ["balances", "balances_dv"])
def test_a_kept_view_reads_back_none_of_its_files(tmp_path, table_uri, view, monkeypatch):
    """After its first refresh, a kept view handle has the rows of every view file it read or wrote."""
    (tmp_path / "lakeflow.yaml").write_text(KEPT.format(tables=f"{table_uri}/"))
    p = lf.Project(tmp_path)
    source = source_of(p)
    source.append(rows(range(50)))
    p.run([view])
    source.append(rows(range(50, 60)))
    p.run([view])  # reads the view file written by the first refresh (a new project handle)
    view_root = p.table(view).storage.uri
    read: list[str] = []
    real = lf.Snapshot.read_files

    def counting(self: lf.Snapshot, files: list[lf.DataFile], *a: object, **k: object) -> list[pa.Table]:
        if self.storage.uri == view_root:
            read.extend(f.path for f in files)
        return real(self, files, *a, **k)

    monkeypatch.setattr(lf.Snapshot, "read_files", counting)
    for batch in (range(60, 70), range(70, 75)):
        source.append(rows(batch))
        source.merge(rows(range(batch.start - 20, batch.start - 15), amount=1.0))
        source.delete(f"id = {batch.start - 30}")
        p.run([view])
        check(p, (view,))
    assert read == []


OPS = st.lists(st.tuples(st.sampled_from(["append", "merge", "delete", "other"]),
                         st.lists(st.integers(0, 40), min_size=1, max_size=8)), min_size=1, max_size=6)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_kept_derived_assets_equal_their_recomputation(tmp_path_factory, ops):
    """Appends, merges, deletes and refreshes by another project, folded in by one kept project."""
    root = tmp_path_factory.mktemp("kept")
    (root / "lakeflow.yaml").write_text(KEPT.format(tables="tables/"))
    p = lf.Project(root)
    source = source_of(p)
    source.append(rows(range(0, 40, 3)))
    p.run()
    for op, ids in ops:
        batch = rows(sorted(set(ids)), amount=float(len(ids)))
        if op == "append":
            new = [i for i in sorted(set(ids)) if i not in set(source.to_arrow()["id"].to_pylist())]
            if new:
                source.append(rows(new, amount=7.0))
        elif op == "merge":
            source.merge(batch)
        elif op == "delete":
            source.delete(f"id IN ({', '.join(map(str, ids))})")
        else:
            source.merge(batch)
            lf.Project(root).run()  # the kept handles are behind the derived tables
        p.run()
        check(p, (*DERIVED, "balances_dv"))


@pytest.mark.parametrize("asset", ["balances", "big"])
def test_copy_on_write_refreshes_do_not_add_a_file_each_time(tmp_path, table_uri, asset):
    """A replacement writes the rows kept from the files it rewrites and the new rows together."""
    p = open_project(tmp_path, table_uri)
    source = source_of(p)
    source.append(rows(range(0, 70, 2)))
    p.run([asset])
    for i in range(4):  # each change touches keys (groups) of every file, and leaves others
        source.merge(rows([10 * j + 2 * i for j in range(3)], amount=30.0 + i))  # updates only
        p.run([asset])
        assert len(p.table(asset).snapshot().files) == 1
    check(p, (asset,))
