"""Odd but valid logs that real engines write (issue 11, item 4), and the tables that stay
refused (item 6): each crafted by hand after the protocol, read at every version and compared
with deltalake's SQL scan where deltalake reads it, else with the rows the writer wrote."""

from __future__ import annotations

import calendar
import datetime as dt
import json
from pathlib import Path

import deltalake
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from crafted_log import Log, assert_same_rows, every_read, field, oracle, remove
from hypothesis import assume, given
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.log import commit_path
from lakeflow.partitions import epoch_value, parse_partition_value, serialize_partition_value, temporal_scalar
from lakeflow.testing import copy_table

CORPUS = Path(__file__).parent / "data" / "conformance"
PLAIN = {"minReaderVersion": 1, "minWriterVersion": 2}

WRITES = {
    "append": lambda t: t.append(ids([9])),
    "delete": lambda t: t.delete(pc.field("id") == 1),
    "merge": lambda t: t.merge(ids([1, 9]), on="id"),
    "compact": lambda t: t.compact(),
    "vacuum": lambda t: t.vacuum(retention=dt.timedelta(0), enforce_retention=False),
    "checkpoint": lambda t: t.checkpoint(),
    "cleanup_log": lambda t: t.cleanup_log(retention=dt.timedelta(0)),
}


def ids(values) -> pa.Table:
    return pa.table({"id": pa.array(values, pa.int64())})


def history(root: Path) -> Log:
    """v0 creates the table, v1 adds a (ids 1-3), v2 adds b (ids 4-5), v3 removes a."""
    log = Log(root, [field("id", "long")], PLAIN)
    a = log.data("a.parquet", ids([1, 2, 3]))
    log.commit({"add": a})
    log.commit({"add": log.data("b.parquet", ids([4, 5]))})
    log.commit(remove(a))
    return log


def pretty_print(root: Path, versions) -> None:
    """Rewrite commits the way DuckDB writes them: each action an indented, multi-line object."""
    for v in versions:
        path = root / commit_path(v)
        actions = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("\n".join(json.dumps(a, indent=2) for a in actions) + "\n")


# ---- pretty-printed (multi-line) commits ------------------------------------------------------


def test_pretty_printed_commits_read_like_deltalake_at_every_version(tmp_path, table_uri):
    source = tmp_path / "source"
    history(source)
    pretty_print(source, [0, 2, 3])  # v1 stays one line per action: both kinds in one log
    assert len((source / commit_path(2)).read_text().splitlines()) > 3
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    assert t.version == 3
    for v in range(4):
        expected = oracle(source, v)
        for got in every_read(t.snapshot(version=v)):
            assert_same_rows(got, expected)
    assert sorted(t.diff(1, 3).removed["id"].to_pylist()) == [1, 2, 3]
    assert [c.operation for c in t.history()] == [None] * 4  # every commit parsed, none skipped


def test_a_commit_mixing_one_line_and_multi_line_actions(tmp_path):
    history(tmp_path)
    path = tmp_path / commit_path(1)
    info, add = (json.loads(line) for line in path.read_text().splitlines())
    path.write_text(json.dumps(info) + "\r\n" + json.dumps(add, indent=1) + "  \n\n")
    t = lf.Table(str(tmp_path))
    assert_same_rows(t.snapshot(version=1).to_arrow(), oracle(tmp_path, 1))
    assert t.history()[-2].timestamp == dt.datetime.fromtimestamp(1_700_000_000.001, dt.timezone.utc)


@pytest.mark.parametrize("damage, line", [
    (lambda text: text[: text.rindex("}", 0, -3)], r"line \d+"),  # torn inside the last object
    (lambda text: text.replace('"dataChange": true', '"dataChange": tru'), r"line \d+"),
    (lambda text: text + "[1, 2]\n", r"line \d+"),  # valid JSON, but no action object
])
def test_damaged_pretty_printed_commits_are_corrupt_log(tmp_path, damage, line):
    history(tmp_path)
    pretty_print(tmp_path, [2])
    path = tmp_path / commit_path(2)
    path.write_text(damage(path.read_text()))
    with pytest.raises(lf.CorruptLogError, match=rf"00000000000000000002\.json {line}"):
        lf.Table(str(tmp_path))


