"""The command line: JSON output, one-line errors with exit code 1."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable, QueryBuilder

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.testing import assert_table_equal

from helpers import sql_scan


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def table(tmp_path):
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1, 2]}))
    t.append(pa.table({"id": [3]}))
    return uri


def test_demo_json(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", str(tmp_path), "--json")
    result = json.loads(out)
    assert code == 0
    assert [(f["file"], f["outcome"]) for f in result["loads"]] == [
        ("2024-05-01.csv", "loaded"), ("2024-05-02.csv", "loaded"), ("2024-05-03.csv", "loaded"),
        ("2024-05-02.csv", "already")]
    assert result["late_rows"] == 1
    assert (result["day1_before"]["alice"], result["day1_after"]["alice"]) == ("100.00", "40.00")
    assert [r["_change_type"] for r in result["retraction"]] == ["update_preimage", "update_postimage"]
    assert [r["id"] for r in result["diff_inserted"]] == [7] and result["as_of_rows"] == 2
    for uri in result["tables"]:  # plain Delta tables
        assert_table_equal(sql_scan(uri), lf.Table(uri).to_arrow())


def test_demo_tells_the_story(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", str(tmp_path))
    assert code == 0
    for line in ("(kept)", "exactly-once commit", "1 late row recorded", "after: {'alice': '40.00'",
                 "update_preimage", "deltalake counts 7 rows, polars.scan_delta 7"):
        assert line in out


def test_info_history_show(table, capsys):
    code, out, _ = run(capsys, "info", table, "--json")
    assert code == 0 and json.loads(out)["num_rows"] == 3
    code, out, _ = run(capsys, "history", table, "--json")
    assert [h["version"] for h in json.loads(out)] == [2, 1, 0]
    code, out, _ = run(capsys, "show", table, "--version", "1", "--json")
    assert sorted(r["id"] for r in json.loads(out)["rows"]) == [1, 2]
    code, out, _ = run(capsys, "show", table)
    assert code == 0 and "version 2" in out


def test_maintenance_commands(table, capsys):
    code, out, _ = run(capsys, "compact", table, "--json")
    assert code == 0 and json.loads(out)["files_removed"] == 2
    code, out, _ = run(capsys, "vacuum", table, "--retention-hours", "0", "--json")
    assert code == 1
    code, out, _ = run(capsys, "vacuum", table, "--retention-hours", "0", "--force", "--json")
    assert code == 0 and len(json.loads(out)["files"]) == 2
    code, out, _ = run(capsys, "checkpoint", table, "--json")
    assert json.loads(out) == {"checkpoint_version": 3}


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    code, out, err = run(capsys, "info", str(tmp_path / "missing"))
    assert code == 1 and out == ""
    assert err.startswith("error: TableNotFoundError:")
    code, _, err = run(capsys, "show", str(tmp_path / "missing"), "--version", "3")
    assert code == 1 and "TableNotFoundError" in err


def test_usage_error_exit_code(capsys):
    assert main(["show"]) == 2


def test_diff_command(table, capsys):
    code, out, _ = run(capsys, "diff", table, "1", "--json")
    result = json.loads(out)
    assert code == 0 and (result["from_version"], result["to_version"]) == (1, 2)
    assert [(r["id"], r["_change_type"]) for r in result["changes"]] == [(3, "insert")]
    code, out, _ = run(capsys, "diff", table, "0", "2")
    assert code == 0 and "inserted=3" in out
    code, _, err = run(capsys, "diff", table, "9")
    assert code == 1 and "VersionNotFoundError" in err


def _lakeflow(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a fresh process, its output piped (not a terminal)."""
    return subprocess.run([sys.executable, "-c", "from lakeflow.cli import entry; entry()", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_errors_are_one_line_when_piped(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 6, "missing")
    proc = _lakeflow("info", str(deep))
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: TableNotFoundError:") and str(deep) in lines[0]


def test_piped_tables_are_not_wrapped(tmp_path):
    uri = str(tmp_path.joinpath(*["a-rather-long-directory-name"] * 4, "t"))
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1]}), app_id="an-application-id-that-is-long", txn_version=1)
    proc = _lakeflow("history", uri)
    assert proc.returncode == 0
    assert f"history of {uri}" in proc.stdout
    assert any("an-application-id-that-is-long" in line for line in proc.stdout.splitlines())


