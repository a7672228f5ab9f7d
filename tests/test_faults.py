"""Injected storage faults surface as StorageError, and the table stays as it was.

Every test wraps the backend's fsspec filesystem in `FaultyFileSystem` and hands
it to lakeflow with `storage_options={"filesystem": ...}`; checks read the table
through a separate, fault-free handle.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import fsspec
import pytest

import lakeflow as lf
from lakeflow.testing import Fault, FaultyFileSystem

from helpers import ID_PART_SCHEMA as SCHEMA
from helpers import part_rows as rows
from helpers import stored_files

# The stores lakeflow reaches through fsspec (local disk has its own code path).
pytestmark = pytest.mark.parametrize("backend", ["memory", "s3"], indirect=True)

@dataclass
class Faulty:
    """A table location reached through a FaultyFileSystem."""

    uri: str
    fs: FaultyFileSystem
    inner: fsspec.AbstractFileSystem
    root: str

    @property
    def options(self) -> dict:
        return {"filesystem": self.fs}

    def table(self) -> lf.Table:
        return lf.Table(self.uri, storage_options=self.options)

    def inject(self, *faults: Fault) -> None:
        self.fs.faults[:] = faults

    def files(self) -> set[str]:
        """Every file under the table root, relative to it."""
        return stored_files(self.uri)

    def state(self) -> tuple[int, list[int], set[str]]:
        """(version, sorted ids, log files) as a fault-free reader sees them."""
        t = lf.Table(self.uri)
        ids = sorted(t.snapshot().to_arrow().column("id").to_pylist())
        return t.version, ids, {f for f in self.files() if f.startswith("_delta_log/")}

    def referenced(self) -> set[str]:
        return {f.path for f in lf.Table(self.uri).snapshot().files}


@pytest.fixture
def faulty(table_uri) -> Faulty:
    inner, root = fsspec.core.url_to_fs(table_uri)
    return Faulty(table_uri, FaultyFileSystem(inner), inner, root)


@pytest.fixture
def table(faulty) -> lf.Table:
    """A table at version 1 holding ids 1 and 2, opened through the faulty filesystem."""
    t = lf.Table.create(faulty.uri, SCHEMA, partition_by=["part"], storage_options=faulty.options)
    t.append(rows([1, 2]))
    return t


def assert_fails_cleanly(excinfo, fault: Fault) -> None:
    """The error is a StorageError whose cause is the injected exception."""
    assert isinstance(excinfo.value, lf.StorageError)
    assert fault.error is not None and excinfo.value.__cause__ is fault.error
    assert "injected" in str(excinfo.value)


def injected(op, **kwargs) -> Fault:
    return Fault(op, error=OSError(f"injected {op} failure"), **kwargs)


@pytest.mark.parametrize("op, kwargs", [
    ("write", {"path": ".parquet"}),
    ("write", {"path": ".parquet", "mode": "truncate"}),
    ("write", {"path": "_delta_log/"}),
    ("read", {"path": "_delta_log/"}),
    ("info", {"path": "_delta_log/"}),
], ids=["data-write", "torn-data-write", "commit-write", "log-read", "log-exists"])
def test_failed_append_leaves_table_unchanged(faulty, table, op, kwargs):
    fault = injected(op, **kwargs)
    before = faulty.state()
    referenced = faulty.referenced()
    faulty.inject(fault)
    with pytest.raises(lf.StorageError) as excinfo:
        table.append(rows([3], "b"))
    assert_fails_cleanly(excinfo, fault)
    assert fault.hits >= 1
    assert faulty.state() == before
    # Whatever the failed append left behind is an unreferenced data file.
    leftovers = faulty.files() - before[2] - referenced
    assert all(f.endswith(".parquet") and "_delta_log" not in f for f in leftovers), leftovers
    # The same handle works again once the store does.
    faulty.inject()
    assert table.append(rows([3], "b")) == 2
    assert faulty.state()[:2] == (2, [1, 2, 3])


@pytest.mark.parametrize("nth", range(1, 12))
def test_append_survives_failure_of_any_single_call(faulty, table, nth):
    """Fail the nth storage call of an append, whatever it is: all or nothing."""
    before = faulty.state()
    fault = injected("any", nth=nth)
    faulty.inject(fault)
    start = len(faulty.fs.calls)
    try:
        version = table.append(rows([3]))
    except lf.StorageError as e:
        assert e.__cause__ is fault.error
        assert faulty.state() == before
    else:
        # The append made fewer calls than nth, or the failed one was the re-check, after
        # the commit, that version 1 still exists (retried: the commit is already written).
        failed = faulty.fs.calls[start + nth - 1] if fault.hits >= nth else None
        assert failed is None or (failed[0] == "info" \
            and failed[1].endswith("_delta_log/00000000000000000001.json")), failed
        assert version == 2 and faulty.state()[1] == [1, 2, 3]


def test_list_failure(faulty, table):
    fault = injected("list")
    faulty.inject(fault)
    with pytest.raises(lf.StorageError) as excinfo:
        lf.Table.create(faulty.uri + "-new", SCHEMA, storage_options=faulty.options)
    assert_fails_cleanly(excinfo, fault)
    assert not faulty.inner.exists(faulty.root + "-new")
    faulty.inject(injected("list", times=None))
    with pytest.raises(lf.StorageError):
        table.version_at("2100-01-01T00:00:00Z")  # time travel by instant lists the log
    assert table.snapshot().num_rows == 2  # the handle's state is intact


def test_read_failure_of_commit_and_data(faulty, table):
    faulty.inject(injected("read", path="00000000000000000001.json", times=None))
    with pytest.raises(lf.StorageError, match=r"00000000000000000001\.json"):
        faulty.table()
    faulty.inject(injected("read", path=".parquet", times=None))
    with pytest.raises(lf.StorageError, match="injected read failure"):
        table.snapshot().to_arrow()
    faulty.inject()
    assert sorted(faulty.table().to_arrow().column("id").to_pylist()) == [1, 2]


def test_torn_read_of_a_commit_is_a_corrupt_log_not_a_wrong_answer(faulty, table):
    faulty.inject(Fault("read", path="00000000000000000001.json", mode="truncate"))
    with pytest.raises(lf.CorruptLogError):
        faulty.table()
    faulty.inject()
    assert faulty.table().snapshot().num_rows == 2


def test_lost_reply_on_commit_then_exactly_once_retry(faulty, table):
    """The commit landed but its reply was lost: a retry of the batch must not add it twice."""
    fault = injected("write", path="_delta_log/", mode="after")
    faulty.inject(fault)
    with pytest.raises(lf.StorageError):
        table.append(rows([3]), app_id="job", txn_version=7)
    faulty.inject()
    assert table.append(rows([3]), app_id="job", txn_version=7) == 2
    assert faulty.state()[:2] == (2, [1, 2, 3])


@pytest.mark.parametrize("txn", [None, ("job", 1)], ids=["plain", "exactly-once"])
def test_sdk_retry_after_lost_reply_commits_once(faulty, table, txn):
    """An SDK retries a conditional put whose reply was lost and gets 'already exists'.

    The commit is ours: lakeflow must report it, not replay the batch at the next
    version (a duplicate) nor treat it as another writer's and delete its files.
    """
    faulty.inject(Fault("write", path="_delta_log/", mode="retried"))
    app_id, txn_version = txn or (None, None)
    assert table.append(rows([3]), app_id=app_id, txn_version=txn_version) == 2
    faulty.inject()
    assert faulty.state()[:2] == (2, [1, 2, 3])
    assert lf.Table(faulty.uri).to_arrow().num_rows == 3  # every referenced file exists


@pytest.mark.parametrize("mode", ["raise", "truncate"])
def test_failed_checkpoint_write_keeps_table_readable(faulty, table, mode):
    fault = Fault("write", path=".checkpoint.parquet", mode=mode, error=OSError("injected"))
    faulty.inject(fault)
    with pytest.raises(lf.StorageError):
        table.checkpoint()
    faulty.inject()
    # A torn checkpoint (only possible on a store without atomic writes) is skipped.
    torn = pytest.warns(UserWarning, match="unreadable checkpoint")
    with torn if mode == "truncate" else contextlib.nullcontext():
        fresh = lf.Table(faulty.uri)
    assert fresh.version == 1
    assert sorted(fresh.to_arrow().column("id").to_pylist()) == [1, 2]
    assert table.append(rows([3])) == 2
