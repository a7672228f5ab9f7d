"""The command line: JSON output, one-line errors with exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.cli import main


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
    assert result["retry_returned"] == result["versions"][-1] == 2
    assert (result["rows_at_v1"], result["rows_latest"]) == (2, 4)
    assert [h["version"] for h in result["history"]] == [2, 1, 0]
    assert lf.Table(result["uri"]).version == 2


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