@pytest.mark.parametrize("limit", ["-2", "-1"])
def test_negative_limits_are_usage_errors(table, capsys, limit):
    for command in ("history", "show", "diff"):
        args = [command, table, "--limit", limit] + (["0"] if command == "diff" else [])
        assert main(args) == 2, command


def test_history_refuses_negative_limit(table):
    with pytest.raises(lf.InvalidArgumentError, match="limit"):
        lf.Table(table).history(-2)
    assert [c.version for c in lf.Table(table).history(0)] == []


def test_json_says_when_rows_were_cut(table, capsys):
    code, out, _ = run(capsys, "show", table, "--limit", "2", "--json")
    result = json.loads(out)
    assert code == 0 and (result["num_rows"], result["truncated"], len(result["rows"])) == (3, True, 2)
    code, out, _ = run(capsys, "show", table, "--json")
    assert json.loads(out)["truncated"] is False
    code, out, _ = run(capsys, "diff", table, "0", "--limit", "1", "--json")
    result = json.loads(out)
    assert (result["num_changes"], result["truncated"], len(result["changes"])) == (3, True, 1)


@pytest.mark.parametrize(("args", "named"), [(["5", "abc"], "TO_VERSION 'abc'"),
                                             (["abc", "1"], "FROM_VERSION 'abc'"),
                                             (["2024-05-01T00:00:00", "1"], "FROM_VERSION")])
def test_diff_names_the_bad_argument(table, capsys, args, named):
    code, _, err = run(capsys, "diff", table, *args)
    assert code == 1 and err.startswith("error: InvalidArgumentError:") and named in err


# ---- the whole command set, through CliRunner's isolation (binary stdout, env) ----------------

UTC = dt.timezone.utc


@dataclass
class Ran:
    code: int
    out: str
    err: str
    raw: bytes

    def json(self):
        assert self.code == 0, self.err
        return json.loads(self.out)


