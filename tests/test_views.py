"""Views: incremental aggregates equal the aggregate recomputed from scratch, at every version."""

from __future__ import annotations

import datetime as dt
import uuid

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

import lakeflow as lf
from lakeflow.testing import assert_table_equal

UTC = dt.timezone.utc
SCHEMA = pa.schema([("account", pa.string()), ("amount", pa.int64()), ("fee", pa.float64()),
                    ("ts", pa.timestamp("us", tz="UTC"))])
AGGS = {"total": ("amount", "sum"), "n": "count", "avg_fee": ("fee", "mean"),
        "lo": ("amount", "min"), "hi": ("amount", "max"), "fees": ("fee", "count")}


def payments(*rows):
    return pa.table({"account": [r[0] for r in rows], "amount": [r[1] for r in rows],
                     "fee": [r[2] for r in rows],
                     "ts": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC"))}, schema=SCHEMA)


def at(day, hour=12):
    return dt.datetime(2024, 5, day, hour, tzinfo=UTC)


def expected(source: lf.Table, version: int, keys, window=None) -> pa.Table:
    """The oracle: aggregate the snapshot from scratch."""
    frame = pl.from_arrow(source.snapshot(version=version).to_arrow())
    if window:
        frame = frame.with_columns(pl.col("ts").dt.truncate(window).alias("window_start"))
    aggs = [pl.col("amount").sum().alias("total"), pl.len().cast(pl.Int64).alias("n"),
            pl.col("fee").mean().alias("avg_fee"), pl.col("amount").min().alias("lo"),
            pl.col("amount").max().alias("hi"), pl.col("fee").count().cast(pl.Int64).alias("fees")]
    if keys:
        return frame.group_by(keys).agg(aggs).to_arrow()
    return (frame.select(aggs) if frame.height else frame.select(aggs).clear()).to_arrow()


def _rounded(table: pa.Table) -> pa.Table:
    """Floats rounded: a running sum and a recomputed one differ in the last bits."""
    return pa.table({c.name: pc.round(table[c.name], 9) if pa.types.is_floating(c.type) else table[c.name]
                     for c in table.schema})


def check(view, source, version, keys, window=None):
    got = view.snapshot(source_version=version)
    want = expected(source, version, keys, window)
    assert_table_equal(_rounded(got), _rounded(want.cast(got.schema)), check_types=False)


def test_view_folds_appends_and_deletions(local_uri, tmp_path):
    import deltalake

    source = lf.Table.create(local_uri, SCHEMA)
    view = lf.View.create(str(tmp_path / "balances"), source, group_by=["account"], aggregates=AGGS)
    assert view.snapshot().num_rows == 0 and view.source_version == -1
    source.append(payments(("a", 10, 0.5, at(1)), ("b", 5, None, at(1)), ("a", 7, 1.5, at(2))))
    v1 = view.refresh()
    assert view.source_version == 1
    check(view, source, 1, ["account"])
    assert view.refresh() == v1  # nothing new: no commit
    source.append(payments(("a", -3, 0.1, at(2)), ("c", 1, 2.0, at(3))))
    # Deleting rows (here with deltalake, as another engine would) retracts them from the view;
    # the max of "a" must be recomputed from the source because its max row left.
    deltalake.DeltaTable(local_uri).delete("amount = 10 or account = 'b'")
    source.refresh()
    view.refresh()
    assert view.source_version == source.version == 3
    for v in range(source.version + 1):
        check(view, source, v, ["account"])
    moved = view.diff(1, 3)
    kinds = sorted(zip(moved.column("account").to_pylist(), moved.column("_change_type").to_pylist(), strict=True))
    assert kinds == [("a", "update_postimage"), ("a", "update_preimage"), ("b", "delete"), ("c", "insert")]


def test_windowed_view_and_late_rows(table_uri, tmp_path):
    source = lf.Table.create(table_uri, SCHEMA, event_time="ts")
    daily = lf.View.create(str(tmp_path / "daily"), source, group_by=[], aggregates=AGGS, window="1d")
    source.append(payments(("a", 10, 1.0, at(1, 23)), ("b", 5, 1.0, at(2, 1))))
    daily.refresh()
    closed = source.version
    source.append(payments(("a", 100, 1.0, at(1, 23))))  # a late row for May 1st
    daily.refresh()
    check(daily, source, closed, ["window_start"], "1d")
    check(daily, source, source.version, ["window_start"], "1d")
    moved = daily.diff(closed, source.version)
    assert moved.column("window_start").to_pylist() == [at(1, 0)] * 2
    assert sorted(moved.column("total").to_pylist()) == [10, 110]


def test_global_view_and_as_of_unrefreshed_versions(table_uri, tmp_path):
    source = lf.Table.create(table_uri, SCHEMA)
    view = lf.View.create(str(tmp_path / "all"), source, group_by=[], aggregates={"total": ("amount", "sum")})
    source.append(payments(("a", 1, None, at(1))))
    view.refresh()
    source.append(payments(("a", 2, None, at(1))))
    source.append(payments(("a", 4, None, at(1))))
    # Never refreshed at 2 or 3: computed from the stored state plus the source diff.
    assert view.snapshot(source_version=2).column("total").to_pylist() == [3]
    assert view.snapshot(source_version=3).column("total").to_pylist() == [7]
    assert view.snapshot().column("total").to_pylist() == [1]
    with pytest.raises(lf.VersionNotFoundError):
        view.snapshot(source_version=9)


def test_concurrent_refreshes_fold_once(table_uri, tmp_path):
    source = lf.Table.create(table_uri, SCHEMA)
    uri = str(tmp_path / "v")
    a = lf.View.create(uri, source, group_by=["account"], aggregates={"total": ("amount", "sum")})
    b = lf.View(uri)
    source.append(payments(("x", 5, None, at(1))))
    a.refresh()
    b.refresh()  # sees the txn: nothing to fold
    source.append(payments(("x", 6, None, at(1))))
    b.refresh()
    a.refresh()
    assert lf.View(uri).snapshot().column("total").to_pylist() == [11]
    assert [c.operation for c in lf.Table(uri).history()].count("VIEW REFRESH") == 2


def test_bad_view_definitions(table_uri, tmp_path):
    source = lf.Table.create(table_uri, SCHEMA)
    with pytest.raises(lf.SchemaMismatchError):
        lf.View.create(str(tmp_path / "v1"), source, group_by=["nope"], aggregates={"n": "count"})
    with pytest.raises(lf.SchemaMismatchError):
        lf.View.create(str(tmp_path / "v2"), source, group_by=[], aggregates={"s": ("account", "sum")})
    with pytest.raises(lf.InvalidArgumentError):
        lf.View.create(str(tmp_path / "v3"), source, group_by=[], aggregates={"s": ("amount", "median")})
    with pytest.raises(lf.SchemaMismatchError, match="event_time"):
        lf.View.create(str(tmp_path / "v4"), source, group_by=[], aggregates={"n": "count"}, window="1d")
    with pytest.raises(lf.InvalidArgumentError, match="not a lakeflow view"):
        lf.View(table_uri)


KEYED = pa.schema([("id", pa.int64()), ("account", pa.string()), ("amount", pa.int64()),
                   ("fee", pa.float64()), ("ts", pa.timestamp("us", tz="UTC"))])


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "merge", "delete", "compact", "refresh"]),
                          st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["a", "b", "c"]),
                                             st.integers(-50, 50), st.none() | st.floats(0, 5)),
                                   min_size=1, max_size=5, unique_by=lambda r: r[0])),
                min_size=1, max_size=8))
