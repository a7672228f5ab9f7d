"""Merge and delete: copy-on-write, pruning, change data files, conflicts, bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import multiprocessing
import uuid
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.storage import open_storage
from lakeflow.testing import assert_table_equal, commit_after

from helpers import commit_actions, run_threads
from helpers import sql_scan as deltalake_rows

UTC = dt.timezone.utc
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.int64()),
                    ("region", pa.string())])
CDF_META = ["_commit_version", "_commit_timestamp"]


def rows(ids, region="eu", amount=None, name="n"):
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": [f"{name}{i}" for i in ids],
        "amount": pa.array([amount if amount is not None else i * 10 for i in ids], pa.int64()),
        "region": [region] * len(ids),
    }, schema=SCHEMA)


def by_id(table):
    return table.sort_by("id").to_pylist()


def log_actions(path, version):
    return commit_actions(open_storage(path), version)


def written_changes(path, version, schema):
    """The rows of the cdc files lakeflow wrote in `version` (partition columns filled in)."""
    parts = []
    for a in log_actions(path, version):
        if "cdc" in a:
            data = pq.read_table(Path(path, a["cdc"]["path"]))
            for col, value in a["cdc"]["partitionValues"].items():
                data = data.append_column(col, pa.array([value] * data.num_rows, schema.field(col).type))
            parts.append(data)
    return pa.concat_tables(parts, promote_options="permissive") if parts else None


def deltalake_changes(path, version):
    cdf = pa.table(deltalake.DeltaTable(path).load_cdf(starting_version=version,
                                                       ending_version=version).read_all())
    return cdf.drop_columns(CDF_META)


def change_set(table):
    return sorted((r["id"], r["amount"], r["_change_type"]) for r in table.to_pylist())


def data_files(table):
    """Parquet data files on storage, relative to the table root."""
    fs, root = table.storage.arrow_fs()
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {i.path[len(root) + 1:] for i in infos
            if i.path.endswith(".parquet") and "_delta_log" not in i.path}


# ---- semantics -------------------------------------------------------------------------


def test_upsert_updates_inserts_and_counts(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2, 3]))
    src = pa.concat_tables([rows([2], amount=99), rows([3]), rows([4], amount=7)])
    r = t.merge(src)
    assert isinstance(r, lf.MergeResult)
    assert (r.version, r.inserted, r.updated, r.deleted, r.unchanged) == (2, 1, 1, 0, 1)
    assert (r.files_read, r.files_rewritten, r.late_rows, r.revised_windows) == (1, 1, 0, ())
    expected = pa.concat_tables([rows([1]), rows([2], amount=99), rows([3]), rows([4], amount=7)])
    assert_table_equal(t.to_arrow(), expected)
    assert lf.Table(table_uri).version == 2  # one commit
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.inserted = 5  # type: ignore[misc]
    commit = t.history(limit=1)[0]
    assert commit.operation == "MERGE"
    assert commit.parameters["mergePredicate"] == "target.id = source.id"
    assert commit.metrics["numTargetRowsCopied"] == 2  # ids 1 and 3 share the file with 2


@pytest.mark.parametrize("source_kind", ["polars", "pandas", "pylist"])
def test_merge_accepts_any_input(table_uri, source_kind):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1]))
    src = rows([1, 2], amount=5)
    data = {"polars": pl.from_arrow(src), "pandas": src.to_pandas(), "pylist": src.to_pylist()}
    r = t.merge(data[source_kind])
    assert (r.updated, r.inserted) == (1, 1)
    assert_table_equal(t.to_arrow(), src)


def test_identical_rows_are_unchanged_and_rewrite_nothing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2, 3]))
    files = {f.path for f in t.snapshot().files}
    r = t.merge(rows([1, 3]))
    assert (r.version, r.updated, r.unchanged, r.files_read, r.files_rewritten) == (1, 0, 2, 1, 0)
    assert t.version == 1 and {f.path for f in t.snapshot().files} == files


@pytest.mark.parametrize("when_matched, expected_ids, counts", [
    ("ignore", {1: 10, 2: 20, 3: 30}, (0, 0, 2)),
    ("delete", {1: 10}, (0, 2, 0)),
    ({"amount": pl.col("target.amount") + pl.col("source.amount")}, {1: 10, 2: 25, 3: 35},
     (2, 0, 0)),
    (lambda target, source: target.select(amount=pl.col("amount") * 2), {1: 10, 2: 40, 3: 60},
     (2, 0, 0)),
])
def test_when_matched_actions(table_uri, when_matched, expected_ids, counts):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2, 3]))
    r = t.merge(rows([2, 3], amount=5), when_matched=when_matched, when_not_matched="ignore")
    assert (r.updated, r.deleted, r.unchanged) == counts
    assert {x["id"]: x["amount"] for x in t.to_arrow().to_pylist()} == expected_ids


def test_callable_sees_target_and_source_frames(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2]))
    seen = {}

    def keep_larger(target, source):
        seen["target"], seen["source"] = target.columns, source.columns
        return pl.DataFrame({"amount": [max(a, b) for a, b in zip(target["amount"], source["amount"],
                                                                  strict=True)]})

    r = t.merge(pa.table({"id": [1, 2], "amount": [5, 50]}), when_matched=keep_larger,
                when_not_matched="ignore")
    assert seen == {"target": SCHEMA.names, "source": ["id", "amount"]}
    assert (r.updated, r.unchanged) == (1, 1)
    assert {x["id"]: x["amount"] for x in t.to_arrow().to_pylist()} == {1: 10, 2: 50}


def test_not_matched_by_source_delete_syncs_the_table(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"], partition_by=["region"])
    t.append(rows([1, 2], "eu"))
    t.append(rows([3, 4], "us"))
    r = t.merge(pa.concat_tables([rows([2], "eu", amount=0), rows([5], "us")]),
                when_not_matched_by_source="delete")
    assert (r.inserted, r.updated, r.deleted, r.files_read) == (1, 1, 3, 2)
    assert_table_equal(t.to_arrow(), pa.concat_tables([rows([2], "eu", amount=0), rows([5], "us")]))


def test_insert_ignore_and_null_keys_skip(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1]))
    src = pa.table({"id": pa.array([None, 1, 9], pa.int64()), "name": ["x", "y", "z"],
                    "amount": pa.array([0, 0, 0], pa.int64()), "region": ["eu"] * 3})
    r = t.merge(src, null_keys="skip", when_not_matched="ignore")
    assert (r.inserted, r.updated) == (0, 1)
    assert by_id(t.to_arrow()) == [{"id": 1, "name": "y", "amount": 0, "region": "eu"}]


def test_update_may_move_a_row_to_another_partition(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"], partition_by=["region"])
    t.append(rows([1, 2], "eu"))
    r = t.merge(rows([2], "us"))
    assert (r.updated, r.files_rewritten) == (1, 1)
    assert {x["id"]: x["region"] for x in t.to_arrow().to_pylist()} == {1: "eu", 2: "us"}
    assert {tuple(f.partition_values.values()) for f in t.snapshot().files} == {("eu",), ("us",)}


def test_merge_on_composite_key_with_types(table_uri):
    schema = pa.schema([("day", pa.date32()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("amount", pa.decimal128(10, 2)), ("tags", pa.list_(pa.string()))])
    t = lf.Table.create(table_uri, schema, key=["day", "ts"], partition_by=["day"])
    d1, d2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    ts = [dt.datetime(2024, 1, 1, h, tzinfo=UTC) for h in range(3)]

    def tab(days, times, amounts, tags):
        return pa.table({"day": days, "ts": times,
                         "amount": [decimal.Decimal(a) for a in amounts], "tags": tags}, schema=schema)

    t.append(tab([d1, d1, d2], ts, ["1.00", "2.00", "3.00"], [["a"], None, []]))
    r = t.merge(tab([d1, d2, d2], [ts[1], ts[2], ts[0]], ["2.00", "3.50", "4.00"],
                    [["b"], [], ["c"]]))
    assert (r.inserted, r.updated, r.unchanged) == (1, 2, 0)  # tags changed on the first
    got = {(x["day"], x["ts"].hour): (str(x["amount"]), x["tags"]) for x in t.to_arrow().to_pylist()}
    assert got == {(d1, 0): ("1.00", ["a"]), (d1, 1): ("2.00", ["b"]), (d2, 2): ("3.50", []),
                   (d2, 0): ("4.00", ["c"])}


def test_map_and_struct_columns_survive_a_merge(table_uri):
    schema = pa.schema([("id", pa.int64()), ("m", pa.map_(pa.string(), pa.int64())),
                        ("s", pa.struct([("a", pa.int64())])), ("v", pa.int64())])
    t = lf.Table.create(table_uri, schema, key=["id"])
    t.append(pa.table({"id": [1, 2], "m": [[("a", 1)], None], "s": [{"a": 1}, {"a": 2}],
                       "v": [1, 2]}, schema=schema))
    r = t.merge(pa.table({"id": [1, 2, 3], "m": [[("a", 1)], [("b", 2)], None],
                          "s": [{"a": 1}, {"a": 5}, None], "v": [1, 2, 3]}, schema=schema))
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 1)
    r = t.merge(pa.table({"id": [1], "v": [10]}), when_not_matched="ignore",
                when_matched={"v": pl.col("target.v") + pl.col("source.v")})
    assert t.to_arrow().sort_by("id").to_pylist() == [
        {"id": 1, "m": [("a", 1)], "s": {"a": 1}, "v": 11},
        {"id": 2, "m": [("b", 2)], "s": {"a": 5}, "v": 2},
        {"id": 3, "m": None, "s": None, "v": 3}]


# ---- pruning ---------------------------------------------------------------------------


def test_only_files_that_can_hold_a_key_are_read(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    for i in range(10):
        t.append(rows(list(range(i * 10, i * 10 + 10))))
    r = t.merge(rows([35, 37, 1000], amount=-1))
    assert (r.files_read, r.files_rewritten, r.updated, r.inserted) == (1, 1, 2, 1)
    r = t.merge(rows([5000]))  # beyond every file's range: reads nothing
    assert (r.files_read, r.inserted) == (0, 1)
    assert t.to_arrow().num_rows == 102


@pytest.mark.parametrize("typ, make, files_read", [
    (pa.string(), lambda i: f"k{i:04d}", 1),
    (pa.float64(), lambda i: i / 4, 1),
    (pa.date32(), lambda i: dt.date(2024, 1, 1) + dt.timedelta(days=i), 1),
    (pa.timestamp("us", tz="UTC"), lambda i: dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(
        seconds=i), 1),
    (pa.timestamp("us"), lambda i: dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i), 1),
    (pa.decimal128(9, 2), lambda i: decimal.Decimal(i) / 100, 3),  # no decimal stats are written
])
def test_statistics_prune_every_key_type(typ, make, files_read):
    schema = pa.schema([("k", typ), ("v", pa.int64())])
    t = lf.Table.create(f"memory://prune-{uuid.uuid4().hex}", schema, key=["k"])
    for f in range(3):
        t.append(pa.table({"k": [make(f * 10 + i) for i in range(10)], "v": [0] * 10}, schema=schema))
    r = t.merge(pa.table({"k": [make(10), make(19)], "v": [1, 1]}, schema=schema))
    assert (r.files_read, r.updated, r.inserted) == (files_read, 2, 0)
    assert t.to_arrow().num_rows == 30


def test_partition_values_prune_when_the_key_has_the_partition(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["region", "id"], partition_by=["region"])
    for region in ("eu", "us", "asia"):
        t.append(rows([1, 2, 3], region))
    r = t.merge(rows([2], "us", amount=0))
    assert (r.files_read, r.updated) == (1, 1)
    assert sorted((x["region"], x["amount"]) for x in t.to_arrow().to_pylist()
                  if x["id"] == 2) == [("asia", 20), ("eu", 20), ("us", 0)]


def test_small_rewritten_files_are_packed(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    for i in range(4):
        t.append(rows([i * 10, i * 10 + 1]))
    r = t.merge(rows([0, 10, 20, 30], amount=-1))
    assert (r.files_read, r.files_rewritten, len(t.snapshot().files)) == (4, 4, 1)
    t2 = lf.Table.create(table_uri + "-small", SCHEMA, key=["id"],
                         properties={"delta.targetFileSize": "1"})
    for i in range(3):
        t2.append(rows([i]))
    t2.merge(rows([0, 1, 2], amount=-1))
    assert len(t2.snapshot().files) == 3


# ---- delete ----------------------------------------------------------------------------


def test_delete_removes_whole_files_and_rewrites_partial_ones(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["region"])
    t.append(rows([1, 2], "eu"))
    t.append(rows([3, 4], "us"))
    before = {f.path for f in t.snapshot().files}
    assert t.delete(pc.field("region") == "us") == 2
    assert t.delete(pc.field("id") == 1) == 1
    assert t.delete(pc.field("id") == 42) == 0
    assert t.version == 4  # the no-op delete commits nothing
    assert by_id(t.to_arrow()) == by_id(rows([2], "eu"))
    newest, whole = t.history(limit=2)
    assert whole.metrics == {"numDeletedRows": 2, "numRemovedFiles": 1, "numAddedFiles": 0,
                             "numCopiedRows": 0, "numAddedChangeFiles": 0}
    assert newest.metrics["numCopiedRows"] == 1 and newest.metrics["numAddedChangeFiles"] == 1
    assert not before & {f.path for f in t.snapshot().files}


def test_delete_keeps_rows_where_the_predicate_is_null(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(pa.table({"id": [1, 2, 3], "name": ["a", None, "c"], "amount": [1, 2, 3],
                       "region": ["eu"] * 3}, schema=SCHEMA))
    assert t.delete(pc.field("name") != "a") == 1
    assert sorted(x["id"] for x in t.to_arrow().to_pylist()) == [1, 2]


def test_delete_rejects_bad_predicates(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1]))
    with pytest.raises(lf.InvalidArgumentError, match="Expression"):
        t.delete(42)
    with pytest.raises(lf.InvalidArgumentError, match="cannot parse"):
        t.delete("id = = 1")  # SQL predicates are taken (docs/guide.md), bad SQL is refused
    with pytest.raises(lf.SchemaMismatchError, match="nope"):
        t.delete(pc.field("nope") == 1)
    with pytest.raises(lf.InvalidArgumentError, match="retries"):
        t.delete(pc.field("id") == 1, retries=-1)
    assert t.version == 1


# ---- interop: deltalake reads the rows and the change feed ------------------------------


def test_deltalake_reads_every_merge_and_delete_and_their_change_feed(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, partition_by=["region"], key=["id"])
    t.append(rows([1, 2, 3], "eu"))
    t.append(rows([4, 5], "us"))
    steps = [
        lambda: t.merge(pa.concat_tables([rows([2], "eu", amount=-1), rows([6], "us")])),
        lambda: t.merge(rows([7, 8], "asia")),  # insert only: no change files
        lambda: t.merge(rows([3, 4], "eu"), when_matched="delete", when_not_matched="ignore"),
        lambda: t.delete(pc.field("region") == "asia"),  # whole files: no change files
        lambda: t.delete(pc.field("id") == 5),
        lambda: t.merge(rows([1], "us"), when_not_matched_by_source="delete"),
    ]
    expected = [
        [(2, -1, "update_postimage"), (2, 20, "update_preimage"), (6, 60, "insert")],
        [(7, 70, "insert"), (8, 80, "insert")],
        [(3, 30, "delete"), (4, 40, "delete")],
        [(7, 70, "delete"), (8, 80, "delete")],
        [(5, 50, "delete")],
        [(1, 10, "update_postimage"), (1, 10, "update_preimage"), (2, -1, "delete"),
         (6, 60, "delete")],
    ]
    for step, changes in zip(steps, expected, strict=True):
        step()
        v = t.version
        assert_table_equal(deltalake_rows(local_uri).cast(SCHEMA), t.to_arrow())
        theirs = deltalake_changes(local_uri, v)
        assert change_set(theirs) == changes
        ours = written_changes(local_uri, v, SCHEMA)
        if ours is None:  # the adds and removes are exactly the changes
            assert not any("cdc" in a for a in log_actions(local_uri, v))
        else:
            assert_table_equal(ours, theirs, check_types=False)
        actions = log_actions(local_uri, v)
        assert all(a["remove"]["dataChange"] for a in actions if "remove" in a)
        assert all(not a["cdc"]["dataChange"] and a["cdc"]["path"].startswith("_change_data/")
                   for a in actions if "cdc" in a)


def test_change_files_are_skipped_when_the_feed_is_off(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, key=["id"],
                        properties={"delta.enableChangeDataFeed": "false"})
    t.append(rows([1, 2]))
    t.merge(rows([1], amount=0))
    t.delete(pc.field("id") == 2)
    assert not Path(local_uri, "_change_data").exists()
    assert by_id(t.to_arrow()) == by_id(rows([1], amount=0))


# ---- bad input ---------------------------------------------------------------------------


def test_bad_input_raises_typed_errors_and_writes_nothing(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2]))
    files = data_files(t)
    bad = [
        (lf.SchemaMismatchError, "unknown", dict(data=rows([1]), on="nope")),
        (lf.SchemaMismatchError, "lacks the key", dict(data=pa.table({"name": ["a"]}))),
        (lf.DuplicateKeyError, "'id': 2", dict(data=rows([2, 2]))),
        (lf.SchemaMismatchError, "null_keys='skip'",
         dict(data=pa.table({"id": pa.array([None], pa.int64()), "name": ["a"], "amount": [1],
                             "region": ["eu"]}))),
        (lf.SchemaMismatchError, "does not have", dict(data=rows([1]).append_column("x", [[1]]))),
        (lf.SchemaMismatchError, "id", dict(data=pa.table({"id": ["1"], "name": ["a"],
                                                         "amount": [1], "region": ["eu"]}))),
        (lf.InvalidArgumentError, "when_matched", dict(data=rows([1]), when_matched="upsert")),
        (lf.InvalidArgumentError, "when_not_matched", dict(data=rows([1]), when_not_matched="x")),
        (lf.InvalidArgumentError, "by_source",
         dict(data=rows([1]), when_not_matched_by_source="drop")),
        (lf.InvalidArgumentError, "null_keys", dict(data=rows([1]), null_keys="maybe")),
        (lf.InvalidArgumentError, "key column",
         dict(data=rows([1]), when_matched={"id": pl.col("source.id") + 1})),
        (lf.InvalidArgumentError, "target.<name>",
         dict(data=rows([1], amount=3), when_matched={"amount": pl.col("amount")})),
        (lf.SchemaMismatchError, "unknown column",
         dict(data=rows([1]), when_matched={"nope": pl.lit(1)})),
        (lf.InvalidArgumentError, "one row per matched row",
         dict(data=rows([1, 2], amount=0), when_matched=lambda tg, sr: tg.head(1))),
        (lf.InvalidArgumentError, "key column",
         dict(data=rows([1], amount=0), when_matched=lambda tg, sr: tg.with_columns(id=pl.lit(9)))),
        (lf.SchemaMismatchError, "cannot be stored",
         dict(data=rows([1], amount=0), when_matched={"amount": pl.lit("x")})),
        (lf.InvalidArgumentError, "key columns", dict(data=rows([1]), on=[])),
        (lf.InvalidArgumentError, "retries", dict(data=rows([1]), retries=True)),
        (lf.InvalidArgumentError, "watermark", dict(data=rows([1]), watermark=dt.datetime(2024, 1, 1))),
    ]
    for error, match, kwargs in bad:
        with pytest.raises(error, match=match):
            t.merge(**kwargs)
    assert t.version == 1 and data_files(t) == files


def test_merge_without_key_needs_on(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1]))
    with pytest.raises(lf.InvalidArgumentError, match="key columns"):
        t.merge(rows([1]))
    assert t.merge(rows([1], amount=0), on="id").updated == 1


# ---- conflicts ---------------------------------------------------------------------------


def test_merges_on_disjoint_partitions_both_commit(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["region", "id"], partition_by=["region"])
    t.append(rows([1, 2], "eu"))
    t.append(rows([1, 2], "us"))
    other = lf.Table(table_uri)
    commit_after(t, lambda: other.merge(rows([1, 9], "us", amount=0)))
    r = t.merge(rows([1, 9], "eu", amount=0))
    assert r.version == 4
    assert sorted((x["region"], x["id"], x["amount"]) for x in t.to_arrow().to_pylist()) == [
        ("eu", 1, 0), ("eu", 2, 20), ("eu", 9, 0), ("us", 1, 0), ("us", 2, 20), ("us", 9, 0)]


def test_merges_on_the_same_keys_conflict_and_retry(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2]))
    other = lf.Table(table_uri)
    commit_after(t, lambda: other.merge(rows([1], amount=100)))
    with pytest.raises(lf.CommitConflictError, match="removed the file"):
        t.merge(rows([1, 3], amount=0))
    assert {x["id"]: x["amount"] for x in t.to_arrow().to_pylist()} == {1: 100, 2: 20}
    commit_after(t, lambda: other.merge(rows([1], amount=200)))
    r = t.merge(rows([1, 3], amount=0), retries=1)
    assert (r.updated, r.inserted) == (1, 1)
    assert {x["id"]: x["amount"] for x in t.to_arrow().to_pylist()} == {1: 0, 2: 20, 3: 0}
    assert data_files(t) >= {f.path for f in t.snapshot().files}


def test_the_loser_leaves_no_files_behind(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"], partition_by=["region"])
    t.append(rows([1, 2]))
    other = lf.Table(table_uri)
    before = data_files(t)
    commit_after(t, lambda: other.merge(rows([2], amount=5)))
    with pytest.raises(lf.CommitConflictError):
        t.merge(rows([2, 3], amount=0))
    winner_files = data_files(t) - before
    assert len(winner_files) == 2  # the winner's rewrite and change file, none of ours
    assert all(p.startswith(("region=eu/", "_change_data/region=eu/")) for p in winner_files)


def test_insert_conflicts_with_a_concurrent_append_of_the_same_key(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1]))
    other = lf.Table(table_uri)
    commit_after(t, lambda: other.append(rows([500])))  # outside the merge's keys: no conflict
    assert t.merge(rows([7])).inserted == 1
    commit_after(t, lambda: other.append(rows([8])))
    with pytest.raises(lf.CommitConflictError, match="could match"):
        t.merge(rows([8]))


def test_delete_conflicts_only_with_files_it_could_match(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["region"])
    t.append(rows([1, 2], "eu"))
    other = lf.Table(table_uri)
    commit_after(t, lambda: other.append(rows([3], "us")))
    assert t.delete(pc.field("region") == "eu") == 2
    commit_after(t, lambda: other.append(rows([4], "us")))
    with pytest.raises(lf.CommitConflictError):
        t.delete(pc.field("region") == "us")
    commit_after(t, lambda: other.append(rows([5], "us")))
    assert t.delete(pc.field("region") == "us", retries=1) == 3


def test_merge_conflicts_with_a_compaction_of_a_file_it_read(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1]))
    t.append(rows([2]))
    other = lf.Table(table_uri)
    commit_after(t, lambda: other.compact())
    with pytest.raises(lf.CommitConflictError):
        t.merge(rows([1], amount=0))
    assert sorted(x["id"] for x in t.to_arrow().to_pylist()) == [1, 2]


def test_threads_merging_disjoint_partitions_all_commit(table_uri):
    regions = [f"r{i}" for i in range(6)]
    t = lf.Table.create(table_uri, SCHEMA, key=["region", "id"], partition_by=["region"])
    for r in regions:
        t.append(rows([1], r))
    errors = []

    def work(region):
        try:
            handle = lf.Table(table_uri)
            for i in range(3):
                handle.merge(rows([1, 10 + i], region, amount=i))
        except Exception as e:  # reported below
            errors.append(e)

    run_threads(work, [(r,) for r in regions])
    assert errors == []
    final = t.to_arrow()
    assert t.version == len(regions) + 3 * len(regions)
    assert sorted((x["region"], x["id"], x["amount"]) for x in final.to_pylist()) == sorted(
        [(r, 1, 2) for r in regions] + [(r, 10 + i, i) for r in regions for i in range(3)])


def _process_merge(uri, region, same_key):
    t = lf.Table(uri)
    key = 1 if same_key else 2
    for i in range(3):
        t.merge(rows([key], region if not same_key else "eu", amount=i + 100 * ord(region[-1])),
                retries=50)


def _process_merge_partition(uri, region):
    lf.Table(uri).merge(rows([1, 5], region, amount=7))


def test_two_processes_merging_disjoint_partitions(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, key=["region", "id"], partition_by=["region"])
    t.append(pa.concat_tables([rows([1], "pa"), rows([1], "pb")]))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_merge_partition, args=(local_uri, r)) for r in ("pa", "pb")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    t.refresh()
    assert t.version == 3
    assert sorted((x["region"], x["id"], x["amount"]) for x in t.to_arrow().to_pylist()) == [
        ("pa", 1, 7), ("pa", 5, 7), ("pb", 1, 7), ("pb", 5, 7)]


@pytest.mark.slow
def test_processes_merging_concurrently(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, key=["region", "id"], partition_by=["region"])
    regions = ["pa", "pb", "pc"]
    for r in [*regions, "eu"]:
        t.append(rows([1], r))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_merge, args=(local_uri, r, same))
             for r in regions for same in (False, True)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    t.refresh()
    assert t.version == 4 + 3 * len(procs)
    final = t.to_arrow().to_pylist()
    assert sorted((x["region"], x["id"]) for x in final) == sorted(
        [(r, 1) for r in regions] + [("eu", 1)] + [(r, 2) for r in regions])
    assert {x["amount"] for x in final if x["region"] == "eu"} <= {100 * ord(r[-1]) + 2
                                                                   for r in regions}
    assert_table_equal(deltalake_rows(local_uri).cast(SCHEMA), t.to_arrow())


# ---- a model: merge == dict upsert ---------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.integers(0, 30), st.integers(0, 3), max_size=15),
       st.lists(st.dictionaries(st.integers(0, 30), st.integers(0, 3), max_size=8), max_size=3),
       st.booleans())
def test_merge_matches_a_dict_model(initial, batches, sync):
    uri = f"memory://model-{uuid.uuid4().hex}"
    t = lf.Table.create(uri, SCHEMA, key=["id"], partition_by=["region"])

    def table_of(d):
        return pa.table({"id": pa.array(list(d), pa.int64()), "name": ["n"] * len(d),
                         "amount": pa.array(list(d.values()), pa.int64()),
                         "region": [f"r{k % 3}" for k in d]}, schema=SCHEMA)

    t.append(table_of(initial))
    model = dict(initial)
    for batch in batches:
        r = t.merge(table_of(batch), when_not_matched_by_source="delete" if sync else "keep")
        before = model
        model = dict(batch) if sync else {**model, **batch}
        assert r.inserted == len(set(batch) - set(before))
        assert r.updated == sum(1 for k in batch if k in before and before[k] != batch[k])
        assert r.deleted == (len(set(before) - set(batch)) if sync else 0)
        assert {x["id"]: x["amount"] for x in t.to_arrow().to_pylist()} == model


def test_merge_on_other_columns_than_the_declared_key_is_refused(table_uri):
    # Rows not matched on `on` would be inserted even when their declared key is taken.
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2]))
    for on in ("name", ["id", "name"]):
        with pytest.raises(lf.InvalidArgumentError, match=r"declares the key \['id'\]"):
            t.merge(rows([1], name="x"), on=on)
    assert t.version == 1
    t.merge(rows([1], name="x"), on="id")
    assert by_id(t.snapshot().to_arrow()) == by_id(pa.concat_tables([rows([1], name="x"), rows([2])]))
