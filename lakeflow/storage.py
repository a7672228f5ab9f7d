"""A tiny storage protocol (read, write-if-absent, list, delete), one class per store.

Storage knows nothing of Delta: it moves bytes under a table root, addressed by
'/'-separated paths relative to that root. The one hard guarantee is
`write_if_absent`: exactly one writer creates a given path, and no reader sees a
partial file. Each store gets it from its own atomic primitive.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec
import pyarrow.fs as pafs

from lakeflow.errors import InvalidArgumentError, StorageError


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
    """Local disk: temp file + `os.link` makes creation atomic and exclusive."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.uri = self.root

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def read(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            return f.read()

    def _write_temp(self, target: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def write_if_absent(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        tmp = self._write_temp(target, data)
        try:
            # link() fails with EEXIST if another writer won: no check-then-write race.
            os.link(tmp, target)
        finally:
            os.unlink(tmp)

    def write(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        os.replace(self._write_temp(target, data), target)

    def list_dir(self, path: str) -> list[FileInfo]:
        try:
            entries = list(os.scandir(self._abs(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            if e.is_file():
                st = e.stat()
                out.append(FileInfo(e.name, st.st_size, int(st.st_mtime * 1000)))
        return sorted(out, key=lambda f: f.name)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._abs(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), self.root


class FsspecStorage:
    """Any fsspec filesystem. Creation is atomic only where the store says so."""

    _memory_lock = threading.Lock()

    def __init__(self, uri: str, fs: Any, root: str, *, allow_unsafe_writes: bool) -> None:
        self.uri = uri
        self.fs = fs
        self.root = root.rstrip("/")
        self.protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.allow_unsafe_writes = allow_unsafe_writes

    def _abs(self, path: str) -> str:
        return _join(self.root, path)

    def read(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(self._abs(path))
        return data

    def write_if_absent(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        if self.protocol == "memory":
            # One process-wide lock: the memory store lives in this process only.
            with self._memory_lock:
                if self.fs.exists(target):
                    raise FileExistsError(target)
                self.fs.pipe_file(target, data)
        elif self.protocol in ("s3", "s3a"):
            # s3fs sends If-None-Match: * and maps 412 to FileExistsError.
            self.fs.pipe_file(target, data, mode="create")
        elif self.allow_unsafe_writes:
            if self.fs.exists(target):
                raise FileExistsError(target)
            self.fs.pipe_file(target, data)
        else:
            raise StorageError(
                f"the {self.protocol!r} store has no atomic put-if-absent, so two writers "
                "could both commit the same version and lose data; write from one process "
                "only and pass storage_options={'allow_unsafe_writes': True} to accept the risk"
            )

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._abs(path), data)

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
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._abs(path))

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._abs(path)))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs)), self.root


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
    "aws_region": "region",
}


def _s3_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Accept deltalake-style (AWS_*) and s3fs-style option names alike."""
    out: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = dict(options.get("client_kwargs") or {})
    for name, value in options.items():
        if name == "client_kwargs":
            continue
        key = _S3_OPTION_NAMES.get(name.lower(), name)
        if key in ("region", "region_name"):
            client_kwargs["region_name"] = value
        elif key == "aws_allow_http" or key == "allow_http":
            continue
        else:
            out[key] = value
    if client_kwargs:
        out["client_kwargs"] = client_kwargs
    return out


def open_storage(uri: str, storage_options: Mapping[str, Any] | None = None) -> Storage:
    """Pick the storage implementation for a table URI.

    Args:
        uri: a local path, `file://`, `memory://name`, `s3://bucket/prefix` or any
            fsspec URI.
        storage_options: credentials and settings for the store; `allow_unsafe_writes`
            opts in to writing on stores without atomic put-if-absent.

    Raises:
        InvalidArgumentError: the URI is empty or names an unknown protocol.
    """
    if not isinstance(uri, (str, os.PathLike)) or not str(uri).strip():
        raise InvalidArgumentError(f"table URI must be a non-empty path or URL, got {uri!r}")
    uri = os.fspath(uri)
    options = dict(storage_options or {})
    allow_unsafe = bool(options.pop("allow_unsafe_writes", False))
    if "://" not in uri:
        return LocalStorage(uri)
    protocol, rest = uri.split("://", 1)
    protocol = protocol.lower()
    if protocol == "file":
        return LocalStorage(rest)
    if protocol == "memory":
        if not rest.strip("/"):
            raise InvalidArgumentError("memory:// URIs need a name, e.g. memory://my-table")
        return FsspecStorage(uri, fsspec.filesystem("memory"), "/" + rest.strip("/"),
                             allow_unsafe_writes=allow_unsafe)
    if protocol in ("s3", "s3a"):
        options = _s3_options(options)
        protocol = "s3"
    try:
        fs, root = fsspec.core.url_to_fs(f"{protocol}://{rest}", **options)
    except (ValueError, ImportError) as e:
        raise InvalidArgumentError(
            f"cannot open {uri!r}: {e}; use a local path, memory://, s3:// or an installed "
            "fsspec protocol"
        ) from e
    return FsspecStorage(uri, fs, root, allow_unsafe_writes=allow_unsafe)
