"""The log under stale handles, log cleanup and hostile entries (issues 8.6, 9.1, 9.7, 9.8).

- `version` and `snapshot()` give the latest committed version at call time.
- A writer never re-creates a cleaned-up version: a stale handle reloads, and a
  commit that lands below what the log already reached is refused, typed.
- Every loop over the log is bounded by files that exist, and ends in a typed error.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.log import commit_path
from lakeflow.transaction import CommitRequest, commit_request

from helpers import ID_SCHEMA as SCHEMA
from helpers import Calls, deltalake_ids, ids, run_threads
from helpers import id_rows as rows


def cleaned_table(uri: str, commits: int = 10) -> tuple[lf.Table, lf.Table]:
    """(writer, stale): the writer appended `commits` times, checkpointed and cleaned the log."""
    writer = lf.Table.create(uri, SCHEMA)
    stale = lf.Table(uri)
    for i in range(commits):
        writer.append(rows(i))
    writer.checkpoint()
    time.sleep(0.05)  # commit timestamps run ahead of the clock by 1 ms per quick commit
    deleted = writer.cleanup_log(retention=dt.timedelta(0))
    assert deleted == list(range(commits))
    return writer, stale


# ---- issue 8.6: a stale handle reads the latest version -------------------------------------


def test_version_and_snapshot_follow_other_writers(table_uri):
    a = lf.Table.create(table_uri, SCHEMA)
    b = lf.Table(table_uri)
    a.append(rows(1))
    assert b.version == 1
    a.append(rows(2))
    snap = b.snapshot()
    assert (snap.version, ids(b)) == (2, [1, 2])
    a.append(rows(3).append_column("extra", pa.array(["x"])), schema_mode="merge")
    assert "extra" in b.schema.names and b.snapshot().version == 3
    assert b.history(limit=1)[0].version == b.version == b.to_arrow().num_rows == 3
    assert snap.version == 2 and snap.num_rows == 2  # a snapshot taken stays what it was


def test_latest_version_costs_one_probe_of_the_next_commit(table_uri, monkeypatch):
    t = lf.Table.create(table_uri, SCHEMA)
    for i in range(3):
        t.append(rows(i))
    calls = Calls(t, monkeypatch)
    assert t.version == 3
    assert calls.of("read") == [commit_path(4)]
    assert not calls.of("list_dir") and len(calls.of("exists")) <= 2
    calls.calls.clear()
    assert t.append(rows(9)) == 4
    assert not calls.of("list_dir")
    assert all(p == commit_path(4) or p == commit_path(5) or not p.endswith(".json")
               for p in calls.of("read")), calls.calls


# ---- issue 9.1: a stale handle never writes over cleaned-up history -------------------------


def test_stale_handle_appends_after_log_cleanup_at_a_new_version(table_uri, backend):
    writer, stale = cleaned_table(table_uri)
    assert stale.version == 10
    assert stale.append(rows(99)) == 11
    fresh = lf.Table(table_uri)
    assert fresh.version == 11 and ids(fresh) == [*range(10), 99]
    assert not stale.storage.exists(commit_path(1))  # nothing was re-created
    assert writer.append(rows(100)) == 12
    if backend == "local":  # deltalake cannot open memory://, nor reach the in-process S3 server
        assert deltalake_ids(table_uri) == [*range(10), 99, 100]


def test_commit_below_the_cleaned_log_is_refused(table_uri):
    """A handle that committed without refreshing: put-if-absent of version 1 succeeds
    (the file was deleted), and the commit must not be acknowledged."""
    writer = lf.Table.create(table_uri, SCHEMA)
    stale = lf.Table(table_uri)
    stale_state = stale.state
    for i in range(10):
        writer.append(rows(i))
    writer.checkpoint()
    time.sleep(0.05)
    assert writer.cleanup_log(retention=dt.timedelta(0)) == list(range(10))
    tx = CommitRequest(actions=[], operation="WRITE")
    with pytest.raises(lf.CommitConflictError, match="cleaned up"):
        commit_request(stale.storage, stale_state, tx, last_timestamp_ms=None,
               read_winner=lambda v: ([], None))
    fresh = lf.Table(table_uri)
    assert fresh.version == 10 and ids(fresh) == list(range(10))


def test_a_winner_cleaned_up_before_it_was_read_is_a_typed_conflict(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    state = t.state
    t.append(rows(1))

    def vanished(version: int) -> tuple[list, None]:
        raise FileNotFoundError(commit_path(version))

    with pytest.raises(lf.CommitConflictError, match="version 1"):
        commit_request(t.storage, state, CommitRequest(actions=[], operation="WRITE"),
               last_timestamp_ms=None, read_winner=vanished)


def test_cleaner_with_a_clock_31_days_ahead_loses_no_append(local_uri, run_skewed):
    """Default retention, but the cleaning process's clock is 31 days ahead (libfaketime)."""
    writer = lf.Table.create(local_uri, SCHEMA)
    stale = lf.Table(local_uri)
    for i in range(10):
        writer.append(rows(i))
    writer.checkpoint()
    script = "import json, sys, lakeflow as lf; print(json.dumps(lf.Table(sys.argv[1]).cleanup_log()))"
    out = run_skewed(31, script, local_uri)
    # A cleaner trusting its own clock deletes every commit below the checkpoint (0..9);
    # one that dates commits by the store deletes none. The writer must be right either way.
    deleted = json.loads(out)
    assert deleted == list(range(len(deleted)))
    assert stale.append(rows(99)) == 11
    assert ids(lf.Table(local_uri)) == [*range(10), 99]
    assert deltalake_ids(local_uri) == [*range(10), 99]