def cli(*args, env=None) -> Ran:
    """`lakeflow ARGS` in this process, with stdout/stderr captured as bytes (as a pipe sees them)."""
    with CliRunner().isolation(env=env) as (out, err, _):
        code = main([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
        raw, error = out.getvalue(), err.getvalue().decode()
    return Ran(code, raw.decode(errors="replace"), error, raw)


@pytest.fixture(params=["local", "s3"])
def uri(request, tmp_path):
    """A table location deltalake can read too (the oracle for what the commands wrote)."""
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return f"s3://lakeflow-tests/cli-{tmp_path.name}-{id(request)}"
    return str(tmp_path / "t")


def oracle(uri: str, sql: str = "SELECT * FROM t") -> pa.Table:
    options = None
    if uri.startswith("s3://"):  # the S3 server the environment points at (see conftest)
        options = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        options |= {"AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    return pa.table(QueryBuilder().register("t", DeltaTable(uri, storage_options=options)).execute(sql).read_all())


SCHEMA_TEXT = "account:string not null,amount:double,ts:timestamp[us,UTC],day:date"


def _files(tmp_path, rows: list[dict]) -> dict[str, Path]:
    """The same rows as csv, ndjson and parquet files."""
    table = pa.table({"account": [r["account"] for r in rows], "amount": [r["amount"] for r in rows],
                      "ts": pa.array([r["ts"] for r in rows], pa.timestamp("us", tz="UTC")),
                      "day": [r["ts"].date() for r in rows]})
    out = {}
    for fmt in ("csv", "ndjson", "parquet"):
        path = tmp_path / f"rows-{len(list(tmp_path.iterdir()))}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path)
        elif fmt == "csv":
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(table.column_names)
                for r in table.to_pylist():
                    w.writerow([r["account"], r["amount"], r["ts"].isoformat(), r["day"].isoformat()])
        else:
            path.write_text("".join(json.dumps({**r, "ts": r["ts"].isoformat(), "day": r["day"].isoformat()}) + "\n"
                                    for r in table.to_pylist()))
        out[fmt] = path
    return out


def _row(account, amount, day, hour):
    return {"account": account, "amount": amount, "ts": dt.datetime(2024, 5, day, hour, tzinfo=UTC)}


def test_create_from_schema_text(uri):
    r = cli("create", uri, "--schema", SCHEMA_TEXT + ",price:decimal[10,2],tags:list[string]",
            "--partition-by", "day", "--key", "account,ts", "--event-time", "ts", "--window", "1h",
            "--property", "owner=risk-team", "--json")
    assert r.json()["version"] == 0
    t = lf.Table(uri)
    assert t.schema == pa.schema([pa.field("account", pa.string(), nullable=False), ("amount", pa.float64()),
                                  ("ts", pa.timestamp("us", tz="UTC")), ("day", pa.date32()),
                                  ("price", pa.decimal128(10, 2)), ("tags", pa.list_(pa.string()))])
    assert (t.partition_by, t.key, t.event_time, t.window) == (("day",), ("account", "ts"), "ts", "1h")
    assert t.properties["owner"] == "risk-team"
    assert oracle(uri).num_rows == 0


@pytest.mark.parametrize(("schema", "named"), [
    ("id:int65", "column 'id': unknown type 'int65'"),
    ("id", "'id' is not NAME:TYPE"),
    ("ts:timestamp[xs]", "column 'ts': bad type 'timestamp[xs]'"),
    ("p:decimal[10]", "precision and a scale"),
    ("id:int64,:string", "':string' is not NAME:TYPE"),
])
def test_schema_text_errors_are_usage_errors(tmp_path, schema, named):
    r = cli("create", tmp_path / "t", "--schema", schema)
    assert r.code == 2 and named in r.err, r.err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_create_from_a_file_infers_the_schema(tmp_path, fmt):
    path = _files(tmp_path, [_row("alice", 1.5, 1, 9)])[fmt]
    assert cli("create", tmp_path / "t", "--from", path).code == 0
    schema = lf.Table(str(tmp_path / "t")).schema
    assert schema.names == ["account", "amount", "ts", "day"]
    assert schema.field("amount").type == pa.float64() and pa.types.is_timestamp(schema.field("ts").type)


def test_create_needs_exactly_one_schema_source(tmp_path):
    path = _files(tmp_path, [_row("alice", 1.5, 1, 9)])["csv"]
    assert cli("create", tmp_path / "t").code == 2
    assert cli("create", tmp_path / "t", "--schema", "id:int64", "--from", path).code == 2
    r = cli("create", tmp_path / "t", "--from", tmp_path / "missing.csv")
    assert r.code == 2 and "does not exist" in r.err


def test_append_files_of_every_format_in_one_commit(uri, tmp_path):
    cli("create", uri, "--schema", SCHEMA_TEXT, "--partition-by", "day")
    files = _files(tmp_path, [_row("alice", 10.0, 1, 9), _row("bob", -2.5, 2, 10)])
    r = cli("append", uri, files["csv"], files["ndjson"], files["parquet"], "--json")
    assert r.json() == {"version": 1}
    expected = pq.read_table(files["parquet"])
    assert_table_equal(oracle(uri), pa.concat_tables([expected] * 3), check_types=False)
    assert [c.operation for c in lf.Table(uri).history()] == ["WRITE", "CREATE TABLE"]


def test_append_is_exactly_once_with_app_id(uri, tmp_path):
    cli("create", uri, "--schema", SCHEMA_TEXT)
    path = _files(tmp_path, [_row("alice", 10.0, 1, 9)])["csv"]
    for _ in range(2):
        assert cli("append", uri, path, "--app-id", "ingest", "--txn-version", "7", "--json").json() == {"version": 1}
    assert oracle(uri).num_rows == 1
    assert cli("append", uri, path, "--app-id", "ingest").code == 1  # txn-version missing: InvalidArgumentError


def test_a_retried_append_says_it_wrote_nothing(tmp_path):
    uri = str(tmp_path / "t")
    cli("create", uri, "--schema", SCHEMA_TEXT)
    path = _files(tmp_path, [_row("alice", 10.0, 1, 9)])["csv"]
    args = ("append", uri, path, "--app-id", "ingest", "--txn-version", "7")
    assert cli(*args).out == "appended 1 file(s): version 1\n"
    assert cli(*args).out == "batch 7 of ingest is already in version 1: nothing written\n"


def test_append_refuses_a_file_that_does_not_fit_and_writes_nothing(uri, tmp_path):
    cli("create", uri, "--schema", SCHEMA_TEXT)
    good = _files(tmp_path, [_row("alice", 10.0, 1, 9)])["csv"]
    bad = tmp_path / "bad.csv"
    bad.write_text("account,amount,ts,day\nbob,not-a-number,2024-05-01T00:00:00+00:00,2024-05-01\n")
    r = cli("append", uri, good, bad)
    assert r.code == 1 and r.err.startswith("error: SchemaMismatchError:") and "bad.csv" in r.err
    assert lf.Table(uri).version == 0 and oracle(uri).num_rows == 0
    unknown = tmp_path / "rows.txt"
    unknown.write_text("x")
    r = cli("append", uri, unknown)
    assert r.code == 1 and "--format" in r.err


def test_append_and_merge_with_watermark_and_late_rows(uri, tmp_path):
    cli("create", uri, "--schema", SCHEMA_TEXT, "--key", "account,ts", "--event-time", "ts")
    day1 = _files(tmp_path, [_row("alice", 10.0, 1, 9), _row("bob", 5.0, 1, 10)])["parquet"]
    cli("append", uri, day1, "--watermark", "2024-05-02T00:00:00Z")
    late = _files(tmp_path, [_row("alice", 12.0, 1, 9), _row("carol", 1.0, 1, 23)])["ndjson"]
    r = cli("merge", uri, late, "--on", "account,ts", "--late", "reject")
    assert r.code == 1 and r.err.startswith("error: LateDataError:")
    result = cli("merge", uri, late, "--on", "account", "--on", "ts", "--watermark", "2024-05-03T00:00:00Z",
                 "--json").json()
    assert (result["inserted"], result["updated"], result["late_rows"]) == (1, 1, 2)
    assert result["revised_windows"] == ["2024-05-01T00:00:00+00:00"]
    got = oracle(uri, "SELECT account, amount FROM t ORDER BY account")
    assert got.to_pylist() == [{"account": "alice", "amount": 12.0}, {"account": "bob", "amount": 5.0},
                               {"account": "carol", "amount": 1.0}]
    hist = cli("history", uri, "--json").json()
    assert (hist[0]["late_rows"], hist[0]["watermark"]) == (2, "2024-05-03T00:00:00+00:00")
    assert hist[0]["revised_windows"] == ["2024-05-01T00:00:00+00:00"]
    info = cli("info", uri, "--json").json()
    assert info["watermark"] == "2024-05-03T00:00:00+00:00" and info["event_time"] == "ts"
    r = cli("append", uri, day1, "--watermark", "2024-05-03")
    assert r.code == 1 and "--watermark '2024-05-03' is not an ISO-8601 instant with a time zone" in r.err


def test_delete_where_sql(uri, tmp_path):
    cli("create", uri, "--schema", SCHEMA_TEXT, "--partition-by", "day")
    cli("append", uri, _files(tmp_path, [_row(a, float(i), d, i) for i, (a, d) in
                                         enumerate([("alice", 1), ("bob", 1), ("carol", 2), ("dave", 3)])])["parquet"])
    where = "day = DATE '2024-05-01' AND account IN ('bob', 'zed') OR amount >= 3"
    r = cli("delete", uri, "--where", where, "--json")
    assert r.json() == {"deleted": 2, "version": 2}
    assert sorted(oracle(uri).column("account").to_pylist()) == ["alice", "carol"]
    r = cli("delete", uri, "--where", "acount = 'alice'")
    assert r.code == 1 and r.err.startswith("error: InvalidArgumentError:") and "'acount' is not a column" in r.err
    r = cli("delete", uri, "--where", "account LIKE 'a%'")
    assert r.code == 1 and "(Like) is not supported" in r.err
    assert lf.Table(uri).version == 2


def test_view_create_refresh_show(uri, tmp_path):
    cli("create", uri, "--schema", SCHEMA_TEXT, "--event-time", "ts")
    cli("append", uri, _files(tmp_path, [_row("alice", 10.0, 1, 9), _row("alice", 5.0, 1, 10),
                                         _row("bob", 1.0, 2, 9)])["parquet"])
    view = uri + "-daily"
    r = cli("view", "create", view, uri, "--group-by", "account", "--agg", "total=sum(amount)", "--agg", "n=count",
            "--window", "1d", "--json")
    assert r.json()["source_version"] == 1
    rows = cli("view", "show", view, "--json").json()["rows"]
    assert [(r["account"], r["total"], r["n"]) for r in rows] == [("alice", 15.0, 2), ("bob", 1.0, 1)]
    cli("append", uri, _files(tmp_path, [_row("bob", 2.0, 2, 11)])["parquet"])
    assert cli("view", "refresh", view, "--json").json()["source_version"] == 2
    assert_table_equal(cli_rows("view", "show", view), oracle(view, "SELECT account, window_start, total, n FROM t"),
                       check_types=False)
    assert cli("view", "show", view, "--source-version", "1", "--json").json()["rows"] == rows
    assert cli("view", "create", view + "2", uri, "--agg", "total=sum(").code == 2


def cli_rows(*args) -> pa.Table:
    """A command's rows, written as Parquet to stdout."""
    r = cli(*args, "--format", "parquet")
    assert r.code == 0, r.err
    return pq.read_table(pa.BufferReader(r.raw))


@pytest.fixture
def big(tmp_path):
    uri = str(tmp_path / "big")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())]))
    for part in range(3):
        ids = list(range(part * 1000, (part + 1) * 1000))
        t.append(pa.table({"id": ids, "name": [f"n{i % 7}" for i in ids], "amount": [i / 2 for i in ids]}))
    return uri


