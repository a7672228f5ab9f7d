"""Reading a long log at scale: commits read concurrently on a fresh open."""

from __future__ import annotations

import threading
import time
from typing import Any

import pyarrow as pa

import lakeflow as lf
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
