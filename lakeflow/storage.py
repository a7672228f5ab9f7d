"""A tiny storage protocol (read, write-if-absent, list, delete), one class per store.

Storage knows nothing of Delta: it moves bytes under a table root, addressed by
'/'-separated paths relative to that root. The one hard guarantee is
`write_if_absent`: exactly one writer creates a given path, and no reader sees a
partial file. Each store gets it from its own atomic primitive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs

from lakeflow.errors import InvalidArgumentError, LakeflowError, StorageError


@dataclass(frozen=True)
class FileInfo:
    """One listed file: its name inside the listed directory, size and mtime (ms)."""

    name: str
    size: int
    mtime_ms: int | None


class Storage(Protocol):
    """What lakeflow needs from a store. Paths are relative to the table root."""

    uri: str

    def read(self, path: str) -> bytes:
        """Return the whole file; raise FileNotFoundError when absent."""
        ...

    def write_if_absent(self, path: str, data: bytes) -> None:
        """Create the file atomically; raise FileExistsError when it exists."""
        ...

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file (data files, `_last_checkpoint`)."""
        ...

    def write_stream(self, path: str, fill: Callable[[pa.NativeFile], None]) -> int:
        """Create or replace the file with what `fill` writes to a sink; return its size.

        Like `write`, no reader sees a partial file. For big data files: a local
        store streams them to disk without holding them in memory.
        """
        ...

    def list_dir(self, path: str) -> list[FileInfo]:
        """Files directly under `path`, sorted by name; empty when absent."""
        ...

    def delete(self, path: str) -> None:
        """Delete the file; a missing file is not an error."""
        ...

    def exists(self, path: str) -> bool:
        """Whether the file exists."""
        ...

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the root path in it, for Parquet scans."""
        ...


def _join(root: str, path: str) -> str:
    return f"{root.rstrip('/')}/{path}" if path else root


class LocalStorage:
    """Local disk: temp file + `os.link` makes creation atomic and exclusive.

    Nothing outside the root is read, written, listed or deleted: each path is
    resolved (symlinks followed) and refused with `StorageError` when it leaves the
    resolved root. Listings for pyarrow (vacuum's) skip symlinks altogether.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.uri = self.root

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def read(self, path: str) -> bytes:
        try:
            with open(confine(self.root, self._abs(path), "read"), "rb") as f:
                return f.read()
        except (NotADirectoryError, IsADirectoryError) as e:
            # A parent is a file, or the path is a directory: no file exists there.
            raise FileNotFoundError(e.errno, e.strerror, e.filename) from e

    def _temp_path(self, target: str) -> str:
        """A new temp file's name beside `target` (its directory made, and confined)."""
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        except FileExistsError as e:
            # A file sits where a directory is needed: not "another writer won".
            raise NotADirectoryError(e.errno, e.strerror, e.filename) from e
        confine(self.root, os.path.dirname(target), "write into")
        return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")

    def _write_temp(self, target: str, data: bytes) -> str:
        tmp = self._temp_path(target)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            # A full disk or a failed write must not leave a partial temp file behind.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def write_if_absent(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        tmp = self._write_temp(target, data)
        try:
            # link() fails with EEXIST if another writer won: no check-then-write race.
            os.link(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):  # a vacuum may have taken it
                os.unlink(tmp)

    def write(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        tmp = self._write_temp(target, data)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def write_stream(self, path: str, fill: Callable[[pa.NativeFile], None]) -> int:
        target = self._abs(path)
        tmp = self._temp_path(target)
        try:
            # A native file: pyarrow encodes and writes without the GIL or a buffer of the file.
            with pa.OSFile(tmp, "wb") as sink:
                fill(sink)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return size

    def list_dir(self, path: str) -> list[FileInfo]:
        try:
            entries = list(os.scandir(confine(self.root, self._abs(path), "list")))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except FileNotFoundError:
                continue  # removed since the listing, e.g. another writer's temp file
            out.append(FileInfo(e.name, st.st_size, int(st.st_mtime * 1000)))
        return sorted(out, key=lambda f: f.name)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(confine(self.root, self._abs(path), "delete"))

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        with _ARROW_FS_LOCK:
            fs = _LOCAL_FS.get(self.root)
            if fs is None:  # kept for the process, like the fsspec ones (see _WholeFileHandler)
                fs = _LOCAL_FS[self.root] = pafs.PyFileSystem(_ConfinedLocalHandler(self.root))
        return fs, self.root


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def confine(root: str, target: str, op: str) -> str:
    """Return `target` (under `root`) if its resolved path stays inside the resolved root.

    Raises:
        StorageError: a symlink on the way leads outside the root.
    """
    real = os.path.realpath(target)
    if not _inside(real, os.path.realpath(root)):
        rel = os.path.relpath(target, root).replace(os.sep, "/")
        raise StorageError(
            f"cannot {op} {rel!r} in {root}: it resolves to {real}, outside the table root; "
            "lakeflow never follows a symlink out of the table root (copy the file into the "
            "table instead)"
        )
    return target


class _ConfinedLocalHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """pyarrow's local filesystem, read-only and confined to a table root.

    Files open natively (no Python I/O) once `confine` accepted their path. Listings
    never follow or report symlinks, so vacuum cannot reach through one.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ConfinedLocalHandler) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def get_type_name(self) -> str:
        return "lakeflow-local"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self.local.get_file_info(confine(self.root, p, "stat")) for p in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = confine(self.root, selector.base_dir.rstrip("/"), "list")
        if not os.path.isdir(base):
            if selector.allow_not_found:
                return []
            raise FileNotFoundError(base)
        out: list[pafs.FileInfo] = []
        pending = [base]
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since it was listed
            for e in entries:
                path = f"{directory}/{e.name}"
                try:
                    if e.is_symlink():
                        continue  # never followed, never listed
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if e.is_dir(follow_symlinks=False):
                    out.append(pafs.FileInfo(path, pafs.FileType.Directory, mtime_ns=st.st_mtime_ns))
                    if selector.recursive:
                        pending.append(path)
                else:
                    out.append(pafs.FileInfo(path, pafs.FileType.File, size=st.st_size,
                                             mtime_ns=st.st_mtime_ns))
        return out

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.local.open_input_file(confine(self.root, path, "read"))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.local.open_input_stream(confine(self.root, path, "read"))

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise StorageError(f"lakeflow's pyarrow view of {self.root} is read-only; "
                           "writes go through the table's storage")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


_LOCAL_FS: dict[str, pafs.FileSystem] = {}


class FsspecStorage:
    """Any fsspec filesystem. Creation is atomic only where the store says so.

    Args:
        uri: the table URI, for messages.
        fs: the fsspec filesystem.
        root: the table root inside `fs`.
        conditional_put: whether an S3 store honours `If-None-Match: *`.
        allow_unsafe_writes: write even where put-if-absent is not atomic.
    """

    _memory_lock = threading.Lock()

    def __init__(self, uri: str, fs: Any, root: str, *, conditional_put: bool = True,
                 allow_unsafe_writes: bool = False) -> None:
        self.uri = uri
        self.fs = fs
        self.root = root.rstrip("/")
        self.protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.conditional_put = conditional_put and self.protocol in ("s3", "s3a")
        self.atomic_create = self.protocol == "memory" or self.conditional_put
        self.allow_unsafe_writes = allow_unsafe_writes

    def _abs(self, path: str) -> str:
        return _join(self.root, path)

    def _check_writable(self) -> None:
        if not (self.atomic_create or self.allow_unsafe_writes):
            raise StorageError(
                f"the {self.protocol!r} store has no atomic put-if-absent (conditional put), so "
                "two writers could both commit the same version and one commit would be lost; "
                "lakeflow refuses to write to it. If only one process ever writes this table, "
                "pass storage_options={'allow_unsafe_writes': True} to accept the risk"
            )

    def read(self, path: str) -> bytes:
        target = self._abs(path)
        self.fs.invalidate_cache(target)  # s3fs sizes a read from a cached listing
        data: bytes = self.fs.cat_file(target)
        return data

    def write_if_absent(self, path: str, data: bytes) -> None:
        self._check_writable()
        target = self._abs(path)
        if self.conditional_put:
            self._put_s3(target, data, create=True)
            return
        # memory: atomic under the lock, since that store lives in this process only.
        # Other stores: the user accepted a check-then-write race (allow_unsafe_writes).
        with self._memory_lock:
            if self.exists(path):
                raise FileExistsError(target)
            self._pipe(target, data)

    def write(self, path: str, data: bytes) -> None:
        self._check_writable()
        self._pipe(self._abs(path), data)

    def write_stream(self, path: str, fill: Callable[[pa.NativeFile], None]) -> int:
        # One upload of the whole file, as `write`: the sink is Arrow memory.
        self._check_writable()  # before the file is encoded
        sink = pa.BufferOutputStream()
        fill(sink)
        data = sink.getvalue().to_pybytes()
        self.write(path, data)
        return len(data)

    def _pipe(self, target: str, data: bytes) -> None:
        if self.protocol in ("s3", "s3a"):
            self._put_s3(target, data, create=False)
            return
        if not self.atomic_create:  # generic stores (e.g. fsspec's local one) want parents
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self.fs.pipe_file(target, data)

    def _put_s3(self, target: str, data: bytes, *, create: bool) -> None:
        """PUT one object; with `create`, only if absent (`If-None-Match: *`).

        s3fs reports a lost race as FileExistsError only when the 412 names its
        condition (moto does; SeaweedFS and others do not: EINVAL), and a 409 (another
        conditional write of the key in flight, on AWS) as EBUSY. So the S3 error
        code decides: 412 is a lost race; 409 means nothing was written and the
        winner is not known yet, so the PUT is retried (AWS's advice) until it
        wins or meets the winner's object (412).
        """
        for delay in (*_S3_CONFLICT_RETRY_DELAYS, None):
            try:
                self.fs.pipe_file(target, data, mode="create" if create else "overwrite")
                return
            except OSError as e:
                code, status = _s3_error(e)
                if create and (isinstance(e, FileExistsError) or code == "PreconditionFailed" or status == 412):
                    raise FileExistsError(errno.EEXIST, "another writer created it first", target) from e
                if not (code in _S3_CONFLICT_CODES or status == 409):
                    raise
                if delay is None:
                    raise OSError(errno.EBUSY, f"another write of this key was still in flight after "
                                  f"{len(_S3_CONFLICT_RETRY_DELAYS) + 1} attempts ({code or status}); "
                                  "nothing was written, retry later", target) from e
                time.sleep(delay)

    def list_dir(self, path: str) -> list[FileInfo]:
        try:
            entries = self.fs.ls(self._abs(path), detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            if e.get("type") != "file":
                continue
            mtime = e.get("LastModified") or e.get("mtime") or e.get("created")
            out.append(FileInfo(e["name"].rstrip("/").rsplit("/", 1)[-1], int(e.get("size") or 0),
                                _to_ms(mtime)))
        return sorted(out, key=lambda f: f.name)

    def delete(self, path: str) -> None:
        self._check_writable()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._abs(path))

    def exists(self, path: str) -> bool:
        target = self._abs(path)
        # A listing cached by an earlier ls() must not hide files other writers created.
        self.fs.invalidate_cache(target)
        return bool(self.fs.exists(target))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        with _ARROW_FS_LOCK:
            entry = _ARROW_FS.get(id(self.fs))
            if entry is None or entry[0] is not self.fs:
                entry = (self.fs, pafs.PyFileSystem(_WholeFileHandler(self.fs)))
                _ARROW_FS[id(self.fs)] = entry
        return entry[1], self.root


class _WholeFileHandler(pafs.FSSpecHandler):  # type: ignore[misc]
    """Gives pyarrow Arrow-owned buffers instead of Python file objects.

    pyarrow releases scan state on its I/O threads, after the scan returned. If that
    drops the last reference to a Python object (a file, bytes, the filesystem) while
    the interpreter exits, the thread cannot take the GIL and the process aborts
    ("terminate called without an active exception"). So files are read whole into
    Arrow memory, and each Python filesystem lives as long as the process
    (`_ARROW_FS`). The cost: no ranged reads on these stores.
    """

    def open_input_file(self, path: str) -> pa.NativeFile:
        return arrow_file(self.fs.cat_file(path))

    @staticmethod
    def _create_file_info(path: str, info: dict[str, Any]) -> pafs.FileInfo:
        # Object stores name the time LastModified (s3fs) or created (memory), not mtime:
        # without it vacuum could never age out an orphan (a file staged, never committed).
        file_info: pafs.FileInfo = pafs.FSSpecHandler._create_file_info(path, info)
        ms = _to_ms(info.get("mtime") or info.get("LastModified") or info.get("created"))
        if ms is None or file_info.type != pafs.FileType.File:
            return file_info
        return pafs.FileInfo(path, pafs.FileType.File, size=file_info.size, mtime_ns=ms * 1_000_000)

    open_input_stream = open_input_file


# S3 answers 409 while another conditional write of the key is in flight; the PUT is
# retried after each of these pauses (about 1.3 s in all) before giving up.
_S3_CONFLICT_RETRY_DELAYS = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
_S3_CONFLICT_CODES = {"ConditionalRequestConflict", "OperationAborted"}


def _s3_error(error: BaseException) -> tuple[str | None, int | None]:
    """The S3 error code and HTTP status behind `error`, if an SDK error is chained to it.

    s3fs raises OSError subclasses chaining botocore's ClientError, whose `response`
    holds the code the server sent; the code is more reliable than the message.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return (str(code) if code else None), (status if isinstance(status, int) else None)
        current = current.__cause__ or current.__context__
    return None, None


def arrow_file(data: bytes) -> pa.BufferReader:
    """A pyarrow file over a copy of `data` in Arrow-owned memory: how bytes reach pyarrow.

    pyarrow finishes reads on its own threads, which may drop the last reference to
    the input. Over Python memory (bytes, `io.BytesIO`, `pa.BufferReader(bytes)`)
    that release takes the GIL; during interpreter exit the thread is then killed
    inside a destructor and the process aborts ("terminate called without an active
    exception"). Releasing Arrow-owned memory needs no GIL.
    """
    buf = pa.allocate_buffer(len(data))
    memoryview(buf).cast("B")[:] = data
    return pa.BufferReader(buf)


_ARROW_FS: dict[int, tuple[Any, pafs.FileSystem]] = {}
_ARROW_FS_LOCK = threading.Lock()


_T = TypeVar("_T")


class CheckedStorage:
    """The one place where store failures become `StorageError`.

    Wraps any store: a failure of the store (OSError, or an SDK error such as
    botocore's) surfaces as `StorageError` naming the operation and path, with the
    original exception chained as its cause. The protocol's own signals pass
    through: `FileNotFoundError` from `read`, `FileExistsError` from
    `write_if_absent`. Secret option values are masked in messages.

    Args:
        inner: the store.
        secrets: strings that must never appear in an error message.
    """

    def __init__(self, inner: Storage, secrets: Iterable[str] = ()) -> None:
        self.inner = inner
        self.uri = inner.uri
        self._secrets = tuple(secrets)

    def __repr__(self) -> str:
        return f"{type(self.inner).__name__}({self.uri!r})"

    def _call(self, op: str, path: str, fn: Callable[[], _T],
              passes: tuple[type[BaseException], ...] = ()) -> _T:
        try:
            return fn()
        except passes:  # the protocol's own signals
            raise
        except LakeflowError:
            raise
        except Exception as e:  # any store failure, whatever SDK raised it
            message = f"cannot {op} {_join(self.uri, path)}: {type(e).__name__}: {e}"
            raise StorageError(_redact(message, self._secrets)) from e

    def read(self, path: str) -> bytes:
        return self._call("read", path, lambda: self.inner.read(path), (FileNotFoundError,))

    def write_if_absent(self, path: str, data: bytes) -> None:
        self._call("create", path, lambda: self.inner.write_if_absent(path, data), (FileExistsError,))

    def write(self, path: str, data: bytes) -> None:
        self._call("write", path, lambda: self.inner.write(path, data))

    def write_stream(self, path: str, fill: Callable[[pa.NativeFile], None]) -> int:
        refused: list[Exception] = []

        def checked_fill(sink: pa.NativeFile) -> None:
            try:
                fill(sink)
            except OSError:
                raise  # the sink failed: a store failure
            except Exception as e:  # the data's own error (e.g. pyarrow's), not the store's
                refused.append(e)
                raise

        try:
            return self._call("write", path, lambda: self.inner.write_stream(path, checked_fill))
        except StorageError as e:
            if refused and e.__cause__ is refused[0]:
                raise refused[0] from None
            raise

    def list_dir(self, path: str) -> list[FileInfo]:
        return self._call("list", path, lambda: self.inner.list_dir(path))

    def delete(self, path: str) -> None:
        self._call("delete", path, lambda: self.inner.delete(path))

    def exists(self, path: str) -> bool:
        return self._call("check", path, lambda: self.inner.exists(path))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return self.inner.arrow_fs()


def _to_ms(value: Any) -> int | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    try:
        return int(float(value) * 1000)
    except (TypeError, ValueError):
        return None


_S3_OPTION_NAMES = {
    "aws_access_key_id": "key",
    "access_key_id": "key",
    "aws_secret_access_key": "secret",
    "secret_access_key": "secret",
    "aws_session_token": "token",
    "session_token": "token",
    "aws_endpoint_url": "endpoint_url",
    "aws_endpoint": "endpoint_url",
    "endpoint": "endpoint_url",
    "aws_region": "region_name",
    "aws_default_region": "region_name",
    "region": "region_name",
}
# deltalake (object_store) options that have no s3fs counterpart: s3fs takes http from
# the endpoint URL, and lakeflow needs no rename lock (it uses conditional put).
_S3_IGNORED = {"aws_allow_http", "allow_http", "aws_s3_allow_unsafe_rename"}
_S3_CONDITIONAL_PUT = {"aws_conditional_put", "conditional_put"}
_SECRET_NAME = re.compile(r"secret|token|password|passwd|credential|key|sas|signature", re.IGNORECASE)


def _s3_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Map deltalake-style (AWS_*) and s3fs-style option names to s3fs arguments.

    Returns:
        The s3fs keyword arguments, and whether the store honours conditional put
        (False when `conditional_put`/`AWS_CONDITIONAL_PUT` is `disabled` or a
        DynamoDB lock, which lakeflow does not implement).
    """
    out: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = dict(options.get("client_kwargs") or {})
    conditional_put = True
    for name, value in options.items():
        lower = name.lower()
        key = _S3_OPTION_NAMES.get(lower, name)
        if name == "client_kwargs" or lower in _S3_IGNORED:
            continue
        if lower in _S3_CONDITIONAL_PUT:
            conditional_put = str(value).lower() not in ("disabled", "false") and \
                not str(value).lower().startswith("dynamo")
        elif key == "region_name":
            client_kwargs["region_name"] = value
        else:
            out[key] = value
    if client_kwargs:
        out["client_kwargs"] = client_kwargs
    # A cached listing would hide other writers' commits and files from info()/cat_file().
    out.setdefault("use_listings_cache", False)
    return out, conditional_put


def _secret_values(options: Mapping[str, Any]) -> list[str]:
    """String values of options whose names look like credentials (to mask them)."""
    found: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            found += _secret_values(value)
        elif isinstance(value, str) and _SECRET_NAME.search(str(name)):
            found.append(value)
    return found


# Shorter values cannot be told from ordinary text ("k" would mask "bucket"): never masked.
_MIN_SECRET_LENGTH = 4


def _redact(message: str, secrets: Iterable[str]) -> str:
    """Mask each secret where it stands as a whole value, not inside a longer word.

    A word character next to the value's own word-character edge means the match
    is part of something else; longer values go first, so overlaps mask whole.
    """
    values = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
    if not values:
        return message
    return re.sub("|".join(_whole_value(v) for v in values), "***", message)


def _whole_value(value: str) -> str:
    """A pattern matching `value` only where no word character extends its word-character ends."""
    head = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
    tail = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
    return head + re.escape(value) + tail


def open_storage(uri: str, storage_options: Mapping[str, Any] | None = None) -> Storage:
    """Pick the storage implementation for a table URI.

    Args:
        uri: a local path, `file://`, `memory://name`, `s3://bucket/prefix` or any
            fsspec URI.
        storage_options: credentials and settings for the store. For S3 both the
            deltalake names (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
            `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_REGION`,
            `AWS_CONDITIONAL_PUT`) and the s3fs names (`key`, `secret`, `token`,
            `endpoint_url`, `client_kwargs`, ...) work. Two options are lakeflow's
            own: `allow_unsafe_writes` opts in to writing on stores without atomic
            put-if-absent, and `filesystem` passes a ready fsspec filesystem (the
            URI's path is then the table root inside it).

    Raises:
        InvalidArgumentError: the URI is empty or names an unknown protocol.
    """
    if not isinstance(uri, (str, os.PathLike)) or not str(uri).strip():
        raise InvalidArgumentError(f"table URI must be a non-empty path or URL, got {uri!r}")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise InvalidArgumentError(
            f"storage_options must be a mapping, got {type(storage_options).__name__}")
    uri = os.fspath(uri)
    options = dict(storage_options or {})
    allow_unsafe = bool(options.pop("allow_unsafe_writes", False))
    fs = options.pop("filesystem", None)
    secrets = _secret_values(options)
    protocol, rest = uri.split("://", 1) if "://" in uri else ("file", uri)
    protocol = protocol.lower()
    conditional_put = True
    if protocol == "file" and fs is None:
        return CheckedStorage(LocalStorage(rest), secrets)
    if protocol in ("s3", "s3a"):
        options, conditional_put = _s3_options(options)
        protocol = "s3"
    if protocol == "memory":
        if not rest.strip("/"):
            raise InvalidArgumentError("memory:// URIs need a name, e.g. memory://my-table")
        fs, root = fs or fsspec.filesystem("memory"), "/" + rest.strip("/")
    elif fs is not None:
        root = rest
    else:
        try:
            fs, root = fsspec.core.url_to_fs(f"{protocol}://{rest}", **options)
        except (ValueError, TypeError, ImportError) as e:
            raise InvalidArgumentError(
                f"cannot open {uri!r}: {_redact(str(e), secrets)}; use a local path, memory://, s3:// or an "
                "installed fsspec protocol with its storage_options"
            ) from e
    inner = FsspecStorage(uri, fs, root, conditional_put=conditional_put,
                          allow_unsafe_writes=allow_unsafe)
    return CheckedStorage(inner, secrets)