def test_a_line_separator_inside_a_string_is_no_line_break(tmp_path):
    """U+2028 is legal unescaped in JSON strings; splitting lines on it would tear the action."""
    log = Log(tmp_path, [field("id", "long")], PLAIN)
    add = log.data("a.parquet", ids([1]))
    log.commit({"add": {**add, "tags": {"note": "one\u2028two"}}})
    path = tmp_path / commit_path(1)
    path.write_text(path.read_text().replace("\\u2028", "\u2028"))
    snap = lf.Table(str(tmp_path)).snapshot()
    assert snap.files[0].add.tags == {"note": "one\u2028two"}


# ---- a metaData without schemaString (Databricks Delta Live Tables) -------------------------------


def dlt_table(root: Path) -> Log:
    """v0: protocol and a metaData without schemaString; v1: the schema and a file; v2: more rows."""
    log = Log(root, [field("id", "long")], PLAIN)
    schemaless = {k: v for k, v in log.metadata.items() if k != "schemaString"}
    (root / commit_path(0)).write_text(
        "\n".join(json.dumps(a) for a in ({"protocol": PLAIN}, {"metaData": schemaless})) + "\n")
    log.commit({"metaData": log.metadata}, {"add": log.data("a.parquet", ids([1, 2]))})
    log.commit({"add": log.data("b.parquet", ids([3]))})
    return log


def test_a_version_without_schema_is_refused_and_later_versions_read(tmp_path, table_uri):
    source = tmp_path / "source"
    dlt_table(source)
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    assert t.version == 2
    assert sorted(t.to_arrow()["id"].to_pylist()) == [1, 2, 3]
    assert sorted(t.snapshot(version=1).to_arrow()["id"].to_pylist()) == [1, 2]
    assert t.snapshot(version=1).schema == pa.schema([("id", pa.int64())])
    with pytest.raises(lf.CorruptLogError, match=r"version 0 .*no schemaString"):
        t.snapshot(version=0)
    assert sorted(t.diff(-1).added["id"].to_pylist()) == [1, 2, 3]  # across the schemaless v0
    assert t.append(ids([4])) == 3
    assert sorted(lf.Table(table_uri).to_arrow()["id"].to_pylist()) == [1, 2, 3, 4]


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_table_whose_latest_metadata_has_no_schema_is_refused(tmp_path, write):
    log = dlt_table(tmp_path)
    schemaless = {k: v for k, v in log.metadata.items() if k != "schemaString"}
    log.commit({"metaData": schemaless})
    t = lf.Table(str(tmp_path))
    with pytest.raises(lf.CorruptLogError, match=r"version 3 .*no schemaString"):
        t.to_arrow()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(lf.CorruptLogError, match=r"no schemaString"):
        WRITES[write](t)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(t.snapshot(version=2).to_arrow()["id"].to_pylist()) == [1, 2, 3]


# ---- change data files with the change types of older delta-spark -----------------------------


def test_update_pre_and_update_post_change_types_read_as_the_current_names(tmp_path, table_uri):
    """delta-spark before 1.0 (CDF preview) wrote `update_pre` / `update_post`."""
    source = tmp_path / "source"
    log = Log(source, [field("id", "long"), field("v", "string")], {"minReaderVersion": 1, "minWriterVersion": 4},
              {"delta.enableChangeDataFeed": "true"})
    a = log.data("a.parquet", pa.table({"id": pa.array([1, 2], pa.int64()), "v": ["x", "y"]}))
    log.commit({"add": a})
    b = log.data("b.parquet", pa.table({"id": pa.array([1, 2], pa.int64()), "v": ["x", "z"]}))
    change_rows = pa.table({"id": pa.array([2, 2, 3], pa.int64()), "v": ["y", "z", "w"],
                            "_change_type": ["update_pre", "update_post", "insert"]})
    cdc = log.data("_change_data/c.parquet", change_rows)
    c = log.data("c.parquet", pa.table({"id": pa.array([3], pa.int64()), "v": ["w"]}))
    log.commit(remove(a), {"add": b}, {"add": c},
               {"cdc": {k: cdc[k] for k in ("path", "partitionValues", "size", "dataChange")}})
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    assert_same_rows(t.to_arrow(), oracle(source, 2))
    (commit,) = t.changes(1, 2)
    got = commit.rows.select(["id", "v", "_change_type"]).sort_by([("_change_type", "ascending")])
    assert got.to_pylist() == [{"id": 3, "v": "w", "_change_type": "insert"},
                               {"id": 2, "v": "z", "_change_type": "update_postimage"},
                               {"id": 2, "v": "y", "_change_type": "update_preimage"}]
    d = t.diff(1, 2, key="id")
    assert d.inserted["id"].to_pylist() == [3] and d.deleted.num_rows == 0
    assert d.updated.select(["id", "v_old", "v_new"]).to_pylist() == [{"id": 2, "v_old": "y", "v_new": "z"}]
    assert sorted(t.diff(1, 2).added["v"].to_pylist()) == ["w", "z"]


