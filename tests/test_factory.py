"""The factory: declared assets, landing folders ingested exactly once, derived assets kept current."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import textwrap
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.factory.derived import apply_sql
from lakeflow.factory.ingest import Folder
from lakeflow.testing import assert_table_equal
from lakeflow.transaction import Transaction

from helpers import sql_scan

PROJECT = """\
tables: tables/
assets:
  payments:
    schema: {id: int64, account: string, amount: double, ts: "timestamp[us, UTC]"}
    key: [id]
    event_time: ts
    ingest: {format: csv}
  rates:
    schema: {currency: string, rate: "decimal128(18, 6)"}
    ingest: {format: parquet}
  balances:
    from: payments
    view: {group_by: [account], aggregates: {balance: [amount, sum], payments: count}}
  big:
    from: payments
    sql: "SELECT id, account, amount * 100 AS cents FROM payments WHERE amount > 10"
"""
BIG = "SELECT id, account, amount * 100 AS cents FROM payments WHERE amount > 10"


def project(root: Path, text: str = PROJECT) -> lf.Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lakeflow.yaml").write_text(text)
    return lf.Project(root)


def land(root: Path, asset: str, name: str, text: str) -> Path:
    path = root / "ingest" / "landing" / asset / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def day(n: int, *rows: tuple[int, str, float]) -> str:
    lines = ["id,account,amount,ts"] + [f"{i},{a},{x},2024-05-0{n}T12:00:00Z" for i, a, x in rows]
    return "\n".join(lines) + "\n"



def ids(t: lf.Table) -> list[int]:
    return sorted(t.to_arrow().column("id").to_pylist())


def test_run_loads_archives_and_derives(tmp_path):
    p = project(tmp_path)
    land(tmp_path, "payments", "2024-05-01.csv", day(1, (1, "a", 5.0), (2, "b", 20.0)))
    land(tmp_path, "payments", "2024-05-02.csv", day(2, (3, "a", 30.0)))
    rates = tmp_path / "ingest" / "landing" / "rates" / "r.parquet"
    rates.parent.mkdir(parents=True)
    pq.write_table(pa.table({"currency": ["EUR"], "rate": pa.array([1], pa.decimal128(18, 6))}), rates)
    result = p.run()
    assert [f.outcome for f in result.ingested["payments"]] == ["loaded", "loaded"]
    assert result.refreshed == {"balances": 2, "big": 2}
    payments = p.table("payments")
    assert ids(payments) == [1, 2, 3] and payments.version == 2
    assert_table_equal(sql_scan(p.table_uri("payments")), payments.to_arrow())
    assert sorted(p.table("rates").to_arrow().column("currency").to_pylist()) == ["EUR"]
    assert list((tmp_path / "ingest" / "landing" / "payments").iterdir()) == []
    archived = sorted(f.name for f in (tmp_path / "ingest" / "archive" / "payments").rglob("*.csv"))
    assert archived == ["2024-05-01.csv", "2024-05-02.csv"]
    (c,) = [c for c in payments.history() if c.version == 1]
    assert c.app_id == "ingest/payments" and c.txn_version == 0
    assert c.info["lakeflow.ingest.file"] == "2024-05-01.csv" and len(c.info["lakeflow.ingest.sha256"]) == 64
    balances = {r["account"]: r["balance"] for r in p.table("balances").to_arrow().to_pylist()}
    assert balances == {"a": 35.0, "b": 20.0}
    assert sorted(r["id"] for r in p.table("big").to_arrow().to_pylist()) == [2, 3]
    assert_table_equal(sql_scan(p.table_uri("big")), p.table("big").to_arrow())
    assert p.run().ingested["payments"] == ()  # nothing new: nothing happens
    assert payments.version == 2


def test_a_crash_between_commit_and_archive_loads_nothing_twice(tmp_path, monkeypatch):
    p = project(tmp_path)
    land(tmp_path, "payments", "a.csv", day(1, (1, "a", 5.0)))
    land(tmp_path, "payments", "b.csv", day(1, (2, "a", 6.0)))
    real = Folder.move

    def crash(self, name, target, subdir):
        raise OSError("killed before the archive move")

    monkeypatch.setattr(Folder, "move", crash)
    with pytest.raises(OSError, match="killed"):
        p.ingest()
    monkeypatch.setattr(Folder, "move", real)
    assert ids(p.table("payments")) == [1]  # a.csv committed, not archived
    (a, b) = p.ingest()["payments"]
    assert (a.name, a.outcome, b.name, b.outcome) == ("a.csv", "already", "b.csv", "loaded")
    assert ids(p.table("payments")) == [1, 2]


def test_a_crash_between_data_write_and_commit_loads_once(tmp_path, monkeypatch):
    p = project(tmp_path)
    land(tmp_path, "payments", "a.csv", day(1, (1, "a", 5.0)))
    p.ingest()  # creates the table
    land(tmp_path, "payments", "b.csv", day(1, (2, "a", 6.0)))
    real = Transaction.commit

    def killed(self, *args, **kwargs):
        raise SystemExit("killed after writing data files, before the commit")

    monkeypatch.setattr(Transaction, "commit", killed)
    with pytest.raises(SystemExit):
        p.ingest()
    monkeypatch.setattr(Transaction, "commit", real)
    assert ids(p.table("payments")) == [1]
    assert [f.outcome for f in p.ingest()["payments"]] == ["loaded"]
    assert ids(p.table("payments")) == [1, 2]


def _ingest(root: str) -> None:
    lf.Project(root).ingest()


def test_two_concurrent_ingests_load_each_file_once(tmp_path):
    p = project(tmp_path)
    land(tmp_path, "payments", "a0.csv", day(1, (0, "a", 1.0)))
    p.ingest()
    for i in range(1, 13):
        land(tmp_path, "payments", f"a{i:02d}.csv", day(1, (i, "a", 1.0)))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_ingest, args=(str(tmp_path),)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    # a process may lose the archive move of a file the other moved: a re-run tidies up
    p.ingest()
    t = p.table("payments")
    assert ids(t) == list(range(13))
    loads = [c for c in t.history() if c.app_id == "ingest/payments"]
    assert len(loads) == 13 and sorted(c.txn_version for c in loads) == list(range(13))
    assert sorted(c.info["lakeflow.ingest.file"] for c in loads) == sorted(
        ["a0.csv", *(f"a{i:02d}.csv" for i in range(1, 13))])


def test_a_changed_file_under_a_loaded_name_is_refused(tmp_path):
    p = project(tmp_path)
    land(tmp_path, "payments", "a.csv", day(1, (1, "a", 5.0)))
    p.ingest()
    land(tmp_path, "payments", "a.csv", day(1, (1, "a", 5.0)))  # the same again: only archived
    assert [f.outcome for f in p.ingest()["payments"]] == ["already"]
    land(tmp_path, "payments", "a.csv", day(1, (1, "a", 999.0)))
    (f,) = p.ingest()["payments"]
    assert f.outcome == "rejected" and "other content" in (f.reason or "")
    assert p.table("payments").to_arrow().column("amount").to_pylist() == [5.0]
    reason = tmp_path / "ingest" / "landing" / "payments" / "_rejected" / "a.csv.reason.txt"
    assert "rename the file" in reason.read_text()


def test_a_bad_file_is_rejected_with_its_reason_and_the_others_load(tmp_path):
    p = project(tmp_path)
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0)))
    land(tmp_path, "payments", "2.csv", "id,account,amount,ts\nnot-a-number,a,1.0,2024-05-01T00:00:00Z\n")
    land(tmp_path, "payments", "3.csv", day(1, (3, "a", 7.0)))
    land(tmp_path, "payments", "4.csv", day(1, (1, "b", 8.0)))  # a key the table already has
    out = {f.name: f for f in p.ingest()["payments"]}
    assert {n: f.outcome for n, f in out.items()} == {
        "1.csv": "loaded", "2.csv": "rejected", "3.csv": "loaded", "4.csv": "rejected"}
    assert "cannot read it as csv" in (out["2.csv"].reason or "")
    assert "already in the table" in (out["4.csv"].reason or "")
    assert ids(p.table("payments")) == [1, 3]
    (status,) = [s for s in p.status() if s.name == "payments"]
    assert (status.rejected, status.pending, status.version, status.rows) == (2, 0, 2, 2)


@pytest.mark.parametrize(("text", "where", "field"), [
    ("assets:\n  x:\n    schema: {id: int64}\n    key: id\n", "lakeflow.yaml:4", "assets.x.key"),
    ("assets:\n  x:\n    schema: {id: int65}\n", "lakeflow.yaml:3", "assets.x.schema"),
    ("assets:\n  x:\n    schema: {id: int64}\n    ingest: {format: xls}\n", "lakeflow.yaml:4",
     "assets.x.ingest.format"),
    ("assets:\n  x:\n    from: y\n    sql: SELECT 1\n", "lakeflow.yaml", "from"),
    ("assets:\n  x:\n    schema: {id: int64}\n  y:\n    from: x\n    sql: SELECT id, count(*) FROM x GROUP BY id\n",
     "", "aggregate"),
    ("tables: [1]\n", "lakeflow.yaml:1", "tables"),
])
def test_a_bad_declaration_names_file_line_and_field(tmp_path, text, where, field):
    with pytest.raises(lf.DeclarationError) as e:
        project(tmp_path, text)
    assert where in str(e.value) and field in str(e.value)


def test_asset_files_are_the_same_model(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "payments.yaml").write_text(
        "schema:\n  id: int64\n  account: string\n  amount: double\n  ts: 'timestamp[us, UTC]'\n")
    (tmp_path / "assets" / "big.yaml").write_text(f"from: payments\nsql: {BIG}\n")
    (tmp_path / "assets" / "bad.yaml").write_text(
        "from: payments\nview:\n  group_by: [account]\n  aggregates: {n: count}\n  colour: red\n")
    with pytest.raises(lf.DeclarationError, match=r"bad.yaml:5: view.colour: Extra inputs"):
        lf.Project(tmp_path)
    (tmp_path / "assets" / "bad.yaml").unlink()
    p = lf.Project(tmp_path)
    assert p.order == ("payments", "big") and p.graph() == {"payments": ("big",), "big": ()}
    assert "payments --> big" in p.mermaid()


def test_cycles_and_unknown_sources_are_refused(tmp_path):
    with pytest.raises(lf.DeclarationError, match="cycle"):
        project(tmp_path, "assets:\n  a:\n    from: b\n    sql: SELECT * FROM b\n"
                          "  b:\n    from: a\n    sql: SELECT * FROM a\n")
    with pytest.raises(lf.DeclarationError, match="names no asset"):
        project(tmp_path, "assets:\n  a:\n    from: nope\n    sql: SELECT * FROM nope\n")


@pytest.mark.parametrize(("sql", "what"), [
    ("SELECT account, sum(amount) FROM payments GROUP BY account", "aggregate"),
    ("SELECT * FROM payments p JOIN payments q ON p.id = q.id", "join"),
    ("SELECT id, row_number() OVER (ORDER BY id) FROM payments", "window"),
    ("SELECT DISTINCT account FROM payments", "DISTINCT"),
    ("SELECT * FROM payments ORDER BY id", "ORDER BY"),
    ("SELECT * FROM payments LIMIT 3", "LIMIT"),
    ("SELECT * FROM (SELECT * FROM payments) s", "subquery"),
    ("SELECT id, random() FROM payments", "(?i)rand.*volatile"),
    ("SELECT * FROM other", "exactly one table"),
])
def test_sql_that_is_not_row_wise_is_refused_by_name(sql, what):
    with pytest.raises(lf.SqlAssetError, match=what):
        lf.factory.derived.check_sql(sql, "payments")


def check_derived(p: lf.Project) -> None:
    """Each derived asset equals its from-scratch recomputation at the source's version."""
    source = p.table("payments")
    fresh = apply_sql(BIG, "payments", source.to_arrow())
    assert_table_equal(p.table("big").to_arrow(), fresh)
    assert p.rebuild("big", verify=True).differences == 0
    rebuilt = p.rebuild("balances", verify=True)
    assert rebuilt.differences == 0 and rebuilt.source_version == source.version
    totals = (pl.from_arrow(source.to_arrow()).group_by("account")
              .agg(pl.col("amount").sum().alias("balance"), pl.len().alias("payments")))
    view = pl.from_arrow(p.table("balances").to_arrow().select(["account", "balance", "payments"]))
    assert_table_equal(view.to_arrow(), totals.to_arrow().cast(view.to_arrow().schema))


