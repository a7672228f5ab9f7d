"""Schemas, row builders, oracles and seams that several test files share.

pytest puts this folder on `sys.path` (the tests are not a package), so test files
and the worker processes they start import it as `helpers`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.log import LOG_DIR, commit_path
from lakeflow.storage import LocalStorage, Storage
from lakeflow.testing import Fault, FaultyFileSystem

# ---- schemas and rows ----------------------------------------------------------------------

ID_SCHEMA = pa.schema([("id", pa.int64())])
ID_PART_SCHEMA = pa.schema([("id", pa.int64()), ("part", pa.string())])


def id_rows(*ids: int) -> pa.Table:
    """Rows of ID_SCHEMA with these ids."""
    return pa.table({"id": pa.array(ids, pa.int64())})


def part_rows(ids: list[int], part: str = "a") -> pa.Table:
    """Rows of ID_PART_SCHEMA: these ids, all in partition `part`."""
    return pa.table({"id": pa.array(ids, pa.int64()), "part": [part] * len(ids)})


def ids(t: lf.Table, version: int | None = None) -> list[int]:
    """The sorted ids of a version of `t` (default: the latest)."""
    return sorted(t.snapshot(version=version).to_arrow().column("id").to_pylist())


def stored_files(uri: str) -> set[str]:
    """Every file under the table root, relative to it, as a fresh listing shows them."""
    fs, root = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    root = root.rstrip("/")
    return {p[len(root) + 1:] for p in fs.find(root)} if fs.exists(root) else set()


# ---- the deltalake oracle ------------------------------------------------------------------


def sql_scan(uri: str | os.PathLike[str], version: int | None = None, storage_options: dict[str, Any] | None = None,
             query: str = "SELECT * FROM t") -> pa.Table:
    """The table as deltalake's SQL scan reads it (the oracle; `to_pyarrow_table` misreads some)."""
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(os.fspath(uri), version=version, storage_options=storage_options)
    return pa.table(QueryBuilder().register("t", table).execute(query).read_all())


def deltalake_ids(uri: str, storage_options: dict[str, Any] | None = None) -> list[int]:
    """Every id as deltalake's SQL scan reads the table, sorted."""
    return sorted(sql_scan(uri, storage_options=storage_options, query="SELECT id FROM t")
                  .column("id").to_pylist())


# ---- editing a log the way a foreign or damaged writer would -------------------------------


def commit_actions(storage: Storage, version: int) -> list[dict[str, Any]]:
    """The actions of commit `version`, as JSON objects."""
    return [json.loads(line) for line in storage.read(commit_path(version)).decode().splitlines()]


def rewrite_commit(storage: Storage, version: int, change: Callable[[dict[str, Any]], object]) -> None:
    """Call `change` on every action of commit `version` and write the commit back in place."""
    actions = commit_actions(storage, version)
    for action in actions:
        change(action)
    storage.write(commit_path(version), "".join(json.dumps(a) + "\n" for a in actions).encode())


# ---- seams: recording storage calls, worker processes, kills -------------------------------


class Calls:
    """Records the storage calls a handle makes (op, path)."""

    def __init__(self, t: lf.Table, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        storage = t.storage
        for op in ("read", "exists", "list_dir", "write_if_absent"):
            monkeypatch.setattr(storage, op, self._wrap(op, getattr(storage, op)))

    def _wrap(self, op: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: str, *args: Any) -> Any:
            self.calls.append((op, path))
            return real(path, *args)
        return call

    def of(self, op: str) -> list[str]:
        return [p for o, p in self.calls if o == op]

    def commits_read(self) -> list[int]:
        """The versions of the commit files read, in order."""
        return [int(p[len(LOG_DIR) + 1:-len(".json")]) for p in self.of("read")
                if re.fullmatch(rf"{LOG_DIR}/\d{{20}}\.json", p)]


def faulty_table(uri: str, *faults: Fault) -> tuple[lf.Table, FaultyFileSystem]:
    """`uri` opened through a FaultyFileSystem over its store's fsspec filesystem, and that
    filesystem (its `calls` record every read). On local disk this handle goes through
    fsspec, which lakeflow refuses to commit on: use it for reads."""
    inner, _ = fsspec.core.url_to_fs(uri)
    fs = FaultyFileSystem(inner, faults)
    return lf.Table(uri, storage_options={"filesystem": fs}), fs


def forkserver() -> multiprocessing.context.BaseContext:
    """A forkserver context with lakeflow preloaded: workers share no state with the test."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["lakeflow", "s3fs", "pytest"])
    return ctx


def processes(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes from the `forkserver` context."""
    return ProcessPoolExecutor(workers, mp_context=forkserver())


def worker_options(backend: str, request: pytest.FixtureRequest) -> dict[str, Any] | None:
    """Explicit options: a worker must not depend on the environment the test set up."""
    return request.getfixturevalue("s3_options") if backend == "s3" else None


def run_threads(target: Callable[..., object], args: Iterable[tuple[Any, ...]]) -> None:
    """Run `target(*a)` in a thread for each `a` of `args`, all at once, and wait for them."""
    threads = [threading.Thread(target=target, args=a) for a in args]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def die_in_local_write(strikes: Callable[[str], bool]) -> None:
    """In this process, the first local write whose target path `strikes` picks stores half
    its bytes in the temporary file, then the process SIGKILLs itself.

    LocalStorage writes (or streams) a hidden temporary file and links it into place; only a kill in
    that write leaves a partial file. No public seam reaches it: `FaultyFileSystem`
    wraps fsspec stores, and a local table opened through one bypasses LocalStorage.
    """
    write_temp = LocalStorage._write_temp

    def half_then_die(self: LocalStorage, target: str, data: bytes) -> str:
        if strikes(target.replace(os.sep, "/")):
            write_temp(self, target, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return write_temp(self, target, data)

    write_stream = LocalStorage.write_stream

    def stream_half_then_die(self: LocalStorage, path: str, fill: Callable[[pa.NativeFile], None]) -> int:
        if not strikes(self._abs(path).replace(os.sep, "/")):
            return write_stream(self, path, fill)
        whole = pa.BufferOutputStream()
        fill(whole)
        data = whole.getvalue()

        def half(sink: pa.NativeFile) -> None:
            sink.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        return write_stream(self, path, half)

    LocalStorage._write_temp = half_then_die  # type: ignore[method-assign]
    LocalStorage.write_stream = stream_half_then_die  # type: ignore[method-assign]