# ---- a gap in the log --------------------------------------------------------------------------


def gapped(root: Path, checkpoint_at: int | None = None) -> Path:
    """v0..v6 (v1..v6 each add one file of one id); commit 3 deleted; optionally a checkpoint."""
    log = Log(root, [field("id", "long")], PLAIN)
    for i in range(1, 7):
        log.commit({"add": log.data(f"f{i}.parquet", ids([i]))})
    if checkpoint_at is not None:
        deltalake.DeltaTable(str(root), version=checkpoint_at).create_checkpoint()
    return root


GAP = r"00000000000000000003\.json.*missing"



def test_versions_before_a_gap_read_and_the_latest_is_refused_naming_the_missing_commit(tmp_path, table_uri):
    source = gapped(tmp_path / "source")
    expected = {v: oracle(source, v) for v in range(7)}
    missing = (source / commit_path(3)).read_bytes()
    (source / commit_path(3)).unlink()
    copy_table(source, table_uri)
    t = lf.Table(table_uri)  # opens, so that the versions before the gap can be read
    for v in range(3):
        assert_same_rows(t.snapshot(version=v).to_arrow(), expected[v])
        assert_same_rows(oracle(source, v), expected[v])  # deltalake reads them too
    why = rf"{GAP}.*versions 3\.\.6 cannot be reconstructed.*versions 0\.\.2 are before the gap"
    with pytest.raises(lf.LogGapError, match=why) as e:
        t.snapshot()
    assert e.value.missing == (3,) and e.value.last_readable == 2
    assert isinstance(e.value, lf.CorruptLogError)
    for past in (3, 4, 6):
        with pytest.raises(lf.LogGapError, match=GAP):
            t.snapshot(version=past)
    for latest in (lambda: t.version, t.refresh, t.to_arrow, t.history, lambda: lf.Table(table_uri).version):
        with pytest.raises(lf.LogGapError, match=GAP):
            latest()
    assert sorted(t.diff(0, 2).added["id"].to_pylist()) == [1, 2]
    t.storage.write(commit_path(3), missing)  # restored: the latest reads again
    assert t.version == 6
    assert_same_rows(t.to_arrow(), expected[6])


def test_delta_golden_table_versions_not_contiguous(table_uri):
    """Spark's DeltaLogSuite table: commits 0 and 2, and a v0 metaData without schemaString."""
    copy_table(CORPUS / "tables" / "versions-not-contiguous", table_uri)
    meta = json.loads((CORPUS / "expected" / "versions-not-contiguous" / "meta.json").read_text())
    assert meta["versions"] == [] and "found gap" in meta["unavailable_versions"]["2"]  # deltalake: none
    t = lf.Table(table_uri)
    assert t.state.version == 0 and list(t.state.files) == ["foo"]
    with pytest.raises(lf.CorruptLogError, match=r"version 0 .*no schemaString"):
        t.snapshot(version=0)
    for past in (1, 2, None):
        with pytest.raises(lf.LogGapError, match=r"00000000000000000001\.json.*missing"):
            t.snapshot(version=past)