def test_view_equals_recomputation_after_any_operations(ops):
    uri = f"memory://view-prop-{uuid.uuid4().hex}"
    source = lf.Table.create(uri + "/src", KEYED, key=["id"])
    view = lf.View.create(uri + "/view", source, group_by=["account"], aggregates=AGGS)
    for op, rows in ops:
        data = pa.table({"id": [r[0] for r in rows], "account": [r[1] for r in rows],
                         "amount": [r[2] for r in rows], "fee": [r[3] for r in rows],
                         "ts": pa.array([at(1)] * len(rows), pa.timestamp("us", tz="UTC"))}, schema=KEYED)
        if op == "append":
            try:
                source.append(data)
            except lf.DuplicateKeyError:  # the key is enforced: nothing was written
                assert set(data.column("id").to_pylist()) & set(source.to_arrow().column("id").to_pylist())
        elif op == "merge":
            source.merge(data, on=["id"])
        elif op == "delete":
            source.delete(pc.field("id").isin(pa.array([r[0] for r in rows], pa.int64())))
        elif op == "compact":
            source.compact()
        else:
            view.refresh()
    view.refresh()
    assert view.source_version == source.version
    for v in range(source.version + 1):
        check(view, source, v, ["account"])


# ---- racing refreshes: the reflected source version is what a refresh read -----------------


