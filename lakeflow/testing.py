"""Helpers for testing pipelines built on lakeflow.

Table comparison, data strategies, and a filesystem that injects faults.

`hypothesis` is only needed for the strategies; import them lazily so the
comparison helpers work without it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from fsspec.spec import AbstractFileSystem

from lakeflow.write import to_arrow_table


def _canonical_rows(table: pa.Table, columns: Sequence[str]) -> Counter[str]:
    return Counter(repr(tuple(row[c] for c in columns)) for row in table.to_pylist())


def assert_table_equal(actual: Any, expected: Any, *, check_order: bool = False,
                       check_types: bool = True) -> None:
    """Assert two tables hold the same rows, as multisets unless `check_order`.

    Accepts anything `Table.append` accepts (pyarrow, polars, pandas, ...). Column
    order is ignored; column names must match. With `check_types`, Arrow types
    must be equal after mapping string/large_string/string_view to one type.

    Raises:
        AssertionError: describing the first difference.
    """
    left, right = to_arrow_table(actual), to_arrow_table(expected)
    if sorted(left.column_names) != sorted(right.column_names):
        raise AssertionError(f"columns differ: {sorted(left.column_names)} != {sorted(right.column_names)}")
    columns = sorted(left.column_names)
    if check_types:
        for c in columns:
            lt, rt = _norm_type(left.schema.field(c).type), _norm_type(right.schema.field(c).type)
            if lt != rt:
                raise AssertionError(f"column {c!r}: type {left.schema.field(c).type} != {right.schema.field(c).type}")
    if left.num_rows != right.num_rows:
        raise AssertionError(f"row counts differ: {left.num_rows} != {right.num_rows}")
    if check_order:
        lrows, rrows = left.select(columns).to_pylist(), right.select(columns).to_pylist()
        for i, (a, b) in enumerate(zip(lrows, rrows, strict=False)):
            if a != b:
                raise AssertionError(f"row {i} differs: {a} != {b}")
        return
    lc, rc = _canonical_rows(left, columns), _canonical_rows(right, columns)
    if lc != rc:
        only_left = list((lc - rc).elements())[:3]
        only_right = list((rc - lc).elements())[:3]
        raise AssertionError(f"rows differ; only in actual: {only_left}; only in expected: {only_right}")


def _norm_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t):
        return pa.list_(_norm_type(t.value_type))
    return t


def arrow_tables(schema: pa.Schema, max_rows: int = 20) -> Any:
    """A hypothesis strategy of `pyarrow.Table`s with `schema` (primitive columns)."""
    import datetime as dt

    from hypothesis import strategies as st

    def values(field: pa.Field) -> Any:
        t = field.type
        if pa.types.is_integer(t):
            bits = t.bit_width - 1
            base: Any = st.integers(-(2**bits), 2**bits - 1)
        elif pa.types.is_floating(t):
            base = st.floats(allow_nan=False, allow_infinity=False, width=t.bit_width)
        elif pa.types.is_string(t):
            base = st.text(max_size=12)
        elif pa.types.is_boolean(t):
            base = st.booleans()
        elif pa.types.is_date(t):
            base = st.dates(dt.date(1970, 1, 1), dt.date(2100, 1, 1))
        elif pa.types.is_timestamp(t):
            naive = st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1))
            base = naive.map(lambda d: d.replace(tzinfo=dt.timezone.utc)) if t.tz else naive
        else:
            raise ValueError(f"no strategy for {t}")
        return st.none() | base if field.nullable else base

    row = st.fixed_dictionaries({f.name: values(f) for f in schema})
    return st.lists(row, max_size=max_rows).map(lambda rows: pa.Table.from_pylist(rows, schema=schema))


FaultOp = Literal["read", "write", "list", "delete", "info", "any"]
FaultMode = Literal["raise", "after", "truncate", "retried"]


@dataclass
class Fault:
    """One failure for a `FaultyFileSystem` to inject.

    Attributes:
        op: the kind of call it hits: "read" (cat_file, open for reading), "write"
            (pipe_file, open for writing), "list" (ls), "delete" (rm_file), "info"
            (info, exists) or "any".
        nth: the first matching call (1-based) that fails.
        times: how many matching calls fail from the `nth` on (None: every one).
        path: only calls whose path contains this text count.
        mode: "raise" fails before the store is touched. "after" performs the call
            and then raises, as when the reply is lost. "truncate" makes a write
            store only the first half of the bytes and then raise (a torn upload;
            a conditional put stays all-or-nothing, as on S3, and stores nothing),
            and makes a read return half the bytes. "retried" performs the call
            and then performs it again, as an SDK does after a lost reply: a
            conditional put then fails with FileExistsError although it succeeded.
        error: the exception to raise (default: an OSError naming the fault).
    """

    op: FaultOp
    nth: int = 1
    times: int | None = 1
    path: str = ""
    mode: FaultMode = "raise"
    error: BaseException | None = None
    hits: int = 0

    def exception(self, path: str) -> BaseException:
        """The exception this fault raises for a call on `path`."""
        return self.error or OSError(f"injected fault: {self.mode} on {self.op} of {path}")


class FaultyFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """An fsspec filesystem wrapping another one and failing the calls `faults` select.

    It keeps the wrapped store's protocol, so lakeflow treats it as that store
    (e.g. conditional puts on S3). Pass it with
    `storage_options={"filesystem": FaultyFileSystem(fs, faults)}`. Faults can be
    added or cleared at any time through `faults`; `calls` records every call as
    (op, path).

    Args:
        fs: the filesystem to wrap.
        faults: the faults to inject.
    """

    cachable = False

    def __init__(self, fs: AbstractFileSystem, faults: Iterable[Fault] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fs = fs
        self.protocol = fs.protocol
        self.faults = list(faults)
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _fault(self, op: FaultOp, path: str) -> Fault | None:
        with self._lock:
            self.calls.append((op, path))
            hit = None
            for fault in self.faults:
                if fault.op not in (op, "any") or fault.path not in path:
                    continue
                fault.hits += 1
                last = None if fault.times is None else fault.nth + fault.times - 1
                if hit is None and fault.hits >= fault.nth and (last is None or fault.hits <= last):
                    hit = fault
            return hit

    def _run(self, op: FaultOp, path: str, call: Callable[[], Any]) -> Any:
        fault = self._fault(op, path)
        if fault is None:
            return call()
        if fault.mode == "raise" or (fault.mode == "truncate" and op != "read"):
            raise fault.exception(path)
        result = call()
        if fault.mode == "truncate" and isinstance(result, bytes):
            return result[: len(result) // 2]
        if fault.mode == "retried":
            return call()
        raise fault.exception(path)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> Any:
        """Read a file (op "read")."""
        return self._run("read", path, lambda: self.fs.cat_file(path, start=start, end=end, **kwargs))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write a file (op "write")."""
        fault = self._fault("write", path)
        if fault is None:
            self.fs.pipe_file(path, value, mode=mode, **kwargs)
            return
        if fault.mode == "truncate" and mode != "create":
            self.fs.pipe_file(path, value[: len(value) // 2], mode=mode, **kwargs)
        if fault.mode in ("raise", "truncate"):
            raise fault.exception(path)
        self.fs.pipe_file(path, value, mode=mode, **kwargs)
        if fault.mode == "retried":
            self.fs.pipe_file(path, value, mode=mode, **kwargs)
            return
        raise fault.exception(path)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        op: FaultOp = "read" if "r" in mode else "write"
        return self._run(op, path, lambda: self.fs.open(path, mode=mode, **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        """List a directory (op "list")."""
        return self._run("list", path, lambda: self.fs.ls(path, detail=detail, **kwargs))

    def info(self, path: str, **kwargs: Any) -> Any:
        """Describe a file (op "info")."""
        return self._run("info", path, lambda: self.fs.info(path, **kwargs))

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether a file exists (op "info")."""
        return bool(self._run("info", path, lambda: self.fs.exists(path, **kwargs)))

    def rm_file(self, path: str) -> None:
        """Delete a file (op "delete")."""
        self._run("delete", path, lambda: self.fs.rm_file(path))

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget cached listings of the wrapped filesystem."""
        self.fs.invalidate_cache(path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Create a directory in the wrapped filesystem."""
        self.fs.mkdir(path, create_parents=create_parents, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Create a directory and its parents in the wrapped filesystem."""
        self.fs.makedirs(path, exist_ok=exist_ok)


def copy_table(source: Path, uri: str) -> None:
    """Copy a local table directory, byte for byte, to `uri` (any fsspec backend)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    for path in source.rglob("*"):
        if path.is_file():
            fs.makedirs(f"{root}/{path.parent.relative_to(source).as_posix()}", exist_ok=True)
            fs.pipe_file(f"{root}/{path.relative_to(source).as_posix()}", path.read_bytes())


def commit_after(loser: Any, winner_op: Callable[[], Any]) -> None:
    """Run `winner_op` once `loser` (a Table) has planned its next commit, just before it commits.

    The way to make a concurrent writer win a race deterministically in a test:
    the next transaction committed on `loser`'s log runs `winner_op` first.
    """
    from lakeflow.transaction import Transaction

    log = loser.transaction("PROBE").snapshot.log
    original = Transaction.commit

    def commit(tx: Transaction, *args: Any, **kwargs: Any) -> Any:
        if tx.snapshot.log is log:
            Transaction.commit = original  # type: ignore[method-assign]
            winner_op()
        return original(tx, *args, **kwargs)

    Transaction.commit = commit  # type: ignore[method-assign,assignment]


__all__ = ["Fault", "FaultyFileSystem", "arrow_tables", "assert_table_equal", "commit_after", "copy_table"]