@pytest.mark.parametrize("write", sorted(WRITES))
def test_nothing_is_written_to_a_table_with_a_gap(tmp_path, write):
    root = gapped(tmp_path)
    (root / commit_path(3)).unlink()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(lf.LogGapError, match=GAP):
        WRITES[write](lf.Table(str(root)))
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # the gap stays a gap


def test_a_checkpoint_after_the_gap_covers_it(tmp_path, table_uri):
    source = gapped(tmp_path / "source", checkpoint_at=4)
    expected = {v: oracle(source, v) for v in range(7)}
    (source / commit_path(3)).unlink()
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    assert t.version == 6
    for v in (0, 1, 2, 4, 5, 6):
        assert_same_rows(t.snapshot(version=v).to_arrow(), expected[v])
    with pytest.raises(lf.LogGapError, match=rf"{GAP}.*versions 0\.\.2 are before the gap"):
        t.snapshot(version=3)
    assert t.append(ids([7])) == 7


# ---- what stays refused (item 6) -----------------------------------------------------------------


def features(*names) -> dict:
    return {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": list(names),
            "writerFeatures": list(names)}


@pytest.mark.parametrize("protocol, match", [
    (features("deletionVectors", "someFutureFeature"), r"reader feature\(s\) someFutureFeature"),
    (features("catalogManaged"), r"catalogManaged.*through (its|the) catalog"),
    (features("timestampNtz", "catalogOwned-preview"), r"catalogOwned-preview.*through (its|the) catalog"),
])
def test_tables_with_these_reader_features_stay_refused(tmp_path, table_uri, protocol, match):
    source = tmp_path / "source"
    log = Log(source, [field("id", "long")], protocol)
    log.commit({"add": log.data("a.parquet", ids([1]))})
    copy_table(source, table_uri)
    with pytest.raises(lf.UnsupportedFeatureError, match=match):
        lf.Table(table_uri)


def test_a_reader_feature_added_by_a_later_commit_is_refused_on_refresh(tmp_path):
    log = history(tmp_path)
    t = lf.Table(str(tmp_path))
    log.commit({"protocol": features("catalogManaged")})
    with pytest.raises(lf.UnsupportedFeatureError, match="catalogManaged"):
        t.refresh()
    with pytest.raises(lf.UnsupportedFeatureError, match="catalogManaged"):
        t.append(ids([9]))
    assert not (tmp_path / commit_path(5)).exists()
    assert_same_rows(t.snapshot(version=3).to_arrow(), oracle(tmp_path, 3))


# ---- years outside Python's datetime ------------------------------------------------------------

# (id, date partition value, timestamp partition value, the instant it means, date, timestamp)
# the timestamps as the log and the data files hold them; numpy computes the expected values.
EXTREME = [
    (1, "-9999-01-01", "-9999-01-01 00:00:00", "-9999-01-01T00:00:00", "-9999-01-01", "-9999-01-01T00:00:00"),
    (2, "0000-01-01", "0000-12-31 23:59:59.999999", "0000-12-31T23:59:59.999999", "0000-06-15", "0000-02-29T12:00:00"),
    (3, "0001-01-01", "0001-01-01 00:30:00+01:00", "0000-12-31T23:30:00", "0001-01-01", "0001-01-01T00:00:00"),
    (4, "2024-05-01", "2024-05-01 12:00:00", "2024-05-01T12:00:00", "2024-05-01", "2024-05-01T12:00:00"),
    (5, "9999-12-31", "9999-12-31 23:59:59.999999", "9999-12-31T23:59:59.999999", "9999-12-31",
     "9999-12-31T23:59:59.999"),
    (6, "+10000-01-01", "9999-12-31 23:00:00-05:00", "10000-01-01T04:00:00", "10000-03-01", "10000-01-01T04:00:00"),
]
EXTREME_FIELDS = [field("id", "long"), field("d", "date"), field("ts", "timestamp"),
                  field("x", "date"), field("t", "timestamp")]
UTC_US = pa.timestamp("us", tz="UTC")


def days(text: str) -> pa.Scalar:
    return pa.scalar(int(np.datetime64(text, "D").astype("int64")), pa.int32()).cast(pa.date32())


