"""Reading a long log at scale: commits read concurrently on a fresh open; `version_at`
by a binary search that returns what the whole timeline does."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import threading
import time
import warnings
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.errors import VersionNotFoundError
from lakeflow.log_reader import LogReader
from lakeflow.storage import Storage, open_storage


class SlowStore:
    """A store whose reads take a round trip's time, counting how many overlap."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.uri = inner, inner.uri
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def read(self, path: str) -> bytes:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            return self.inner.read(path)
        finally:
            with self.lock:
                self.running -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_fresh_open_reads_the_commits_concurrently_and_in_order(table_uri, backend):
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64())]),
                        properties={"delta.checkpointInterval": "1000"})
    for i in range(40):
        t.append(pa.table({"id": [i]}))
    t.set_properties({"lakeflow.test": "last"})  # a metadata change the replay must keep
    slow = SlowStore(t.storage if backend == "memory" else open_storage(table_uri))
    state = LogReader(slow).head  # type: ignore[arg-type]
    assert slow.most > 1  # round trips overlap
    assert state.version == t.version
    assert state.metadata.configuration["lakeflow.test"] == "last"
    assert state.files == t.snapshot().state.files


BASE_MS = 1_700_000_000_000
MINUTE = 60_000
SKEWS = st.one_of(st.just(0), st.integers(-3, 3), st.sampled_from([-20 * MINUTE, 20 * MINUTE, None]),
                  st.integers(-10 * MINUTE, 10 * MINUTE))
MTIME_SKEWS = st.one_of(st.just(0), st.integers(-2 * MINUTE, 2 * MINUTE), st.just(-BASE_MS + 5))


def _skewed_log(path: str, times: list[tuple[int | None, int]]) -> None:
    """A local table whose commit v records times[v][0] (None: no timestamp) and has mtime times[v][1]."""
    t = lf.Table.create(path, pa.schema([("id", pa.int64())]))
    for i in range(len(times) - 1):
        t.append(pa.table({"id": [i]}))
    for v, (recorded, mtime) in enumerate(times):
        file = os.path.join(path, "_delta_log", f"{v:020d}.json")
        with open(file) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for action in lines:
            if "commitInfo" in action:
                action["commitInfo"].pop("timestamp", None)
                if recorded is not None:
                    action["commitInfo"]["timestamp"] = recorded
        with open(file, "w") as f:
            f.write("\n".join(json.dumps(a) for a in lines) + "\n")
        os.utime(file, ns=(mtime * 1_000_000, mtime * 1_000_000))


def _linear(reader: LogReader, target: int) -> int | None:
    """The latest version at or before `target` on the monotonic timeline, read whole."""
    best = None
    for v, ts in reader.timeline():
        if ts > target:
            break
        best = v
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(SKEWS, MTIME_SKEWS), min_size=1, max_size=14), st.data())
def test_version_at_matches_the_whole_timeline_on_skewed_logs(tmp_path_factory, skews, data):
    path = str(tmp_path_factory.mktemp("skew"))
    times = [(None if s is None else BASE_MS + v * 1000 + s, BASE_MS + v * 1000 + m)
             for v, (s, m) in enumerate(skews)]
    _skewed_log(path, times)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writers' clocks running ahead are warned about
        timeline = LogReader(open_storage(path)).timeline()
        edges = [ts + d for _, ts in timeline for d in (-1, 0, 1)]
        targets = [*edges, data.draw(st.integers(BASE_MS - 30 * MINUTE, BASE_MS + 30 * MINUTE))]
        for target in targets:
            expected = _linear(LogReader(open_storage(path)), target)
            instant = dt.datetime.fromtimestamp(target / 1000, dt.timezone.utc)
            if expected is None:
                with pytest.raises(VersionNotFoundError):
                    LogReader(open_storage(path)).version_at(instant)
            else:
                assert LogReader(open_storage(path)).version_at(instant) == expected


class CountingStore(SlowStore):
    """Counts the commit files read (no delay)."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.commit_reads = 0

    def read(self, path: str) -> bytes:
        self.commit_reads += path.endswith(".json")
        return self.inner.read(path)


def test_version_at_reads_few_commits_of_a_long_log(tmp_path):
    path = str(tmp_path / "t")
    n, gap = 400, 10 * MINUTE  # commits further apart than the skew tolerance
    _skewed_log(path, [(BASE_MS + v * gap, BASE_MS + v * gap) for v in range(n)])
    for v in (0, 1, 123, 250, n - 1):
        store = CountingStore(open_storage(path))
        instant = dt.datetime.fromtimestamp((BASE_MS + v * gap + 500) / 1000, dt.timezone.utc)
        assert LogReader(store).version_at(instant) == v  # type: ignore[arg-type]
        assert store.commit_reads <= 2 * math.ceil(math.log2(n)) + 2  # a binary search, not n reads