def test_show_columns_where_limit(big):
    r = cli("show", big, "--columns", "id", "--columns", "name", "--where", "name = 'n3' AND id < 100",
            "--limit", "5", "--json").json()
    assert [row["id"] for row in r["rows"]] == [3, 10, 17, 24, 31]
    assert set(r["rows"][0]) == {"id", "name"}
    assert (r["truncated"], r["num_rows"]) == (True, None)  # how many more match is not read
    r = cli("show", big, "--where", "name = 'n3' AND id < 100", "--json").json()
    assert (r["truncated"], r["num_rows"], len(r["rows"])) == (False, 14, 14)
    r = cli("show", big, "--limit", "2", "--json").json()
    assert (r["truncated"], r["num_rows"]) == (True, 3000)
    text = cli("show", big, "--columns", "id,amount", "--where", "id BETWEEN 10 AND 12")
    assert text.code == 0 and "version 3" in text.out and "5.5" in text.out and "n1" not in text.out
    screen = cli("show", big).out
    assert "2980 more rows (showing 20 of 3000" in screen
    r = cli("show", big, "--where", "nope = 1")
    assert r.code == 1 and "'nope' is not a column" in r.err
    r = cli("show", big, "--columns", "nope")
    assert r.code == 1 and r.err.startswith("error: SchemaMismatchError:")