def micros(text: str) -> pa.Scalar:
    return pa.scalar(int(np.datetime64(text, "us").astype("int64")), pa.int64()).cast(UTC_US)


def stat_text(instant: str) -> str:
    """How Spark writes a timestamp statistic: milliseconds and a zone."""
    whole, _, frac = instant.partition(".")
    return f"{whole}.{(frac + '000')[:3]}Z"


def extreme_table(root: Path) -> pa.Table:
    """One file per row of EXTREME, partitioned by d and ts, with min/max stats on x and t."""
    log = Log(root, EXTREME_FIELDS, PLAIN, partition_columns=["d", "ts"])
    rows = []
    for i, d, ts, instant, x, t in EXTREME:
        data = pa.table({"id": pa.array([i], pa.int64()), "x": pa.array([days(x)]),
                         "t": pa.array([micros(t)])})
        stats = {"minValues": {"x": x, "t": stat_text(t)}, "maxValues": {"x": x, "t": stat_text(t)},
                 "nullCount": {"x": 0, "t": 0}}
        log.commit({"add": log.data(f"f{i}.parquet", data, {"d": d, "ts": ts}, stats)})
        rows.append({"id": i, "d": days(d.lstrip("+")), "ts": micros(instant), "x": days(x), "t": micros(t)})
    return pa.table({name: pa.array([r[name] for r in rows]) for name in ("id", "d", "ts", "x", "t")})


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def ids_of(table: pa.Table) -> list[int]:
    return sorted(table["id"].to_pylist())


def test_extreme_years_read_in_arrow(tmp_path, table_uri):
    source = tmp_path / "source"
    expected = extreme_table(source)
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    for v in range(t.version + 1):
        assert by_id(oracle(source, v)).equals(expected.slice(0, v))  # deltalake agrees
        snap = t.snapshot(version=v)
        for got in every_read(snap):
            assert by_id(got).equals(expected.slice(0, v))
    assert by_id(t.diff(-1).added.select(expected.column_names)).equals(expected)
    f1 = t.snapshot().files[0]
    assert f1.partition_values["d"].equals(days("-9999-01-01"))
    assert f1.partition_values["ts"].equals(micros("-9999-01-01T00:00:00"))
    assert t.snapshot().files[3].partition_values["d"] == dt.date(2024, 5, 1)  # Python where it can


