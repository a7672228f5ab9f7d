"""Landing folders ingested exactly once: each file one commit, then archived.

A file's commit carries `app_id = "ingest/<asset>"` with the next `txn_version`
of that application, and its provenance (name, size, sha256, run id) in the
commitInfo. The log is the record of what was loaded: a re-run after a crash at
any point finds a file already committed and only archives it; a file whose
content changed under a loaded name is refused; two concurrent ingests of one
asset each find the other's commits (a lost `txn_version` race is re-planned).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from lakeflow.errors import CommitConflictError, InvalidArgumentError, LakeflowError
from lakeflow.factory.declarations import Asset, DeclarationError
from lakeflow.late import event_micros, from_micros, window_micros
from lakeflow.storage import arrow_file
from lakeflow.table import Table

FILE_KEY, SHA_KEY, SIZE_KEY, RUN_KEY = ("lakeflow.ingest.file", "lakeflow.ingest.sha256",
                                        "lakeflow.ingest.size", "lakeflow.ingest.run")
REJECTED_DIR = "_rejected"
_PLAN_ATTEMPTS = 100

Outcome = Literal["loaded", "already", "rejected"]


@dataclass(frozen=True)
class IngestedFile:
    """What happened to one landing file.

    Attributes:
        name: the file name.
        outcome: loaded (committed now), already (committed before; archived now)
            or rejected (moved to `_rejected/` with the reason).
        version: the commit holding it (None when rejected).
        rows: rows loaded (0 unless loaded).
        reason: why it was rejected.
    """

    name: str
    outcome: Outcome
    version: int | None = None
    rows: int = 0
    reason: str | None = None


def app_id(asset: str) -> str:
    """The application id of an asset's ingest commits."""
    return f"ingest/{asset}"


class Folder:
    """A landing or archive folder on any fsspec store."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        self.root = self.root.rstrip("/")

    def names(self, pattern: str) -> list[str]:
        """File names matching `pattern`, in name order (hidden and `_` files left out)."""
        if not self.fs.exists(self.root):
            return []
        out = []
        for info in self.fs.ls(self.root, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and not name.startswith((".", "_")) and fnmatch.fnmatch(name, pattern):
                out.append(name)
        return sorted(out)

    def read(self, name: str) -> bytes:
        """The bytes of file `name`."""
        data: bytes = self.fs.cat_file(f"{self.root}/{name}")
        return data

    def move(self, name: str, target: Folder, subdir: str) -> None:
        """Move file `name` into `target/subdir/` (copy, then delete: safe to repeat)."""
        dest = f"{target.root}/{subdir}".rstrip("/")
        target.fs.makedirs(dest, exist_ok=True)
        target.fs.pipe_file(f"{dest}/{name}", self.read(name))
        self.fs.rm_file(f"{self.root}/{name}")

    def write(self, path: str, data: bytes) -> None:
        """Write a small file (a rejection reason)."""
        self.fs.makedirs(f"{self.root}/{path}".rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(f"{self.root}/{path}", data)


def read_file(data: bytes, asset: Asset, schema: pa.Schema | None) -> pa.Table:
    """Parse a landing file by the asset's format, with the declared column types.

    Raises:
        pa.ArrowInvalid: the file does not parse (or not as the schema says).
        DeclarationError: the declared reader options are not the reader's.
    """
    try:
        return _read(data, asset, schema)
    except TypeError as e:  # an option the pyarrow reader does not take
        raise DeclarationError(f"asset {asset.name}: ingest.options {asset.reader.options} do not fit the "
                               f"{asset.reader.format} reader: {e}") from e


def _read(data: bytes, asset: Asset, schema: pa.Schema | None) -> pa.Table:
    spec = asset.reader
    options = dict(spec.options)
    if spec.format == "parquet":
        table = pq.read_table(arrow_file(data), **options)
    elif spec.format == "ndjson":
        parse = pjson.ParseOptions(explicit_schema=schema) if schema is not None else None
        table = pjson.read_json(arrow_file(data), parse_options=parse)
    else:
        convert = pcsv.ConvertOptions(column_types=schema, **options.pop("convert", {})) \
            if schema is not None else pcsv.ConvertOptions(**options.pop("convert", {}))
        parse = pcsv.ParseOptions(**options)
        table = pcsv.read_csv(arrow_file(data), parse_options=parse, convert_options=convert)
    return table if schema is None else table.select(schema.names).cast(schema)


class Loaded:
    """The files an asset's log says were loaded, read incrementally (only newer commits each time)."""

    def __init__(self, asset: str) -> None:
        self.asset = asset
        self.files: dict[str, tuple[str, int]] = {}
        self.version = -1

    def update(self, table: Table) -> Loaded:
        """Read the commits after the last one seen; returns self."""
        latest = table.version
        for c in table.history(limit=max(0, latest - self.version)):
            if c.app_id == app_id(self.asset) and isinstance(c.info.get(FILE_KEY), str):
                self.files.setdefault(c.info[FILE_KEY], (str(c.info.get(SHA_KEY)), c.version))
        self.version = latest
        return self


def _commit(table: Table, asset: str, rows: pa.Table, txn_version: int, info: dict[str, Any],
            watermark: dt.datetime | None) -> int:
    """One ingest commit: the rows, or (a file with no rows) the txn and provenance alone."""
    if rows.num_rows:
        return table.append(rows, app_id=app_id(asset), txn_version=txn_version, metadata=info, watermark=watermark)
    tx = table.transaction("WRITE", {"mode": "Append"}).set_txn(app_id(asset), txn_version).info(**info)
    return tx.commit().version