OPS = st.lists(st.tuples(st.sampled_from(["append", "merge", "delete"]),
                         st.lists(st.tuples(st.integers(0, 12), st.sampled_from("abc"),
                                            st.sampled_from([1.0, 11.0, 25.5])), min_size=1, max_size=5)),
               min_size=1, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_derived_assets_equal_their_recomputation_at_every_version(tmp_path_factory, ops):
    root = tmp_path_factory.mktemp("p")
    p = project(root)
    land(root, "payments", "0.csv", day(1, (100, "a", 50.0)))
    p.run()
    source = p.table("payments")
    for op, rows in ops:
        unique = {i: (i, a, x) for i, a, x in rows}
        batch = pa.table({"id": [r[0] for r in unique.values()], "account": [r[1] for r in unique.values()],
                          "amount": [r[2] for r in unique.values()],
                          "ts": pa.array([dt.datetime(2024, 5, 2, tzinfo=dt.timezone.utc)] * len(unique),
                                         pa.timestamp("us", "UTC"))})
        if op == "append":
            new = batch.filter(pc.invert(pc.is_in(batch["id"], source.to_arrow()["id"])))
            if new.num_rows:
                source.append(new)
        elif op == "merge":
            source.merge(batch)
        else:
            source.delete(pc.is_in(pc.field("id"), batch["id"]))
        p.run()
        check_derived(p)
    rebuilt = p.rebuild("big")
    assert rebuilt.source_version == source.version
    assert p.rebuild("balances").source_version == source.version  # views rebuild too
    check_derived(p)


def test_status_says_where_every_asset_stands(tmp_path):
    p = project(tmp_path)
    assert {s.name: s.version for s in p.status()} == dict.fromkeys(("payments", "rates", "balances", "big"))
    land(tmp_path, "payments", "a.csv", day(1, (1, "a", 5.0)))
    p.run()
    land(tmp_path, "payments", "b.csv", day(1, (2, "a", 50.0)))
    p.ingest()
    status = {s.name: s for s in p.status()}
    assert status["payments"].version == 2 and status["payments"].last_ingest is not None
    assert (status["big"].reflects, status["big"].behind) == (1, 1)
    assert (status["balances"].kind, status["balances"].behind) == ("view", 1)
    p.run()
    assert {s.name: s.behind for s in p.status() if s.source} == {"balances": 0, "big": 0}


def test_init_writes_a_project_that_runs(tmp_path):
    p = lf.Project.init(tmp_path / "bank")
    land(tmp_path / "bank", "payments", "d1.csv", day(1, (1, "a", 5.0), (2, "a", 7.0)))
    assert p.run().refreshed == {"balances": 1}
    assert p.table("balances").to_arrow().column("balance").to_pylist() == [12.0]
    with pytest.raises(lf.InvalidArgumentError, match="already holds"):
        lf.Project.init(tmp_path / "bank")


def test_json_schema_is_published(tmp_path):
    import json

    published = Path(__file__).parents[1] / "docs" / "lakeflow-project.schema.json"
    # Regenerate after changing the declarations: json.dumps(lf.factory.project_json_schema(), indent=2)
    assert json.loads(published.read_text()) == lf.factory.project_json_schema()


@pytest.mark.parametrize("late", ["accept", "reject"])
def test_a_watermark_lag_makes_rows_of_later_files_late(tmp_path, late):
    p = project(tmp_path, PROJECT.replace("    event_time: ts\n    ingest: {format: csv}",
                                          f"    event_time: ts\n    late: {late}\n"
                                          "    ingest: {format: csv, watermark_lag: 1h}"))
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0)))  # 2024-05-01T12:00: watermark 11:00
    land(tmp_path, "payments", "2.csv", "id,account,amount,ts\n2,a,1.0,2024-05-01T10:30:00Z\n")
    first, second = p.ingest()["payments"]
    assert first.outcome == "loaded"
    t = p.table("payments")
    assert t.watermark == dt.datetime(2024, 5, 1, 11, tzinfo=dt.timezone.utc)
    if late == "reject":
        assert second.outcome == "rejected" and "behind the table watermark" in (second.reason or "")
        assert ids(t) == [1]
    else:
        assert second.outcome == "loaded" and t.history(limit=1)[0].late_rows == 1
        assert ids(t) == [1, 2]