# ---- issue 9.7: no endless loop over a "directory" commit key ------------------------------


def _run_bounded(fn: Callable[[], Any], seconds: float = 20) -> BaseException | None:
    """Run `fn` in a thread; fail the test if it does not end in time; return its error."""
    box: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as e:
            box[0] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), "the call did not end: an unbounded loop over the log"
    return box[0]


def test_a_directory_where_a_commit_should_be_ends_in_a_typed_error(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows(1))
    other = lf.Table(table_uri)
    # Version 2 is a "directory" (a key under it); version 3 is a real commit.
    t.storage.write(f"{commit_path(2)}/x", b"{}")
    t.storage.write(commit_path(3), t.storage.read(commit_path(1)))
    for call in (other.refresh, lambda: other.version, lambda: other.append(rows(5)),
                 lambda: lf.Table(table_uri).version):
        error = _run_bounded(call)
        assert isinstance(error, lf.CorruptLogError), repr(error)
        assert "00000000000000000002.json" in str(error)


# ---- issue 9.8: memory and time bounded by what is listed ----------------------------------


def _peak_mib(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    tracemalloc.start()
    try:
        fn()
        error = None
    except BaseException as e:
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return peak, error


def test_a_stray_far_future_commit_is_a_gap_not_a_huge_list(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows(1))
    t.storage.write(commit_path(100_000_000), t.storage.read(commit_path(1)))
    for call in (lambda: lf.Table(table_uri), t.commit_timestamps,
                 lambda: t.snapshot(as_of=dt.datetime.now(dt.timezone.utc))):
        peak, error = _peak_mib(call)
        assert peak < 50, f"{peak:.0f} MiB"
        if error is not None:
            assert isinstance(error, lf.CorruptLogError), repr(error)
    with pytest.raises(lf.CorruptLogError, match="gap"):
        lf.Table(table_uri).version  # noqa: B018 (the handle opens at version 1; the latest refuses)


def test_a_commit_name_beyond_the_version_range_is_ignored_with_a_warning(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows(1))
    t.storage.write("_delta_log/99999999999999999999.json", t.storage.read(commit_path(1)))
    with pytest.warns(UserWarning, match="99999999999999999999.json"):
        fresh = lf.Table(table_uri)
    assert fresh.version == 1 and ids(fresh) == [1]
    assert sorted(fresh.commit_timestamps()) == [0, 1]


@pytest.mark.parametrize("hint", [{"parts": 10**9}, {"parts": -3}, {"version": 10**30},
                                  {"version": -1}, {"parts": "many"}])
def test_a_hostile_last_checkpoint_is_only_a_hint(table_uri, hint):
    t = lf.Table.create(table_uri, SCHEMA)
    for i in range(4):
        t.append(rows(i))
    t.checkpoint()
    t.append(rows(4))
    last = json.loads(t.storage.read("_delta_log/_last_checkpoint"))
    t.storage.write("_delta_log/_last_checkpoint", json.dumps({**last, **hint}).encode())
    start = time.monotonic()
    peak, error = _peak_mib(lambda: lf.Table(table_uri))
    assert error is None or isinstance(error, Warning), repr(error)
    assert peak < 50 and time.monotonic() - start < 10
    fresh = lf.Table(table_uri)
    assert fresh.version == 5 and ids(fresh) == [0, 1, 2, 3, 4]


def test_writers_racing_a_cleaner_with_zero_retention_lose_nothing(table_uri):
    """3 writer threads append while a fourth checkpoints and cleans the log at once."""
    lf.Table.create(table_uri, SCHEMA)
    acknowledged: list[tuple[int, int]] = []
    refused: list[BaseException] = []
    done = threading.Event()

    def write(w: int) -> None:
        t = lf.Table(table_uri)
        for i in range(12):
            uid = w * 1000 + i
            try:
                acknowledged.append((uid, t.append(rows(uid))))
            except lf.LakeflowError as e:  # typed, not acknowledged
                refused.append(e)

    def clean() -> None:
        t = lf.Table(table_uri)
        while not done.is_set():
            t.checkpoint()
            t.cleanup_log(retention=dt.timedelta(0))

    cleaner = threading.Thread(target=clean)
    cleaner.start()
    run_threads(write, [(w,) for w in range(3)])
    done.set()
    cleaner.join()
    versions = [v for _, v in acknowledged]
    assert len(set(versions)) == len(versions), "a version was claimed twice"
    final = ids(lf.Table(table_uri))
    assert len(final) == len(set(final))
    assert {uid for uid, _ in acknowledged} <= set(final), "an acknowledged append is lost"
    assert len(acknowledged) + len(refused) == 36
    assert all(isinstance(e, lf.CommitConflictError) for e in refused), refused
