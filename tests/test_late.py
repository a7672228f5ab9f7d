"""Event time, watermarks, late rows: detection, policies, history, revisions."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf
from lakeflow.late import format_window, window_start
from lakeflow.testing import commit_after

UTC = dt.timezone.utc
SCHEMA = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("amount", pa.int64())])
D1 = dt.datetime(2024, 3, 1, tzinfo=UTC)
D2 = D1 + dt.timedelta(days=1)
D3 = D2 + dt.timedelta(days=1)


def events(*items):
    """Rows from (id, event time, amount) triples."""
    return pa.table({"id": [i for i, _, _ in items], "ts": [t for _, t, _ in items],
                     "amount": [a for _, _, a in items]}, schema=SCHEMA)


def at(day, hour=0, minute=0):
    return day + dt.timedelta(hours=hour, minutes=minute)


@pytest.fixture
def ledger(table_uri):
    """A table with day windows that has seen day D1 closed (watermark D2)."""
    t = lf.Table.create(table_uri, SCHEMA, key=["id"], event_time="ts", window="1d")
    t.append(events((1, at(D1, 9), 10), (2, at(D1, 23, 55), 20)), watermark=D2)
    return t


# ---- configuration --------------------------------------------------------------------


@pytest.mark.parametrize("window, canonical", [("1d", "1d"), ("24h", "1d"), ("90m", "90m"),
                                               ("30s", "30s"), (dt.timedelta(hours=2), "2h")])
def test_window_spellings(window, canonical):
    assert format_window(window) == canonical


@pytest.mark.parametrize("window", ["0d", "1w", "d", "1.5h", 3, dt.timedelta(milliseconds=5)])
def test_bad_windows_are_refused(table_uri, window):
    with pytest.raises(lf.InvalidArgumentError, match="window"):
        lf.Table.create(table_uri, SCHEMA, event_time="ts", window=window)
    with pytest.raises(lf.TableNotFoundError):
        lf.Table(table_uri)


def test_table_configuration(table_uri):
    with pytest.raises(lf.SchemaMismatchError, match="event_time"):
        lf.Table.create(table_uri, SCHEMA, window="1h")
    with pytest.raises(lf.InvalidArgumentError, match=r"lakeflow\.late"):
        lf.Table.create(table_uri, SCHEMA, event_time="ts", properties={"lakeflow.late": "drop"})
    t = lf.Table.create(table_uri, SCHEMA, event_time="ts", window="60m")
    assert (t.window, t.watermark, t.properties["lakeflow.window"]) == ("1h", None, "1h")
    plain = lf.Table.create(table_uri + "-plain", SCHEMA)
    assert (plain.window, plain.watermark) == (None, None)


def test_window_start_is_epoch_aligned_utc():
    hour = 3_600_000_000
    assert window_start(dt.datetime(2024, 3, 1, 5, 30, tzinfo=UTC), hour) == at(D1, 5)
    assert window_start(dt.date(2024, 3, 1), 24 * hour) == D1
    assert window_start("2024-03-01T07:59:59+02:00", 24 * hour) == D1
    assert window_start(dt.datetime(1969, 12, 31, 23, 30, tzinfo=UTC), hour) == dt.datetime(
        1969, 12, 31, 23, tzinfo=UTC)


# ---- watermark ---------------------------------------------------------------------------


def test_watermark_is_the_max_seen_and_moving_back_is_recorded(ledger):
    assert ledger.watermark == D2
    v = ledger.append(events((3, at(D2, 1), 30)), watermark=D1)  # backwards: ignored
    assert ledger.watermark == D2
    info = ledger.history(limit=1)[0].info
    assert info["lakeflow.staleWatermark"] == "2024-03-01T00:00:00.000000Z"
    assert info["lakeflow.watermark"] == "2024-03-02T00:00:00.000000Z"
    assert ledger.history(limit=1)[0].watermark == D2
    ledger.append(events((4, at(D2, 2), 40)), watermark=D3)
    assert ledger.watermark == D3 and lf.Table(ledger.uri).watermark == D3
    assert lf.Table(ledger.uri).snapshot(version=v).version == v


def test_an_empty_append_can_advance_the_watermark(ledger):
    v = ledger.version
    assert ledger.append(events(), watermark=D2) == v  # nothing new: no commit
    assert ledger.append(events(), watermark=D3) == v + 1
    assert ledger.watermark == D3
    assert ledger.history(limit=1)[0].metrics["numOutputRows"] == 0


@pytest.mark.parametrize("bad", [dt.datetime(2024, 3, 2), "2024-03-02T00:00:00Z",
                                 dt.date(2024, 3, 2), 1709337600])
def test_wrong_watermark_types_are_refused(ledger, bad):
    v = ledger.version
    with pytest.raises(lf.InvalidArgumentError, match="watermark"):
        ledger.append(events((3, D3, 1)), watermark=bad)
    with pytest.raises(lf.InvalidArgumentError, match="watermark"):
        ledger.merge(events((3, D3, 1)), watermark=bad)
    assert ledger.version == v


def test_watermark_needs_an_event_time_column(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    with pytest.raises(lf.InvalidArgumentError, match="event-time"):
        t.append(events((1, D1, 1)), watermark=D2)
    with pytest.raises(lf.InvalidArgumentError, match="event-time"):
        t.append(events((1, D1, 1)), late="reject")
    with pytest.raises(lf.InvalidArgumentError, match="late must be"):
        t.append(events((1, D1, 1)), late="nope")
    assert t.version == 0


def test_watermark_survives_checkpoints_and_deltalake_appends(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, event_time="ts",
                        properties={"delta.checkpointInterval": "2"})
    t.append(events((1, D1, 1)), watermark=D2)
    for i in range(3):
        t.append(events((10 + i, D2, 1)))
    assert Path(local_uri, "_delta_log", f"{2:020d}.checkpoint.parquet").exists()
    deltalake.write_deltalake(local_uri, events((20, D3, 1)), mode="append")
    reopened = lf.Table(local_uri)
    assert reopened.version == 5 and reopened.watermark == D2
    reopened.append(events((21, D1, 1)))
    assert reopened.history(limit=1)[0].late_rows == 1


def test_concurrent_writers_keep_the_largest_watermark(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, event_time="ts")
    stale = lf.Table(table_uri)
    # `stale` sees version 0 when it judges its rows; its commit lands after t's.
    commit_after(stale, lambda: t.append(events((1, D1, 1)), watermark=D3))
    stale.append(events((2, D1, 1)), watermark=D2)
    assert stale.history(limit=1)[0].info["lakeflow.watermark"] == "2024-03-02T00:00:00.000000Z"
    assert lf.Table(table_uri).watermark == D3


# ---- late rows ---------------------------------------------------------------------------


def test_late_rows_are_counted_with_their_windows(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, event_time="ts", window="1h")
    t.append(events((1, at(D1, 9), 1)), watermark=at(D1, 12))
    t.append(events((2, at(D1, 9, 30), 1), (3, at(D1, 11, 59), 1), (4, at(D1, 12), 1),
                    (5, None, 1)))
    c = t.history(limit=1)[0]
    assert (c.late_rows, c.revised_windows) == (2, (at(D1, 9), at(D1, 11)))
    assert t.history()[-2].late_rows == 0  # the first append had no watermark to be late against
    assert [x.version for x in t.revisions(at(D1, 9, 45))] == [2]
    assert t.revisions(at(D1, 12)) == []


def test_date_event_time(table_uri):
    schema = pa.schema([("id", pa.int64()), ("day", pa.date32())])
    t = lf.Table.create(table_uri, schema, event_time="day")
    t.append(pa.table({"id": [1], "day": [dt.date(2024, 3, 1)]}, schema=schema),
             watermark=at(D2, 6))
    t.append(pa.table({"id": [2, 3, 4], "day": [dt.date(2024, 3, 1), dt.date(2024, 3, 2),
                                                dt.date(2024, 3, 3)]}, schema=schema))
    c = t.history(limit=1)[0]
    assert (c.late_rows, c.revised_windows) == (2, (D1, D2))  # 2 March 00:00 < 06:00


def test_reject_policy_writes_nothing_and_says_why(ledger):
    v = ledger.version
    late = events((3, at(D1, 23, 59), 5), (4, at(D1, 8), 6), (5, at(D2, 1), 7))
    with pytest.raises(lf.LateDataError, match=r"2 rows .*2024-03-02 00:00:00\+00:00.*2024-03-01 08:00"):
        ledger.append(late, late="reject")
    assert ledger.version == v
    props = lf.Table.create(ledger.uri + "-strict", SCHEMA, event_time="ts",
                            properties={"lakeflow.late": "reject"})
    props.append(events((1, D2, 1)), watermark=D3)
    with pytest.raises(lf.LateDataError):
        props.append(events((2, D2, 1)))
    assert props.append(events((2, D2, 1)), late="accept") == 2


def test_quarantine_policy_commits_on_time_rows_and_keeps_late_ones(ledger):
    v = ledger.append(events((3, at(D1, 23, 58), 5), (4, at(D2, 1), 6)), late="quarantine")
    assert sorted(x["id"] for x in ledger.to_arrow().to_pylist()) == [1, 2, 4]
    assert ledger.history(limit=1)[0].late_rows == 0
    side = lf.Table(f"{ledger.uri}/_lakeflow_quarantine")
    held = side.to_arrow().to_pylist()
    assert held == [{"id": 3, "ts": at(D1, 23, 58), "amount": 5, "_lakeflow_version": v,
                     "_lakeflow_watermark": D2}]
    # A Delta reader of the main table does not see the side table's files.
    assert ledger.snapshot().num_rows == 3


def test_vacuum_keeps_the_quarantine_table(ledger):
    ledger.append(events((3, D1, 5)), late="quarantine")
    ledger.delete(pc.field("id") == 1)
    time.sleep(0.01)  # the tombstone must be older than "now minus zero retention"
    done = ledger.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    assert done.files and not any(f.startswith("_lakeflow_quarantine/") for f in done.files)
    assert lf.Table(f"{ledger.uri}/_lakeflow_quarantine").to_arrow().column("id").to_pylist() == [3]


def test_quarantine_into_a_given_table(ledger):
    target = lf.Table.create(ledger.uri + "-late", SCHEMA.append(pa.field("_lakeflow_version", pa.int64()))
                             .append(pa.field("_lakeflow_watermark", pa.timestamp("us", tz="UTC"))))
    ledger.append(events((3, D1, 5)), late="quarantine", quarantine=target)
    assert target.to_arrow().column("id").to_pylist() == [3]
    wrong = lf.Table.create(ledger.uri + "-wrong", pa.schema([("x", pa.string())]))
    with pytest.raises(lf.SchemaMismatchError):
        ledger.append(events((5, D1, 5)), late="quarantine", quarantine=wrong)
    with pytest.raises(lf.InvalidArgumentError, match="quarantine"):
        ledger.append(events((5, D1, 5)), quarantine=target)
    assert sorted(x["id"] for x in ledger.to_arrow().to_pylist()) == [1, 2]


# ---- merge and delete --------------------------------------------------------------------


def test_a_late_correction_by_merge(ledger):
    r = ledger.merge(events((2, at(D1, 23, 55), 25), (3, at(D1, 23, 59), 30), (4, at(D2, 3), 1)),
                     watermark=at(D2, 6))
    assert (r.updated, r.inserted, r.late_rows, r.revised_windows) == (1, 2, 2, (D1,))
    assert ledger.watermark == at(D2, 6)
    c = ledger.history(limit=1)[0]
    assert (c.operation, c.late_rows, c.revised_windows, c.watermark) == ("MERGE", 2, (D1,),
                                                                          at(D2, 6))
    assert [x.version for x in ledger.revisions(D1)] == [r.version]


def test_merge_policies(ledger):
    src = events((2, at(D1, 23, 55), 99), (9, at(D2, 5), 9))
    with pytest.raises(lf.LateDataError, match="1 changed rows"):
        ledger.merge(src, late="reject")
    r = ledger.merge(src, late="quarantine")
    assert (r.updated, r.inserted, r.quarantined, r.late_rows) == (0, 1, 1, 0)
    assert {x["id"]: x["amount"] for x in ledger.to_arrow().to_pylist()} == {1: 10, 2: 20, 9: 9}
    held = lf.Table(f"{ledger.uri}/_lakeflow_quarantine").to_arrow()
    assert held.column("amount").to_pylist() == [99]
    # Identical late rows change nothing, so they are not late.
    assert ledger.merge(events((1, at(D1, 9), 10)), late="reject").unchanged == 1


def test_moving_a_row_out_of_a_closed_window_revises_it(ledger):
    r = ledger.merge(events((1, at(D2, 9), 10)))
    assert (r.updated, r.late_rows, r.revised_windows) == (1, 1, (D1,))


def test_deletes_record_the_windows_they_revise(ledger):
    ledger.append(events((3, at(D2, 1), 1)))
    assert ledger.delete(pc.field("id") >= 2) == 2
    c = ledger.history(limit=1)[0]
    assert (c.operation, c.late_rows, c.revised_windows) == ("DELETE", 1, (D1,))


def test_metadata_cannot_forge_time_fields(ledger):
    with pytest.raises(lf.InvalidArgumentError, match="reserved"):
        ledger.append(events((3, D3, 1)), metadata={"lakeflow.watermark": "2999-01-01T00:00:00Z"})


def test_commit_info_layout(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, event_time="ts")
    t.append(events((1, D1, 1)), watermark=D2)
    t.append(events((2, D1, 1)))
    info = json.loads(Path(local_uri, "_delta_log", f"{2:020d}.json").read_text().splitlines()[0])
    assert info["commitInfo"]["lakeflow.watermark"] == "2024-03-02T00:00:00.000000Z"
    assert info["commitInfo"]["lakeflow.watermarkBase"] == 1
    assert info["commitInfo"]["lakeflow.lateRows"] == 1
    assert info["commitInfo"]["lakeflow.revisedWindows"] == ["2024-03-01T00:00:00.000000Z"]
    assert deltalake.DeltaTable(local_uri).version() == 2