def test_a_watermark_lag_needs_an_event_time(tmp_path):
    with pytest.raises(lf.DeclarationError, match="watermark_lag needs event_time"):
        project(tmp_path, "assets:\n  x:\n    schema: {id: int64}\n    ingest: {watermark_lag: 1h}\n")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from lakeflow.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_factory_from_the_command_line(tmp_path, capsys):
    import json

    root = tmp_path / "bank"
    assert cli(capsys, "init", str(root))[0] == 0
    code, out, _ = cli(capsys, "validate", str(root), "--json")
    assert code == 0 and json.loads(out) == {"assets": {"payments": "ingested", "balances": "view"},
                                             "order": ["payments", "balances"]}
    land(root, "payments", "d1.csv", day(1, (1, "a", 5.0), (2, "b", 7.0)))
    code, out, _ = cli(capsys, "ingest", str(root), "--json")
    assert code == 0 and [f["outcome"] for f in json.loads(out)["files"]] == ["loaded"]
    land(root, "payments", "d2.csv", day(2, (3, "a", 1.0)))
    code, out, _ = cli(capsys, "run", str(root), "--json")
    assert code == 0 and json.loads(out)["refreshed"] == {"balances": 2}
    code, out, _ = cli(capsys, "status", str(root), "--json")
    status = {a["name"]: a for a in json.loads(out)["assets"]}
    assert (status["payments"]["version"], status["balances"]["behind"]) == (2, 0)
    code, out, _ = cli(capsys, "rebuild", str(root), "balances", "--verify", "--json")
    assert code == 0 and json.loads(out)["differences"] == 0
    code, out, _ = cli(capsys, "graph", str(root), "--mermaid")
    assert code == 0 and "payments --> balances" in out
    code, out, _ = cli(capsys, "status", str(root))
    assert code == 0 and "payments" in out and "balances" in out
    (root / "assets" / "balances.yaml").write_text("from: payments\nview:\n  group_by: account\n")
    code, _, err = cli(capsys, "validate", str(root))
    assert code == 1 and "balances.yaml:3" in err and len(err.strip().splitlines()) == 1


