"""Concurrent writer processes: every append lands exactly once, versions stay contiguous.

Writers are separate processes (forked from a clean forkserver, so they share no
handle, cache or lock with each other or with the test), racing on local disk and
on S3 (a SeaweedFS server, whose conditional put answers a lost race with a bare
412 PreconditionFailed). The default run uses 4 writers x 25 appends;
`pytest -m slow` runs the full 8 x 100 recorded in docs/reliability.md.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.actions import Add, Txn
from lakeflow.log import list_log, read_commit

from helpers import deltalake_ids, processes, worker_options

pytestmark = pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)

SCHEMA = pa.schema([("id", pa.int64()), ("writer", pa.int32())])
# (writers, appends) of the default run.
CI_SIZE = {"local": (4, 25), "s3": (4, 25)}
FULL_SIZE = (8, 100)


@pytest.fixture(params=["ci", pytest.param("full", marks=pytest.mark.slow)])
def size(request, backend) -> tuple[int, int]:
    return FULL_SIZE if request.param == "full" else CI_SIZE[backend]


def append_ids(uri: str, options: dict | None, writer: int, count: int, start_at: float) -> list[tuple[int, int]]:
    """Append `count` single-row batches with unique ids; return (id, version) pairs."""
    t = lf.Table(uri, storage_options=options)
    time.sleep(max(0.0, start_at - time.time()))  # start together, to collide
    out = []
    for i in range(count):
        uid = writer * 1_000_000 + i
        out.append((uid, t.append(pa.table({"id": [uid], "writer": pa.array([writer], pa.int32())}))))
    return out


def retry_batches(uri: str, options: dict | None, count: int, start_at: float) -> list[int]:
    """Append batches 0..count-1 as (app_id "job", txn_version k); return the versions."""
    t = lf.Table(uri, storage_options=options)
    time.sleep(max(0.0, start_at - time.time()))
    return [t.append(pa.table({"id": [k], "writer": pa.array([0], pa.int32())}),
                     app_id="job", txn_version=k) for k in range(count)]


def check_log(uri: str, options: dict | None, versions: int) -> tuple[lf.Table, dict[int, list]]:
    """The log holds exactly versions 0..versions, every entry whole, as lakeflow and deltalake
    see it; returns a handle and the parsed commits."""
    from deltalake import DeltaTable

    t = lf.Table(uri, storage_options=options)
    assert t.version == versions
    listing = list_log(t.storage)
    assert sorted(listing.commits) == list(range(versions + 1))
    commits = {v: read_commit(t.storage, v) for v in listing.commits}  # each parses: none partial
    assert DeltaTable(uri, storage_options=options).version() == versions
    return t, commits


def test_concurrent_appends_each_land_exactly_once(table_uri, backend, request, size):
    writers, appends = size
    options = worker_options(backend, request)
    lf.Table.create(table_uri, SCHEMA, storage_options=options)
    start = time.monotonic()
    with processes(writers) as pool:
        start_at = time.time() + 1.0
        futures = [pool.submit(append_ids, table_uri, options, w, appends, start_at)
                   for w in range(writers)]
        results = [pair for f in futures for pair in f.result()]
    elapsed = time.monotonic() - start
    total = writers * appends
    t, commits = check_log(table_uri, options, total)
    # Each append returned its own version; together they are exactly 1..total.
    assert sorted(v for _, v in results) == list(range(1, total + 1))
    ids = sorted(t.to_arrow().column("id").to_pylist())
    expected = sorted(uid for uid, _ in results)
    assert ids == expected and len(set(ids)) == total
    assert deltalake_ids(table_uri, options) == expected
    # The version an append returned is the commit that added that append's row.
    for uid, v in results:
        adds = [a for a in commits[v] if isinstance(a, Add)]
        assert [(a.num_records(), a.parsed_stats()["minValues"]["id"]) for a in adds] == [(1, uid)]
    print(f"\n{writers}x{appends} appends on {backend}: {len(set(ids))}/{total} ids, "
          f"{total - len(set(ids))} lost, {len(ids) - len(set(ids))} duplicated, "
          f"versions 1..{t.version} contiguous, {elapsed:.1f}s")


def test_concurrent_retries_of_the_same_batches_commit_once(table_uri, backend, request, size):
    """Two processes replay the same (app_id, txn_version) batches at once."""
    appends = size[1]
    options = worker_options(backend, request)
    lf.Table.create(table_uri, SCHEMA, storage_options=options)
    with processes(2) as pool:
        start_at = time.time() + 1.0
        futures = [pool.submit(retry_batches, table_uri, options, appends, start_at) for _ in range(2)]
        first, second = (f.result() for f in futures)
    assert first == second == list(range(1, appends + 1))
    t, commits = check_log(table_uri, options, appends)
    txns = [a.version for v in range(1, appends + 1) for a in commits[v] if isinstance(a, Txn)]
    assert txns == list(range(appends))  # batch k committed once, as version k + 1
    assert sorted(t.to_arrow().column("id").to_pylist()) == list(range(appends))
    assert deltalake_ids(table_uri, options) == list(range(appends))
    print(f"\n2 processes x {appends} retried batches on {backend}: {len(txns)} commits, "
          f"each batch once, both processes got the same {appends} versions")
