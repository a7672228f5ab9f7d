"""The command line: JSON output, one-line errors with exit code 1."""

from __future__ import annotations

import json

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
    code, out, _ = run(capsys, "vacuum", table, "--retention-hours", "0", "--force", "--dry-run", "--json")
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