def test_tables_and_landing_folders_on_an_object_store(tmp_path):
    root = f"memory://factory-{tmp_path.name}"
    p = project(tmp_path, PROJECT.replace("tables: tables/", f"tables: {root}/tables/\nlanding: {root}/landing/\n"
                                                             f"archive: {root}/archive/"))
    landing = p.landing("payments")
    landing.write("a.csv", day(1, (1, "a", 5.0)).encode())
    assert [f.outcome for f in p.run().ingested["payments"]] == ["loaded"]
    assert ids(p.table("payments")) == [1] and p.table_uri("payments").startswith("memory://")
    assert landing.names("*.csv") == [] and p.archive("payments").fs.exists(f"{p.archive('payments').root}")
    assert [r["id"] for r in p.table("big").to_arrow().to_pylist()] == []


def test_ingest_reports_each_file_as_it_goes(tmp_path):
    p = project(tmp_path)
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0)))
    land(tmp_path, "payments", "2.csv", "not,a,csv\n")
    assert p.pending() == 2 and p.pending("payments") == 2
    seen: list[str] = []
    result = p.ingest(on_file=lambda f: seen.append(f"{f.name}:{f.outcome}"))
    assert seen == ["1.csv:loaded", "2.csv:rejected"] == [f"{f.name}:{f.outcome}" for f in result["payments"]]
    assert p.pending() == 0