def test_show_writes_csv_and_parquet(big, tmp_path):
    r = cli("show", big, "--where", "id < 3", "--format", "csv")
    assert r.code == 0
    assert list(csv.DictReader(io.StringIO(r.out))) == [
        {"id": str(i), "name": f"n{i}", "amount": str(i / 2).rstrip("0").rstrip(".") if i else "0"} for i in range(3)]
    assert_table_equal(cli_rows("show", big), oracle(big))
    out = tmp_path / "rows.parquet"
    assert cli("show", big, "--limit", "10", "--format", "parquet", "--output", out).code == 0
    assert pq.read_table(out).num_rows == 10
    assert cli("show", big, "--json", "--format", "csv").code == 2
    assert cli("show", big, "--output", out).code == 2
    assert cli("show", big, "--format", "xml").code == 2


def test_info_shows_schema_size_and_layout(uri):
    cli("create", uri, "--schema", SCHEMA_TEXT, "--partition-by", "day", "--key", "account", "--event-time", "ts",
        "--property", "owner=risk")
    t = lf.Table(uri)
    t.append(pa.table({"account": ["a", "b"], "amount": [1.0, 2.0],
                       "ts": pa.array([dt.datetime(2024, 5, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
                       "day": [dt.date(2024, 5, 1), dt.date(2024, 5, 2)]}))
    info = cli("info", uri, "--json").json()
    adds = oracle(uri, "SELECT 1 FROM t").num_rows
    assert adds == info["num_rows"] == 2
    assert info["num_files"] == 2 and info["size_bytes"] == sum(f.size for f in t.snapshot().files) > 0
    assert info["schema"][2] == {"name": "ts", "type": "timestamp[us, tz=UTC]", "nullable": True}
    assert info["schema"][0]["nullable"] is False
    assert (info["partition_by"], info["key"], info["event_time"], info["window"]) == (["day"], ["account"], "ts", "1d")
    assert info["properties"]["owner"] == "risk"
    screen = cli("info", uri).out
    assert "timestamp[us, tz=UTC]" in screen and "size_bytes" in screen and "owner" in screen


def test_diff_key_no_key_summary_columns(tmp_path):
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64()), ("v", pa.string()), ("w", pa.int64())]), key=["id"])
    t.append(pa.table({"id": [1, 2], "v": ["a", "b"], "w": [1, 2]}))
    t.merge(pa.table({"id": [2, 3], "v": ["B", "c"], "w": [2, 3]}))
    keyed = cli("diff", uri, "1", "--json").json()
    assert (keyed["key"], keyed["summary"]["updated"], keyed["summary"]["inserted"]) == (["id"], 1, 1)
    unkeyed = cli("diff", uri, "1", "--no-key", "--json").json()
    assert unkeyed["key"] == [] and unkeyed["summary"]["updated"] == 0
    assert {r["_change_type"] for r in unkeyed["changes"]} == {"insert", "delete"}
    summary = cli("diff", uri, "1", "--summary", "--json").json()
    assert "changes" not in summary and summary["summary"]["inserted"] == 1
    cols = cli("diff", uri, "1", "--columns", "w", "--json").json()
    assert {k for k in cols["changes"][0] if not k.startswith("_")} == {"id", "w"}
    assert cols["summary"]["updated"] == 0  # only w is compared, and w did not change for id 2
    by_v = cli("diff", uri, "1", "--key", "v", "--json").json()
    assert by_v["key"] == ["v"]
    assert cli("diff", uri, "1", "--key", "id", "--no-key").code == 2
    assert cli("diff", uri, "1", "--summary", "--format", "csv").code == 2
    text = cli("diff", uri, "1", "--summary")
    assert "updated=1" in text.out and "changes" not in text.out
    assert_table_equal(cli_rows("diff", uri, "1"), t.diff(1).to_arrow())