def _commit_once(table: Table, asset: str, rows: pa.Table, name: str, sha: str, size: int,
                 run: str, watermark: dt.datetime | None = None, loaded: Loaded | None = None) -> tuple[int, bool]:
    """Append `rows` as the asset's next ingest commit; (version, whether this call wrote it).

    Before each attempt the log is checked for this file: a concurrent ingest may
    have loaded it meanwhile (then that commit is the load; other content under the
    name is refused). A concurrent ingest may also take the planned `txn_version`
    with another file: then the plan is made again on the new state.

    Raises:
        InvalidArgumentError: the log holds other content under this file's name.
    """
    info = {FILE_KEY: name, SHA_KEY: sha, SIZE_KEY: size, RUN_KEY: run}
    loaded = loaded if loaded is not None else Loaded(asset)
    for _ in range(_PLAN_ATTEMPTS):
        table.refresh()
        prior = loaded.update(table).files.get(name)
        if prior is not None:
            if prior[0] != sha:
                raise InvalidArgumentError(f"a file named {name} with other content (sha256 {prior[0]}) was "
                                           f"loaded at version {prior[1]}; rename the file to load it")
            return prior[1], False
        seen = table.state.txns.get(app_id(asset))
        version = _commit(table, asset, rows, seen.version + 1 if seen else 0, info, watermark)
        holder = table.history(limit=table.version - version + 1)[-1]
        if holder.info.get(FILE_KEY) == name and holder.info.get(SHA_KEY) == sha:
            return version, holder.info.get(RUN_KEY) == run
    raise CommitConflictError(f"ingest of {name} lost the race for a txn_version {_PLAN_ATTEMPTS} times; retry")


def ingest_asset(table_for: Callable[[pa.Schema | None], Table], asset: Asset, landing: Folder,
                 archive: Folder, now: dt.datetime | None = None,
                 on_file: Callable[[IngestedFile], None] | None = None) -> list[IngestedFile]:
    """Load every new landing file of `asset`, in name order, one commit each.

    Args:
        table_for: opens the asset's table, creating it with the given schema
            (the declared one, or inferred from the first file) on first use.
        asset: the declaration.
        landing: the asset's landing folder.
        archive: the asset's archive folder (files go to `<date>/` under it).
        now: the run's time (for the archive date).
        on_file: called with each file's outcome as it is known (progress).
    """
    names = landing.names(asset.reader.glob)
    if not names:
        return []
    run, day = uuid.uuid4().hex, (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d")
    table: Table | None = None
    loaded = Loaded(asset.name)
    out: list[IngestedFile] = []
    for name in names:
        try:
            data = landing.read(name)
        except FileNotFoundError:
            continue  # a concurrent ingest archived it meanwhile: that one loads it
        sha = hashlib.sha256(data).hexdigest()
        try:
            rows = read_file(data, asset, table.schema if table is not None else asset.arrow_schema)
        except DeclarationError:
            raise
        except (pa.ArrowException, ValueError, KeyError, LakeflowError) as e:
            out.append(_reject(landing, name, f"cannot read it as {asset.reader.format}: {e}"))
            _tell(on_file, out[-1])
            continue
        if table is None:
            table = table_for(rows.schema)
        out.append(_load(table, asset, landing, archive, name, data, sha, rows, loaded.update(table), run, day))
        _tell(on_file, out[-1])
    return out


def _tell(on_file: Callable[[IngestedFile], None] | None, outcome: IngestedFile) -> None:
    if on_file is not None:
        on_file(outcome)


def _load(table: Table, asset: Asset, landing: Folder, archive: Folder, name: str, data: bytes, sha: str,
          rows: pa.Table, loaded: Loaded, run: str, day: str) -> IngestedFile:
    before = loaded.files.get(name)
    if before is not None and before[0] != sha:
        return _reject(landing, name, f"a file named {name} with other content (sha256 {before[0]}) was "
                                      f"loaded at version {before[1]}; rename the file to load it")
    if before is not None:
        landing.move(name, archive, day)
        return IngestedFile(name, "already", before[1])
    try:
        version, wrote = _commit_once(table, asset.name, rows, name, sha, len(data), run,
                                      file_watermark(asset, rows), loaded)
    except LakeflowError as e:
        if isinstance(e, CommitConflictError):
            raise
        return _reject(landing, name, str(e))
    loaded.files[name] = (sha, version)
    landing.move(name, archive, day)
    return IngestedFile(name, "loaded" if wrote else "already", version, rows.num_rows if wrote else 0)


def file_watermark(asset: Asset, rows: pa.Table) -> dt.datetime | None:
    """The watermark a file's commit sets: its newest event time minus the declared lag (None: none)."""
    lag = asset.reader.watermark_lag
    if lag is None or asset.event_time is None or rows.num_rows == 0:
        return None
    newest = event_micros(rows.column(asset.event_time))
    top = pc.max(newest).as_py()
    return None if top is None else from_micros(int(top) - window_micros(lag))


def _reject(landing: Folder, name: str, reason: str) -> IngestedFile:
    landing.write(f"{REJECTED_DIR}/{name}.reason.txt", reason.encode("utf-8"))
    landing.move(name, landing, REJECTED_DIR)
    return IngestedFile(name, "rejected", reason=reason)


__all__ = ["Folder", "IngestedFile", "app_id", "Loaded", "ingest_asset", "read_file"]