def test_derived_assets_take_table_properties(tmp_path):
    dv = "{delta.enableDeletionVectors: 'true'}"
    text = PROJECT.replace("    view: {group_by: [account]", f"    properties: {dv}\n    view: {{group_by: [account]")
    p = project(tmp_path, text.replace("    sql: \"SELECT", f"    properties: {dv}\n    sql: \"SELECT"))
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0), (2, "b", 20.0), (3, "a", 30.0)))
    p.run()
    source = p.table("payments")
    source.merge(pa.table({"id": [3], "account": ["a"], "amount": [31.0], "ts": source.to_arrow()["ts"].slice(0, 1)}))
    p.run()
    for name in ("balances", "big"):
        t = p.table(name)
        assert t.properties["delta.enableDeletionVectors"] == "true"
        assert p.rebuild(name, verify=True).differences == 0
        assert_table_equal(sql_scan(p.table_uri(name)), t.to_arrow())
    assert any(f.deletion_vector is not None for f in p.table("balances").snapshot().files)


# ---- regressions found by review ---------------------------------------------------------------


def test_a_stale_key_replacement_conflicts_with_a_newer_one_of_the_same_application(table_uri):
    """Two refreshes of one derived table: the one that read the table before the other committed
    must not commit on top (its keys do not say which rows the other wrote)."""
    from lakeflow.ops.replace import replace_keys

    t = lf.Table.create(table_uri, pa.schema([("g", pa.string()), ("s", pa.int64())]))
    stale = t.snapshot()
    replace_keys(t.snapshot(), pa.table({"g": ["z"], "s": [5]}), ["g"], app_id="derive/x", txn_version=2)
    with pytest.raises(lf.CommitConflictError, match="derive/x"):
        replace_keys(stale, pa.table({"g": ["a"], "s": [7]}), ["g"], app_id="derive/x", txn_version=3)
    assert t.to_arrow().to_pylist() == [{"g": "z", "s": 5}]