FILTERS = {
    "d before year 1": pc.field("d") < days("0001-01-01"),
    "d after 9999": pc.field("d") > days("9999-12-31"),
    "d is year 0": pc.field("d") == days("0000-01-01"),
    "ts before year 1": pc.field("ts") < micros("0001-01-01T00:00:00"),
    "ts after 9999": pc.field("ts") > micros("9999-12-31T23:59:59.999999"),
    "x before year 1": pc.field("x") < days("0001-01-01"),
    "x in 9999": (pc.field("x") >= days("9999-01-01")) & (pc.field("x") <= days("9999-12-31")),
    "t before year 1": pc.field("t") < micros("0001-01-01T00:00:00"),
    "t after 9999": pc.field("t") > micros("10000-01-01T00:00:00"),  # (stats are widened by 1 ms)
    "t in 9999": pc.field("t") >= micros("9999-12-31T23:59:59.999"),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_extreme_years_prune_exactly(tmp_path, name):
    expected = extreme_table(tmp_path)
    snap = lf.Table(str(tmp_path)).snapshot()
    wanted = ids_of(expected.filter(FILTERS[name]))
    assert wanted  # every filter keeps some rows, and prunes others
    assert ids_of(snap.to_arrow(filter=FILTERS[name])) == wanted
    # One row per file and exact statistics: the files read are exactly those with the rows.
    assert sorted(int(f.path[1:-8]) for f in snap.files_matching(FILTERS[name])) == wanted


@given(st.integers(-9999, 12000), st.integers(1, 12), st.integers(1, 31), st.integers(0, 86_399_999_999),
       st.sampled_from(["", "Z", "+05:30", "-0800", "+14"]))
def test_epoch_values_of_any_year_match_numpy(year, month, day, micros_of_day, zone):
    assume(day <= calendar.monthrange(2000 if calendar.isleap(year) else 2001, month)[1])
    date = f"{'+' if year > 9999 else ''}{year:05d}" if year < 0 or year > 9999 else f"{year:04d}"
    date += f"-{month:02d}-{day:02d}"
    seconds, fraction = divmod(micros_of_day, 1_000_000)
    clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"
    expected_day = int(np.datetime64(date.lstrip("+"), "D").astype("int64"))
    assert epoch_value(date, pa.date32()) == expected_day
    offset = 0 if zone in ("", "Z") else (1 if zone[0] == "-" else -1) * (
        int(zone[1:3]) * 60 + int(zone[3:].lstrip(":") or 0)) * 60_000_000
    text = f"{date} {clock}{zone}"
    assert epoch_value(text, UTC_US) == expected_day * 86_400_000_000 + micros_of_day + offset
    assert epoch_value(text, pa.timestamp("us")) == expected_day * 86_400_000_000 + micros_of_day


INVALID_DATES = ["2021-02-29", "2020-13-01", "2020-00-10", "2020-04-31", "-0100-02-29", "yesterday", "2020-1-1"]


@pytest.mark.parametrize("text, typ", [*((d, pa.date32()) for d in INVALID_DATES),
                                       *((d, UTC_US) for d in INVALID_DATES),
                                       ("2020-01-01 24:00:00", UTC_US), ("-2020-01-01 10:60", UTC_US)])
def test_invalid_dates_and_timestamps_are_corrupt_log(text, typ):
    with pytest.raises(lf.CorruptLogError, match="not a valid"):
        parse_partition_value(text, typ, "c")


def test_extreme_years_as_partition_values_round_trip(table_uri, backend):
    rows = pa.table({"id": pa.array([1, 2, 3, 4, 5], pa.int64()),
                     "d": pa.array([days(s) for s in ("-9999-01-01", "0000-02-29", "0500-06-01", "9999-12-31",
                                                      "10000-01-01")]),
                     "ts": pa.array([micros(s) for s in ("-9999-01-01T00:00:00", "0000-12-31T23:59:59.999999",
                                                         "0500-06-01T12:00:00", "2024-01-01T00:00:00",
                                                         "10000-01-01T04:00:00")])})
    t = lf.Table.create(table_uri, rows.schema, partition_by=["d", "ts"])
    t.append(rows)
    assert by_id(t.to_arrow()).equals(rows)
    assert by_id(lf.Table(table_uri).to_arrow(filter=pc.field("d") < days("0001-01-01"))).equals(rows.slice(0, 2))
    if backend == "local":
        assert by_id(oracle(table_uri, 1)).equals(rows)  # deltalake reads what lakeflow wrote


@given(st.integers(-4_371_587, 4_000_000), st.integers(0, 86_399_999_999))
def test_serialized_values_of_any_year_parse_back(day, micros_of_day):
    date = temporal_scalar(day, pa.date32())
    assert epoch_value(serialize_partition_value(date, "d"), pa.date32()) == day
    instant = day * 86_400_000_000 + micros_of_day
    text = serialize_partition_value(temporal_scalar(instant, UTC_US), "ts")
    assert epoch_value(text, UTC_US) == instant
    assert parse_partition_value(text, UTC_US, "ts") == (  # Python's datetime where it can hold it
        dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=instant)
        if -719_162 <= day <= 2_932_896 else temporal_scalar(instant, UTC_US))


def test_a_gap_after_the_last_checkpoint(tmp_path, table_uri):
    source = gapped(tmp_path / "source", checkpoint_at=2)  # with _last_checkpoint pointing at it
    expected = {v: oracle(source, v) for v in range(7)}
    (source / commit_path(3)).unlink()
    copy_table(source, table_uri)
    t = lf.Table(table_uri)
    with pytest.raises(lf.LogGapError, match=rf"{GAP}.*version 2 is before the gap"):
        t.snapshot()
    for v in (0, 1, 2):
        assert_same_rows(t.snapshot(version=v).to_arrow(), expected[v])
    with pytest.raises(lf.LogGapError, match=GAP):
        t.snapshot(version=5)