class RacingSource(lf.Table):
    """A source handle that runs `hook` once, as the view refresh starts reading its diff."""

    def __init__(self, uri, hook):
        super().__init__(uri)
        self.hook = hook

    def diff(self, *args, **kwargs):
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().diff(*args, **kwargs)


def race_refreshes(uri, source):
    """Refresh A plans at the source's latest version, then B plans one version later;
    A commits first, then B: the order that double-counted."""
    import threading

    a_planned, b_planned, a_done = threading.Event(), threading.Event(), threading.Event()
    a_view = lf.View(uri, source=RacingSource(source.uri, lambda: (a_planned.set(), b_planned.wait(30))))
    b_view = lf.View(uri, source=RacingSource(source.uri, lambda: (b_planned.set(), a_done.wait(30))))

    def run_a():
        a_view.refresh()
        a_done.set()

    thread_a = threading.Thread(target=run_a)
    thread_a.start()
    assert a_planned.wait(30)
    source.append(payments(("y", 100, 1.0, at(2))))
    thread_b = threading.Thread(target=b_view.refresh)
    thread_b.start()
    thread_a.join(60)
    thread_b.join(60)
    assert a_done.is_set() and b_planned.is_set() and not thread_b.is_alive()


@pytest.mark.parametrize("start", ["fresh", "zero groups"])
def test_racing_refreshes_of_an_empty_view_fold_once(table_uri, start):
    source = lf.Table.create(table_uri, SCHEMA)
    uri = f"{table_uri}-view"
    view = lf.View.create(uri, source, group_by=["account"], aggregates=AGGS)
    if start == "zero groups":  # the view has state, then is refreshed down to no group (no files)
        source.append(payments(("x", 1, None, at(1))))
        view.refresh()
        source.delete(pc.field("account") == "x")
        view.refresh()
        assert view.snapshot().num_rows == 0 and not lf.Table(uri).snapshot().files
    source.append(payments(("x", 5, 0.5, at(1)), ("z", 2, None, at(1))))
    race_refreshes(uri, source)
    fresh = lf.View(uri)
    assert fresh.source_version == source.version
    check(fresh, source, source.version, ["account"])