def test_a_renamed_key_is_no_key(tmp_path):
    p = project(tmp_path, PROJECT.replace(BIG, "SELECT account AS id, id AS src_id FROM payments"))
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0), (2, "a", 7.0)))
    p.run()
    assert p.table("big").key == ()
    p.table("payments").delete("id = 1")
    p.run()
    assert [r["src_id"] for r in p.table("big").to_arrow().to_pylist()] == [2]


def test_a_header_only_file_is_loaded_as_no_rows(tmp_path):
    p = project(tmp_path)
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0)))
    land(tmp_path, "payments", "2.csv", "id,account,amount,ts\n")
    land(tmp_path, "payments", "3.csv", day(1, (3, "a", 5.0)))
    assert [f.outcome for f in p.ingest()["payments"]] == ["loaded", "loaded", "loaded"]
    assert ids(p.table("payments")) == [1, 3]
    land(tmp_path, "payments", "2.csv", "id,account,amount,ts\n")
    assert [f.outcome for f in p.ingest()["payments"]] == ["already"]


def test_reader_options_that_do_not_fit_are_a_declaration_error(tmp_path):
    p = project(tmp_path, PROJECT.replace("ingest: {format: csv}", "ingest: {format: csv, options: {delimeter: ';'}}"))
    land(tmp_path, "payments", "1.csv", day(1, (1, "a", 5.0)))
    with pytest.raises(lf.DeclarationError, match="delimeter"):
        p.ingest()