def test_vacuum_is_a_dry_run_unless_yes(tmp_path):
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1]}))
    t.append(pa.table({"id": [2]}))
    t.compact()
    dry = cli("vacuum", uri, "--retention-hours", "0", "--force")
    assert dry.code == 0 and "would delete 2 files" in dry.out and "pass --yes" in dry.out
    listed = [line.strip() for line in dry.out.splitlines()[1:]]
    assert len(listed) == 2 and all((tmp_path / "t" / p).exists() for p in listed)
    done = cli("vacuum", uri, "--retention-hours", "0", "--force", "--yes", "--json").json()
    assert sorted(done["files"]) == sorted(listed) and done["dry_run"] is False
    assert not any((tmp_path / "t" / p).exists() for p in listed)
    assert oracle(uri).column("id").to_pylist() in ([1, 2], [2, 1])


def test_storage_options_from_flags_and_environment(moto_uri):
    uri, options = moto_uri
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]), storage_options=options)
    t.append(pa.table({"id": [1, 2]}))
    flags = [a for k, v in options.items() for a in ("--option", f"{k}={v}")]
    assert cli("info", uri, *flags, "--json").json()["num_rows"] == 2
    env = {"LAKEFLOW_STORAGE_OPTIONS": json.dumps(options)}
    assert cli("show", uri, "--json", env=env).json()["num_rows"] == 2
    assert cli("history", uri, "--json", env=env).json()[0]["version"] == 1
    r = cli("info", uri, env={"LAKEFLOW_STORAGE_OPTIONS": "{not json"})
    assert r.code == 1 and "LAKEFLOW_STORAGE_OPTIONS is not valid JSON" in r.err
    assert cli("info", uri, "--option", "no-equals-sign").code == 2


