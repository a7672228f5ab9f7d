"""Maintenance under adversity: killed log cleanups, skewed clocks, symlinks, temp files.

- A `cleanup_log` killed at any point leaves a log in which every version is either
  readable or refused with `VersionNotFoundError`, never `CorruptLogError`.
- Nothing outside the table root is read, written or deleted through a symlink.
- Clocks: writers, deleters, vacuums and log cleanups whose clocks are skewed (real
  skew, with libfaketime in a subprocess) cannot move time travel or delete early.
- Temp files of killed writers and full disks are removed by vacuum, live ones never.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf
from lakeflow.log import list_log
from lakeflow.storage import LocalStorage
from lakeflow.testing import Fault, FaultyFileSystem, commit_after

from helpers import ID_SCHEMA as SCHEMA
from helpers import die_in_local_write, forkserver, worker_options

NOW = dt.timedelta(0)


def _append(t: lf.Table, n: int) -> None:
    for _ in range(n):
        t.append(pa.table({"id": [t.version + 1]}))  # version v holds ids 1..v
    time.sleep(0.02)  # fast commits get timestamps a few ms ahead of the clock


def _deletes_planned(t: lf.Table) -> int:
    """How many files a full `cleanup_log(retention=0)` of `t` deletes."""
    listing = list_log(t.storage)
    anchor = max(listing.checkpoints)
    return (sum(1 for v in listing.commits if v < anchor)
            + sum(len(names) for v, names in listing.checkpoints.items() if v < anchor))


def _check_every_version(uri: str, options: dict | None) -> None:
    """Every version reads its rows or is VersionNotFoundError; the latest reads."""
    t = lf.Table(uri, storage_options=options)
    assert sorted(t.to_arrow().column("id").to_pylist()) == list(range(1, t.version + 1))
    for v in range(t.version + 1):
        try:
            ids = lf.Table(uri, storage_options=options).snapshot(version=v).to_arrow()
        except lf.VersionNotFoundError as e:
            assert "cleaned up" in str(e) or "no longer" in str(e), e
            continue
        assert sorted(ids.column("id").to_pylist()) == list(range(1, v + 1)), v


def _cleanup_then_die(uri: str, options: dict | None, nth: int) -> None:
    """Run cleanup_log(retention=0) and SIGKILL this process at its `nth` delete."""
    t = lf.Table(uri, storage_options=options)
    seen = 0

    def strikes() -> None:
        nonlocal seen
        seen += 1
        if seen == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    inner = t.storage.inner  # type: ignore[attr-defined]
    if isinstance(inner, LocalStorage):
        unlink = os.unlink

        def dying_unlink(path, *args, **kwargs):
            strikes()
            return unlink(path, *args, **kwargs)

        os.unlink = dying_unlink
    else:
        rm_file = inner.fs.rm_file

        def dying_rm(path):
            strikes()
            return rm_file(path)

        inner.fs.rm_file = dying_rm
    t.cleanup_log(NOW)
    os.kill(os.getpid(), signal.SIGKILL)  # nth was past the last delete


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_killed_cleanup_log_leaves_every_version_readable_or_not_found(table_uri, backend, request):
    options = worker_options(backend, request)
    t = lf.Table.create(table_uri, SCHEMA, properties={"delta.checkpointInterval": "3"},
                        storage_options=options)
    rng = random.Random(9)
    ctx = forkserver()
    for _ in range(6 if backend == "local" else 3):
        _append(t, 7)
        nth = rng.randint(1, _deletes_planned(t))
        proc = ctx.Process(target=_cleanup_then_die, args=(table_uri, options, nth))
        proc.start()
        proc.join(120)
        assert proc.exitcode == -signal.SIGKILL, proc.exitcode
        _check_every_version(table_uri, options)


@pytest.mark.parametrize("backend", ["memory", "s3"], indirect=True)
def test_cleanup_log_stopped_at_any_delete_leaves_a_readable_log(table_uri, backend):
    """In-process: the nth delete and every later one fail, for every n."""
    nth = 0
    while True:
        nth += 1
        uri = f"{table_uri}-{nth}"
        inner, _ = fsspec.core.url_to_fs(uri)
        fs = FaultyFileSystem(inner)
        options = {"filesystem": fs}
        t = lf.Table.create(uri, SCHEMA, properties={"delta.checkpointInterval": "2"},
                            storage_options=options)
        _append(t, 6)
        if nth > _deletes_planned(t):
            break
        fs.faults[:] = [Fault("delete", nth=nth, times=None)]
        with pytest.raises(lf.StorageError, match="injected fault"):
            t.cleanup_log(NOW)
        fs.faults[:] = []
        _check_every_version(uri, options)
    assert nth > 5


def test_time_travel_before_the_oldest_checkpoint_is_version_not_found(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, properties={"delta.checkpointInterval": "4"})
    _append(t, 9)
    assert t.cleanup_log(NOW) == list(range(8))
    fresh = lf.Table(table_uri)
    for v in range(8):
        with pytest.raises(lf.VersionNotFoundError, match=r"no longer reconstructable.*8\.\.9"):
            fresh.snapshot(version=v)
    assert fresh.snapshot(version=8).num_rows == 8


# ---- nothing outside the table root (local symlinks) -------------------------------------


def _outside(tmp_path) -> tuple[str, set[str]]:
    """A directory outside the table holding a Parquet file and another file."""
    import pyarrow.parquet as pq

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pq.write_table(pa.table({"id": [666]}), elsewhere / "secret.parquet")
    (elsewhere / "precious.txt").write_text("keep me")
    return str(elsewhere), {"secret.parquet", "precious.txt"}


def _add_commit(t: lf.Table, path: str, size: int) -> None:
    """Commit a hand-made add of `path`, as a hostile table would hold."""
    import json

    from lakeflow.log import commit_path

    add = {"add": {"path": path, "partitionValues": {}, "size": size,
                   "modificationTime": 0, "dataChange": True}}
    t.storage.write_if_absent(commit_path(t.version + 1), json.dumps(add).encode())


def test_vacuum_never_deletes_through_a_symlinked_directory(local_uri, tmp_path):
    t = lf.Table.create(local_uri, SCHEMA)
    _append(t, 2)
    elsewhere, names = _outside(tmp_path)
    os.symlink(elsewhere, os.path.join(local_uri, "evil"))
    os.symlink(os.path.join(elsewhere, "precious.txt"), os.path.join(local_uri, "part-link.parquet"))
    time.sleep(0.02)
    result = t.vacuum(NOW, enforce_retention=False)
    assert set(os.listdir(elsewhere)) == names
    assert not any(f.startswith("evil") or f == "part-link.parquet" for f in result.files)
    assert sorted(lf.Table(local_uri).to_arrow().column("id").to_pylist()) == [1, 2]


@pytest.mark.parametrize("how", ["symlinked directory", "symlinked file"])
def test_reading_a_file_that_resolves_outside_the_root_is_refused(local_uri, tmp_path, how):
    t = lf.Table.create(local_uri, SCHEMA)
    _append(t, 1)
    elsewhere, _ = _outside(tmp_path)
    size = os.path.getsize(os.path.join(elsewhere, "secret.parquet"))
    if how == "symlinked directory":
        os.symlink(elsewhere, os.path.join(local_uri, "evil"))
        path = "evil/secret.parquet"
    else:
        path = "part-00000-link.parquet"
        os.symlink(os.path.join(elsewhere, "secret.parquet"), os.path.join(local_uri, path))
    _add_commit(t, path, size)
    fresh = lf.Table(local_uri)
    for read in (fresh.to_arrow, lambda: fresh.snapshot().to_polars().collect(), lambda: fresh.diff(1)):
        with pytest.raises(lf.StorageError, match=f"{path}.*outside the table root"):
            read()


def test_writing_through_a_symlinked_partition_directory_is_refused(local_uri, tmp_path):
    t = lf.Table.create(local_uri, pa.schema([("id", pa.int64()), ("part", pa.string())]),
                        partition_by=["part"])
    elsewhere, names = _outside(tmp_path)
    os.symlink(elsewhere, os.path.join(local_uri, "part=a"))
    with pytest.raises(lf.StorageError, match="outside the table root"):
        t.append(pa.table({"id": [1], "part": ["a"]}))
    assert set(os.listdir(elsewhere)) == names and t.version == 0


# ---- time is the store's, not one machine's ----------------------------------------------


@pytest.fixture
def clock_uri(table_uri: str, backend: str, request, monkeypatch) -> Iterator[str]:
    """A table location for the skewed-clock tests; on S3 the moto server.

    A signing S3 server (SeaweedFS here, AWS itself) refuses a request whose signature
    time is more than 15 minutes off, so a writer a day or a year off could not even
    commit there (`test_a_signing_s3_server_refuses_a_skewed_writer`). moto checks no
    signature time, which lets these tests exercise the S3 store's own file times.
    """
    if backend != "s3":
        yield table_uri
        return
    import s3fs

    # s3fs reuses a client made for the same arguments, whatever the environment says now.
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_endpoint"))
    yield table_uri
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
def test_a_signing_s3_server_refuses_a_skewed_writer(table_uri, backend, faketime_lib):
    t = lf.Table.create(table_uri, SCHEMA)
    _append(t, 1)
    env = dict(os.environ, LD_PRELOAD=faketime_lib, FAKETIME="+1d", DONT_FAKE_MONOTONIC="1")
    code = ("import lakeflow as lf, pyarrow as pa, sys\n"
            "try:\n    lf.Table(sys.argv[1]).append(pa.table({'id': [9]}))\n"
            "except lf.StorageError as e:\n    print(type(e).__name__); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, table_uri], env=env, timeout=300,
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "StorageError\n"), done.stderr
    assert lf.Table(table_uri).version == 1


def _recorded(t: lf.Table, version: int) -> int:
    """The commitInfo timestamp (ms) commit `version` holds."""
    from lakeflow.actions import CommitInfo
    from lakeflow.log import read_commit

    return next(a.timestamp for a in read_commit(t.storage, version) if isinstance(a, CommitInfo))


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_a_writer_a_year_ahead_does_not_move_time_travel(clock_uri, backend, run_skewed):
    t = lf.Table.create(clock_uri, SCHEMA)
    _append(t, 2)
    run_skewed(365, "import lakeflow as lf, pyarrow as pa, sys\n"
                    "lf.Table(sys.argv[1]).append(pa.table({'id': [3]}))", clock_uri)
    with pytest.warns(UserWarning, match="commit 3 .* ahead of the store"):
        t.refresh()
        _append(t, 4)  # a writer with a good clock must not inherit the skew
    now = dt.datetime.now(dt.timezone.utc)
    assert t.version == 7
    for v in range(4, 8):
        assert abs(_recorded(t, v) / 1000 - time.time()) < 60, v
    fresh = lf.Table(clock_uri)
    with pytest.warns(UserWarning, match="commit 3 .* ahead of the store"):
        assert fresh.version_at(now) == 7
        assert fresh.snapshot(as_of=now).version == 7
        stamps = fresh.commit_timestamps()
    assert all(abs(stamps[v] / 1000 - time.time()) < 600 for v in stamps)
    assert sorted(stamps) == list(range(8)) and list(stamps.values()) == sorted(stamps.values())


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_a_deleter_a_year_behind_does_not_make_its_tombstones_old(clock_uri, backend, run_skewed):
    t = lf.Table.create(clock_uri, SCHEMA)
    _append(t, 3)
    run_skewed(-365, "import lakeflow as lf, pyarrow.compute as pc, sys\n"
                     "lf.Table(sys.argv[1]).delete(pc.field('id') == 2)", clock_uri)
    t.refresh()
    assert t.vacuum().files == ()  # the default 7-day retention
    assert t.vacuum(dt.timedelta(hours=1), enforce_retention=False).files == ()
    assert sorted(lf.Table(clock_uri).snapshot(version=3).to_arrow().column("id").to_pylist()) == [1, 2, 3]
    time.sleep(0.05)
    assert len(t.vacuum(NOW, enforce_retention=False).files) == 1  # still deletable on purpose


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_a_vacuum_8_days_ahead_keeps_the_files_of_an_append_in_flight(clock_uri, backend, run_skewed):
    t = lf.Table.create(clock_uri, SCHEMA)
    _append(t, 2)
    vacuumed: list[str] = []
    commit_after(t, lambda: vacuumed.append(run_skewed(8, "import lakeflow as lf, sys\n"
                                                          "print(lf.Table(sys.argv[1]).vacuum().files)",
                                                       clock_uri)))
    t.append(pa.table({"id": [3]}))
    assert vacuumed == ["()\n"]
    assert sorted(lf.Table(clock_uri).to_arrow().column("id").to_pylist()) == [1, 2, 3]


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_a_log_cleanup_31_days_ahead_keeps_recent_commits(clock_uri, backend, run_skewed):
    t = lf.Table.create(clock_uri, SCHEMA, properties={"delta.checkpointInterval": "2"})
    _append(t, 5)
    out = run_skewed(31, "import lakeflow as lf, sys\nprint(lf.Table(sys.argv[1]).cleanup_log())",
                     clock_uri)
    assert out == "[]\n"
    assert lf.Table(clock_uri).snapshot(version=0).version == 0


# ---- temp files of killed writers and full disks ------------------------------------------


def _temps(root: str) -> set[str]:
    found = set()
    for directory, _, names in os.walk(root):
        found |= {os.path.relpath(os.path.join(directory, n), root) for n in names if n.endswith(".tmp")}
    return found


def _die_writing(uri: str, pattern: str) -> None:
    """Append, and SIGKILL this process half-way through the first write to `pattern`."""
    import re

    die_in_local_write(lambda path: re.search(pattern, path) is not None)
    t = lf.Table(uri)
    while True:
        t.append(pa.table({"id": [t.version + 1]}))


def _age(root: str, names: set[str], seconds: float) -> None:
    for name in names:
        then = time.time() - seconds
        os.utime(os.path.join(root, name), (then, then))


def test_vacuum_removes_the_temp_files_of_killed_writers(local_uri):
    t = lf.Table.create(local_uri, SCHEMA, properties={"delta.checkpointInterval": "2"})
    _append(t, 1)
    ctx = forkserver()
    for pattern in [r"_delta_log/\d{20}\.json$", r"\.checkpoint\.parquet$", "_last_checkpoint$",
                    r"part-[^/]*\.parquet$"]:
        proc = ctx.Process(target=_die_writing, args=(local_uri, pattern))
        proc.start()
        proc.join(120)
        assert proc.exitcode == -signal.SIGKILL
    left = _temps(local_uri)
    assert len({n for n in left if n.startswith("_delta_log")}) == 3, left
    young = t.vacuum(NOW, enforce_retention=False).files  # orphaned data files go at once,
    assert not any(f.endswith(".tmp") for f in young) and _temps(local_uri) == left  # young temps stay
    _age(local_uri, left, 2 * 3600)
    assert t.vacuum(dry_run=True).files == ()  # the default 7 days
    result = t.vacuum(dt.timedelta(hours=1), enforce_retention=False)
    assert set(result.files) == {n.replace(os.sep, "/") for n in left} and not _temps(local_uri)
    _check_every_version(local_uri, None)


@pytest.mark.parametrize("nth", [1, 2], ids=["data file", "commit"])
def test_a_full_disk_leaves_no_temp_file(local_uri, monkeypatch, nth):
    import errno

    t = lf.Table.create(local_uri, SCHEMA)
    _append(t, 1)
    fsync = os.fsync
    calls = 0

    def full(fd):
        nonlocal calls
        calls += 1
        if calls == nth:
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(lf.StorageError, match="No space left"):
        t.append(pa.table({"id": [2]}))
    assert calls == nth and not _temps(local_uri)
    assert lf.Table(local_uri).version == 1


def test_vacuum_leaves_the_temp_file_of_a_commit_in_flight(local_uri, monkeypatch):
    import threading

    import pyarrow.compute as pc

    t = lf.Table.create(local_uri, SCHEMA)
    _append(t, 2)
    linking, go = threading.Event(), threading.Event()
    link = os.link

    def slow_link(src, dst, *args, **kwargs):
        linking.set()
        assert go.wait(60)
        return link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", slow_link)
    deleted: list[int] = []
    writer = threading.Thread(target=lambda: deleted.append(t.delete(pc.field("id") == 1)))
    writer.start()
    assert linking.wait(60)
    in_flight = _temps(local_uri)
    assert len(in_flight) == 1
    result = lf.Table(local_uri).vacuum(NOW, enforce_retention=False)
    assert _temps(local_uri) == in_flight and not result.files
    go.set()
    writer.join(60)
    assert deleted == [1]
    assert lf.Table(local_uri).to_arrow().column("id").to_pylist() == [2]


@pytest.mark.parametrize("backend", ["memory", "s3"], indirect=True)
def test_vacuum_racing_a_log_cleanup_ages_tombstones_by_their_stamps(table_uri, backend):
    """A commit listed by vacuum but cleaned up before vacuum reads it is no error.

    Found by the mixed run (tests/test_mixed.py, 6 x 300 on S3): vacuum raised a raw
    FileNotFoundError for a commit that a concurrent cleanup_log had just deleted.
    """
    inner, _ = fsspec.core.url_to_fs(table_uri)
    fs = FaultyFileSystem(inner)
    t = lf.Table.create(table_uri, SCHEMA, storage_options={"filesystem": fs})
    _append(t, 2)
    t.delete(pc.field("id") == 1)  # version 3 holds the tombstone
    fs.faults[:] = [Fault("read", path="00000000000000000003.json",
                          error=FileNotFoundError("cleaned up meanwhile"))]
    # Vacuum reads the commits stamped within the retention, to age their tombstones.
    result = t.vacuum(dt.timedelta(hours=1), enforce_retention=False)
    assert fs.faults[0].hits == 1  # vacuum did meet the vanished commit
    assert result.files == ()  # its tombstone, aged by its deletionTimestamp, is recent
    assert sorted(lf.Table(table_uri).to_arrow().column("id").to_pylist()) == [2]