def test_many_fresh_views_refreshed_by_two_threads_equal_recomputation(backend, table_uri):
    import threading

    for i in range(8 if backend == "s3" else 20):
        source = lf.Table.create(f"{table_uri}-{i}", SCHEMA)
        uri = f"{table_uri}-{i}-view"
        lf.View.create(uri, source, group_by=["account"], aggregates=AGGS)
        source.append(payments(("x", 5, 0.5, at(1))))
        start = threading.Barrier(2)

        def refresh(append=False, uri=uri, source=source, start=start, i=i):
            view = lf.View(uri)  # each thread its own handles, as two processes would have
            start.wait()
            if append:
                source.append(payments(("y", i, None, at(2))))
            view.refresh()

        threads = [threading.Thread(target=refresh), threading.Thread(target=refresh, args=(True,))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        view = lf.View(uri)
        view.refresh()  # whichever refresh read the older version, the view ends current
        assert view.source_version == source.version == 2
        check(view, source, 2, ["account"])


def test_a_transaction_that_read_a_txn_conflicts_with_a_winner_that_moved_it(table_uri):
    lf.Table.create(table_uri, SCHEMA)
    first, stale, other = lf.Table(table_uri), lf.Table(table_uri), lf.Table(table_uri)
    first.transaction("A").set_txn("app", 1).commit()
    # The winner moved another application's txn: replayed on top of it.
    other.transaction("B").read(txns=["other"]).set_txn("other", 1).commit()
    assert other.version == 2
    with pytest.raises(lf.CommitConflictError, match="'app'"):
        stale.transaction("B").read(txns=["app"]).set_txn("app", 2).commit()


# ---- a source whose history was cleaned up: recompute from its snapshot ---------------------


@pytest.mark.parametrize("cleanup", ["cleanup_log", "vacuum"])
def test_view_behind_a_cleaned_up_source_recomputes(table_uri, cleanup):
    import time

    source = lf.Table.create(table_uri, SCHEMA)
    view = lf.View.create(f"{table_uri}-view", source, group_by=["account"], aggregates=AGGS)
    source.append(payments(("a", 10, 0.5, at(1)), ("b", 3, None, at(1))))
    view.refresh()
    for i in range(3):
        source.append(payments(("a", i, 1.0, at(2)), ("c", 2 * i, None, at(2))))
    source.delete(pc.field("amount") == 10)  # a's max leaves: a fold would have to retract it
    if cleanup == "cleanup_log":  # the commits after the view's version are gone
        source.checkpoint()
        time.sleep(0.01)
        assert source.cleanup_log(retention=dt.timedelta(0))
    else:  # the files the diff would read are gone
        source.compact()
        assert source.vacuum(retention=dt.timedelta(0), enforce_retention=False).files
    view.refresh()
    assert view.source_version == source.version
    check(view, source, source.version, ["account"])
    assert lf.Table(f"{table_uri}-view").history(limit=1)[0].parameters["mode"] == "recompute"
    source.append(payments(("d", 1, None, at(3))))
    view.refresh()  # back on the incremental path from the recomputed state
    check(view, source, source.version, ["account"])
    assert lf.Table(f"{table_uri}-view").history(limit=1)[0].parameters["mode"] == "incremental"


class ViewMachine(RuleBasedStateMachine):
    """Source writes, log cleanup, vacuum, plain and racing refreshes in any order: after
    every refresh the view equals the aggregate recomputed from scratch."""

    def __init__(self):
        super().__init__()
        uri = f"memory://view-machine-{uuid.uuid4().hex}"
        self.source = lf.Table.create(uri + "/src", SCHEMA)
        self.uri = uri + "/view"
        lf.View.create(self.uri, self.source, group_by=["account"], aggregates=AGGS)

    @rule(rows=st.lists(st.tuples(st.sampled_from("abc"), st.integers(-9, 9)), min_size=1, max_size=4))
    def append(self, rows):
        self.source.append(payments(*[(a, x, float(x), at(1)) for a, x in rows]))

    @rule(account=st.sampled_from("abc"))
    def delete(self, account):
        self.source.delete(pc.field("account") == account)

    @rule()
    def compact_and_vacuum(self):
        self.source.compact()
        self.source.vacuum(retention=dt.timedelta(0), enforce_retention=False)

    @rule()
    def cleanup_log(self):
        import time

        self.source.checkpoint()
        time.sleep(0.002)
        self.source.cleanup_log(retention=dt.timedelta(0))

    @rule()
    def refresh(self):
        lf.View(self.uri).refresh()
        self.check_current()

    @rule()
    def racing_refreshes(self):
        self.source.append(payments(("b", 1, None, at(1))))  # A has something to fold
        race_refreshes(self.uri, self.source)
        lf.View(self.uri).refresh()  # the refresh that read the older version may have been last
        self.check_current()

    def check_current(self):
        view = lf.View(self.uri)
        self.source.refresh()
        assert view.source_version == self.source.version
        check(view, self.source, self.source.version, ["account"])


ViewMachine.TestCase.settings = settings(deadline=None, stateful_step_count=12)
test_view_machine = ViewMachine.TestCase