def test_debug_shows_the_traceback(tmp_path):
    plain = cli("info", tmp_path / "missing")
    assert plain.code == 1 and "Traceback" not in plain.err and len(plain.err.splitlines()) == 1
    debug = cli("--debug", "info", tmp_path / "missing")
    assert debug.code == 1 and "Traceback (most recent call last)" in debug.err
    assert debug.err.splitlines()[-1].startswith("error: TableNotFoundError:")


def test_every_command_piped_is_unwrapped_and_without_traceback(tmp_path):
    """Each command in a real process with its output piped: whole lines, no traceback."""
    root = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    root.mkdir(parents=True)
    uri, view = str(root / "t"), str(root / "v")
    data = _files(tmp_path, [_row("an-account-name-that-is-quite-long-" + "x" * 60, 1.0, 1, 9)])
    runs = [
        ("create", uri, "--schema", SCHEMA_TEXT, "--key", "account", "--event-time", "ts"),
        ("append", uri, str(data["csv"]), "--app-id", "an-application-id-that-is-long", "--txn-version", "1"),
        ("merge", uri, str(data["parquet"])), ("info", uri), ("history", uri), ("show", uri), ("diff", uri, "0"),
        ("delete", uri, "--where", "amount > 5"), ("view", "create", view, uri, "--agg", "n=count"),
        ("view", "refresh", view), ("view", "show", view), ("checkpoint", uri), ("compact", uri), ("vacuum", uri),
    ]
    for args in runs:
        proc = _lakeflow(*args)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
        assert "Traceback" not in proc.stdout
        if args[0] in ("info", "show", "diff", "history", "create"):
            assert uri in proc.stdout or "an-account-name-that-is-quite-long-" + "x" * 60 in proc.stdout, args
    assert "an-application-id-that-is-long" in _lakeflow("history", uri).stdout
    project = str(root / "bank")
    dml = [("update", uri, "--where", "amount < 5", "--set", "amount=amount + 1"), ("restore", uri, "--version", "2"),
           ("overwrite", uri, str(data["csv"])), ("init", project), ("validate", project), ("ingest", project),
           ("run", project), ("status", project), ("graph", project), ("rebuild", project, "balances", "--verify")]
    for args in dml:
        if args[0] == "ingest":  # a file lands in the skeleton's folder
            (root / "bank" / "ingest" / "landing" / "payments" / "d1.csv").write_text(
                "id,account,amount,ts\n1,a,5.0,2024-05-01T12:00:00Z\n")
        proc = _lakeflow(*args)
        assert proc.returncode == 0 and proc.stderr == "" and "Traceback" not in proc.stdout, (args, proc.stderr)
    assert "payments" in _lakeflow("status", project).stdout
    bad = _lakeflow("delete", uri, "--where", "nope = 1")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr


def test_parquet_to_a_pipe_is_readable(big):
    proc = subprocess.run([sys.executable, "-c", "from lakeflow.cli import entry; entry()", "show", big,
                           "--format", "parquet"], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert_table_equal(pq.read_table(pa.BufferReader(proc.stdout)), oracle(big))


def test_progress_bar_on_a_terminal_only(tmp_path):
    """Appending many files draws a bar on a terminal's stderr; piped, stderr stays empty."""
    import pty

    uri = str(tmp_path / "t")
    lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    files = []
    for i in range(12):
        files.append(tmp_path / f"f{i}.csv")
        files[-1].write_text(f"id\n{i}\n")
    master, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lakeflow.cli", "append", uri, *map(str, files)],
                            stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    drawn = b""
    with contextlib.suppress(OSError):  # the terminal closes when the process ends
        while chunk := os.read(master, 4096):
            drawn += chunk
    out = proc.communicate(timeout=120)[0]
    os.close(master)
    assert proc.returncode == 0 and out == b"appended 12 file(s): version 1\n"
    assert b"appending 12 files" in drawn and b"12/12" in drawn
    piped = _lakeflow("append", uri, *map(str, files))
    assert piped.returncode == 0 and piped.stderr == ""
    assert oracle(uri).num_rows == 24


def test_json_is_strict_with_nan_and_infinity(tmp_path):
    uri = str(tmp_path / "t")
    lf.Table.create(uri, pa.schema([("x", pa.float64())])).append(pa.table({"x": [float("nan"), float("inf"), 1.5]}))
    r = cli("show", uri, "--json")
    rows = json.loads(r.out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))["rows"]
    assert [row["x"] for row in rows] == ["NaN", "Infinity", 1.5]


def test_update_overwrite_restore(tmp_path, capsys):
    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64()), ("amount", pa.float64())]))
    t.append(pa.table({"id": [1, 2], "amount": [10.0, 20.0]}))
    code, out, _ = run(capsys, "update", uri, "--where", "id = 2", "--set", "amount=amount * 2", "--json")
    assert code == 0 and json.loads(out) == {"updated": 1, "version": 2}
    new = tmp_path / "new.csv"
    new.write_text("id,amount\n9,1.5\n")
    code, out, _ = run(capsys, "overwrite", uri, str(new), "--json")
    assert code == 0 and json.loads(out)["version"] == 3
    assert_table_equal(sql_scan(uri), pa.table({"id": [9], "amount": [1.5]}))
    code, out, _ = run(capsys, "restore", uri, "--version", "2")
    assert code == 0 and "version 4" in out
    code, out, _ = run(capsys, "overwrite", uri, str(new), "--where", "id = 9", "--json")  # nothing to replace
    assert code == 0 and sorted(sql_scan(uri).column("id").to_pylist()) == [1, 2, 9]
    code, out, _ = run(capsys, "restore", uri, "--version", "4")
    assert sorted(sql_scan(uri).column("amount").to_pylist()) == [10.0, 40.0]
    code, _, err = run(capsys, "update", uri, "--where", "nope = 1", "--set", "amount=1")
    assert code == 1 and "not a column" in err
    code, _, _ = run(capsys, "update", uri, "--where", "id = 1", "--set", "amount")
    assert code == 2
    code, _, err = run(capsys, "restore", uri)
    assert code == 2 and "--version or --as-of" in err
