"""The transaction log: list it, read commits, and replay them into a table state.

`replay` is a pure function of a starting state and a sequence of commits; a
checkpoint is a cached replay, so `replay(checkpoint, tail) == replay(None, all)`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from lakeflow.actions import (
    Action,
    Add,
    Cdc,
    CommitInfo,
    DomainMetadata,
    Metadata,
    Protocol,
    Remove,
    Txn,
    parse_commit,
)
from lakeflow.column_mapping import mapping_mode
from lakeflow.errors import CorruptLogError, LogGapError, UnsupportedFeatureError, VersionNotFoundError
from lakeflow.file_set import FileSet, Tombstones
from lakeflow.schema import check_type_changes, delta_to_arrow
from lakeflow.storage import FileInfo, Storage
from lakeflow.variant import has_variant

LOG_DIR = "_delta_log"
LAST_CHECKPOINT = f"{LOG_DIR}/_last_checkpoint"

_COMMIT_RE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
# UUID-named checkpoints (v2 spec); their sidecars live in _delta_log/_sidecars/.
_V2_CHECKPOINT_RE = re.compile(
    r"^(\d{20})\.checkpoint\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}\.(?:json|parquet)$")

# What lakeflow implements; anything else in a table's protocol is refused.
# Variants read unshredded (lakeflow.variant); widened columns are cast on read (schema.py).
READER_FEATURES = frozenset({"timestampNtz", "deletionVectors", "columnMapping", "v2Checkpoint",
                             "variantType", "variantType-preview", "typeWidening",
                             "typeWidening-preview", "vacuumProtocolCheck"})
# appendOnly, invariants, checkConstraints, generatedColumns and identityColumns: lakeflow.constraints.
# variantType: only while the schema has no variant column (check_writable).
# vacuumProtocolCheck: vacuum checks the whole protocol first (check_vacuumable).
# typeWidening: lakeflow never changes a column's type and keeps delta.typeChanges.
# deletionVectors: removes carry their file's DV; rewrites apply it (lakeflow.deletion_vectors).
# columnMapping: files and the log get physical names (lakeflow.write), new columns new ones.
WRITER_FEATURES = frozenset(
    {"timestampNtz", "appendOnly", "invariants", "checkConstraints", "generatedColumns",
     "identityColumns", "changeDataFeed", "inCommitTimestamp", "domainMetadata",
     "variantType", "variantType-preview", "vacuumProtocolCheck", "typeWidening", "typeWidening-preview",
     "deletionVectors", "columnMapping"}
)
# Catalog-managed tables: a catalog ratifies commits, and `_delta_log` may lag behind it.
CATALOG_FEATURES = ("catalogManaged", "catalogOwned-preview")
MAX_READER_VERSION = 3
MAX_WRITER_VERSION = 7
# The writer features a legacy protocol (writer version 2-6, no feature list) implies:
# each version adds its own to those of the versions below it.
LEGACY_WRITER_FEATURES = {2: ("appendOnly", "invariants"), 3: ("checkConstraints",),
                          4: ("changeDataFeed", "generatedColumns"), 5: ("columnMapping",),
                          6: ("identityColumns",)}
# Delta versions are signed 64-bit longs; a 20-digit name above this is no log entry.
MAX_VERSION = 2**63 - 1
# A `_last_checkpoint` claiming more parts is not believed (the listing decides).
MAX_HINTED_PARTS = 10_000


def commit_path(version: int) -> str:
    """The log path of commit `version`."""
    return f"{LOG_DIR}/{version:020d}.json"


def checkpoint_path(version: int) -> str:
    """The log path of the single-part checkpoint at `version`."""
    return f"{LOG_DIR}/{version:020d}.checkpoint.parquet"


@dataclass(frozen=True)
class TableState:
    """The replayed state of a table at one version (the sum of its commits).

    `files` is a `FileSet` and `tombstones` are `Tombstones` once replayed: a
    checkpoint's rows stay Arrow columns until an operation looks them up or
    iterates them.
    """

    version: int
    protocol: Protocol
    metadata: Metadata
    files: Mapping[str, Add]
    tombstones: Mapping[str, Remove] = field(default_factory=dict)
    txns: Mapping[str, Txn] = field(default_factory=dict)
    domains: Mapping[str, DomainMetadata] = field(default_factory=dict)


_SUSPICIOUS = ("%", "..", ":", "\\", "\x00")


def check_data_path(path: str, where: str) -> str:
    """Decode a file action's path once and make sure it names a file inside the table.

    Raises:
        CorruptLogError: the path is absolute, has a scheme, escapes the root,
            names a directory (a trailing `/`, `.`) or is not valid Unicode.
    """
    if path and path.isascii() and not path.startswith(("/", "./")) and not path.endswith(("/", "/.")) \
            and path != "." and "/./" not in path and not any(c in path for c in _SUSPICIOUS):
        return path  # the common case: nothing to decode, nothing suspicious
    decoded = unquote(path)
    parts = decoded.replace("\\", "/").split("/")
    if (
        not decoded
        or decoded.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", decoded)
        or ".." in parts
        or "\x00" in decoded
    ):
        raise CorruptLogError(
            f"{where} references the file {path!r}, which is not a relative path inside "
            "the table root; lakeflow refuses to read or delete it (absolute paths, "
            "shallow clones and '..' are not supported)"
        )
    if parts[-1] in ("", ".") or "." in parts:
        raise CorruptLogError(
            f"{where} references the file {path[:200]!r}, which names a directory, not a data "
            "file (a trailing '/' or a '.' component); the log entry is damaged"
        )
    try:
        decoded.encode("utf-8")
    except UnicodeEncodeError:
        raise CorruptLogError(
            f"{where} references the file {ascii(path)[:200]}, which is not valid Unicode "
            "(a lone surrogate); no store can hold that name, the log entry is damaged"
        ) from None
    return decoded


def replay(state: TableState | None, commits: Iterable[tuple[int, Sequence[Action]]]) -> TableState:
    """Apply commits, in order, on top of `state` (None: an empty table) and return the new state.

    Raises:
        CorruptLogError: the first state has no protocol or metadata.
    """
    version = state.version if state else -1
    protocol = state.protocol if state else None
    metadata = state.metadata if state else None
    files = FileSet.of(state.files if state else {}).edit()
    tombstones = Tombstones.of(state.tombstones if state else {}).edit()
    txns = dict(state.txns) if state else {}
    domains = dict(state.domains) if state else {}
    for v, actions in commits:
        where = f"commit {v}"
        # Actions in a commit are unordered. A path has at most one add and one remove
        # per commit (with different deletion vectors), and then the add survives.
        # Logical files are keyed (path, deletion vector id) by the protocol, but at
        # most one per path is active, so keying by path keeps the newest add of a
        # path: a remove of (path, dv1) with an add of (path, dv2) leaves dv2.
        for a in sorted(actions, key=lambda a: isinstance(a, Add)):
            if isinstance(a, Add):
                check_data_path(a.path, where)
                files.put(a)
                tombstones.drop(a.path)
            elif isinstance(a, Remove):
                check_data_path(a.path, where)
                files.drop(a.path)
                tombstones.put(a)
            elif isinstance(a, Metadata):
                metadata = a
            elif isinstance(a, Protocol):
                protocol = a
            elif isinstance(a, Txn):
                txns[a.app_id] = a
            elif isinstance(a, DomainMetadata):
                if a.removed:
                    domains.pop(a.domain, None)
                else:
                    domains[a.domain] = a
            elif isinstance(a, Cdc):
                check_data_path(a.path, where)
        version = v
    if protocol is None or metadata is None:
        raise CorruptLogError(
            f"the log up to version {version} has no {'protocol' if protocol is None else 'metaData'} "
            "action; this is not a valid Delta table"
        )
    return TableState(version, protocol, metadata, files.build(), tombstones.build(), txns, domains)


def _check_features(role: str, version: int, max_version: int, features: tuple[str, ...] | None,
                    supported: frozenset[str], consequence: str) -> None:
    if version > max_version:
        raise UnsupportedFeatureError(
            f"table needs Delta {role} version {version}; lakeflow supports up to {max_version}"
        )
    missing = sorted(set(features or ()) - supported)
    if missing:
        raise UnsupportedFeatureError(
            f"table uses Delta {role} feature(s) {', '.join(missing)}, which lakeflow does not "
            f"support yet; {consequence}"
        )


def check_readable(protocol: Protocol, metadata: Metadata | None = None) -> None:
    """Refuse tables that need reader features lakeflow does not implement.

    Raises:
        UnsupportedFeatureError: naming the feature (a catalog-managed table, an unknown
            feature), or an unknown column mapping mode.
    """
    listed = protocol.reader_features if protocol.min_reader_version == 3 else None
    catalog = [f for f in CATALOG_FEATURES if f in (listed or ())]
    if catalog:
        raise UnsupportedFeatureError(
            f"table is catalog-managed (reader feature {catalog[0]}): a catalog ratifies its "
            "commits and the files in _delta_log may not hold the latest of them; lakeflow does "
            "not talk to catalogs, so read and write it through its catalog's client (e.g. Spark "
            "or delta-kernel with Unity Catalog)"
        )
    _check_features("reader", protocol.min_reader_version, MAX_READER_VERSION, listed,
                    READER_FEATURES, "read it with deltalake or Spark")
    if metadata is not None:
        mapping_mode(metadata)  # refuses modes other than none, name and id
        if metadata.schema_string and "delta.typeChanges" in metadata.schema_string:
            check_type_changes(metadata.schema_string)


def check_schema(state: TableState) -> None:
    """Refuse reading a version whose metaData has no schema.

    Raises:
        CorruptLogError: naming the version.
    """
    if not state.metadata.has_schema:
        raise CorruptLogError(
            f"version {state.version} of the table has no schema: its metaData action has no "
            "schemaString (Databricks Delta Live Tables wrote such a first metaData, with the "
            "schema in a later commit), so lakeflow cannot tell its columns; read a later "
            "version whose metaData has a schema"
        )


def writer_features(protocol: Protocol) -> frozenset[str]:
    """The writer features `protocol` supports, listed (version 7) or implied (2-6)."""
    if protocol.min_writer_version >= 7:
        return frozenset(protocol.writer_features or ())
    return frozenset(f for v, names in LEGACY_WRITER_FEATURES.items()
                     if v <= protocol.min_writer_version for f in names)


def check_writable(protocol: Protocol, metadata: Metadata | None = None) -> None:
    """Refuse writing tables whose writer features lakeflow does not implement.

    Legacy writer versions count as the features they imply (5: columnMapping,
    6: identityColumns), so both forms of a protocol get the same answer.

    Raises:
        UnsupportedFeatureError: naming the feature, or a column mapping mode set in
            `metadata`'s configuration on a protocol without the columnMapping feature.
        CorruptLogError: `metadata` has no schema.
    """
    legacy = "" if protocol.min_writer_version >= 7 else (
        f" (implied by writer version {protocol.min_writer_version})")
    _check_features("writer", protocol.min_writer_version, MAX_WRITER_VERSION,
                    tuple(writer_features(protocol)), WRITER_FEATURES,
                    f"the table is read-only for lakeflow{legacy}")
    if metadata is not None and not metadata.has_schema:  # a checkpoint would drop it
        raise CorruptLogError(
            "the table's metaData action has no schemaString, so lakeflow cannot tell its "
            "columns and does not write it (nor checkpoint, vacuum or clean up its log); a "
            "writer that knows the schema must commit a metaData with one first"
        )
    mode = mapping_mode(metadata) if metadata is not None else "none"
    if mode != "none" and "columnMapping" not in writer_features(protocol):
        # Readers that honour the protocol read display names; lakeflow would write physical ones.
        raise UnsupportedFeatureError(
            f"table sets delta.columnMapping.mode={mode} but its protocol (reader "
            f"{protocol.min_reader_version}, writer {protocol.min_writer_version}) does not support "
            "the columnMapping feature, so readers disagree about its files; the table is "
            "read-only for lakeflow (upgrade its protocol with Spark)"
        )
    if metadata is not None and has_variant(delta_to_arrow(metadata.schema_string)):
        raise UnsupportedFeatureError(
            "table has a variant column (feature variantType), which lakeflow cannot write yet "
            "(it does not check the values' encoding); the table is read-only for lakeflow"
        )


def check_vacuumable(protocol: Protocol, metadata: Metadata | None = None) -> None:
    """Refuse to vacuum a table lakeflow cannot both read and write.

    Vacuum deletes files, so it honours every reader and writer feature, as the
    `vacuumProtocolCheck` feature requires: a feature lakeflow does not know may
    keep files the log does not name (PROTOCOL.md, VACUUM Protocol Check).

    Raises:
        UnsupportedFeatureError: naming the feature; nothing is deleted.
    """
    try:
        check_readable(protocol, metadata)
        check_writable(protocol, metadata)
    except UnsupportedFeatureError as e:
        raise UnsupportedFeatureError(f"vacuum refused: {e}") from None


@dataclass(frozen=True)
class LogListing:
    """What `_delta_log/` holds: commits (version -> file) and complete checkpoints."""

    commits: Mapping[int, FileInfo]
    checkpoints: Mapping[int, tuple[str, ...]]

    @property
    def latest(self) -> int | None:
        """The newest version the log can reach, or None when the log is empty."""
        versions = list(self.commits) + list(self.checkpoints)
        return max(versions) if versions else None


def _log_version(name: str, digits: str) -> int | None:
    """The version a log file name carries, or None (with a warning) beyond the long range."""
    version = int(digits)
    if version > MAX_VERSION:
        warnings.warn(f"ignoring {LOG_DIR}/{name}: version {version} is beyond the Delta "
                      "version range (a stray file?)", stacklevel=4)
        return None
    return version


def list_log(storage: Storage) -> LogListing:
    """List `_delta_log/`, keeping commits and checkpoints whose parts are all present.

    Of several checkpoints of one version, a UUID-named (v2) one is preferred,
    then a classic one, then the multi-part one with the most parts. Names whose
    version exceeds the Delta range are ignored with a warning.
    """
    commits: dict[int, FileInfo] = {}
    parts: dict[tuple[int, int], list[str]] = {}
    uuid_named: dict[int, str] = {}
    for info in storage.list_dir(LOG_DIR):
        m = _COMMIT_RE.match(info.name) or _CHECKPOINT_RE.match(info.name) \
            or _V2_CHECKPOINT_RE.match(info.name)
        version = _log_version(info.name, m.group(1)) if m else None
        if m is None or version is None:
            continue
        if m.re is _COMMIT_RE:
            commits[version] = info
        elif m.re is _CHECKPOINT_RE:
            total = int(m.group(3)) if m.group(3) else 1
            parts.setdefault((version, total), []).append(info.name)
        else:
            uuid_named.setdefault(version, info.name)
    checkpoints: dict[int, tuple[str, ...]] = {}
    for (version, total), names in sorted(parts.items(), key=lambda kv: (kv[0][0], kv[0][1] == 1, kv[0][1])):
        if len(names) == total:  # a multi-part checkpoint with a missing part is ignored
            checkpoints[version] = tuple(sorted(names))
    checkpoints.update({v: (name,) for v, name in uuid_named.items()})
    return LogListing(commits, checkpoints)


def read_last_checkpoint(storage: Storage) -> tuple[int, tuple[str, ...]] | None:
    """The checkpoint `_last_checkpoint` points to, as (version, part names).

    None when absent or unreadable, or (with a warning) when its version or part
    count is out of range: it is only a hint, and readers then list the log.
    """
    try:
        data = json.loads(storage.read(LAST_CHECKPOINT))
        version = data["version"]
        parts = data.get("parts") or 1
        v2_name = unquote(str((data.get("v2Checkpoint") or {}).get("path") or "")).rsplit("/", 1)[-1]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        warnings.warn(f"ignoring the unreadable {LAST_CHECKPOINT}; listing the log instead", stacklevel=3)
        return None
    if not all(type(n) is int for n in (version, parts)) \
            or not 0 <= version <= MAX_VERSION or not 1 <= parts <= MAX_HINTED_PARTS:
        warnings.warn(f"ignoring {LAST_CHECKPOINT}: version {version!r} with {parts!r} part(s) "
                      "is out of range; listing the log instead", stacklevel=3)
        return None
    m = _V2_CHECKPOINT_RE.match(v2_name)
    if m and int(m.group(1)) == version:
        return version, (v2_name,)
    if parts == 1:
        return version, (f"{version:020d}.checkpoint.parquet",)
    return version, tuple(f"{version:020d}.checkpoint.{i:010d}.{parts:010d}.parquet"
                          for i in range(1, parts + 1))


def read_commit(storage: Storage, version: int) -> list[Action]:
    """Read and parse one commit file.

    Raises:
        FileNotFoundError: the commit does not exist.
        CorruptLogError: the commit cannot be parsed.
    """
    path = commit_path(version)
    return parse_commit(storage.read(path), path)


def _first_missing(present: Sequence[int], first: int, last: int, limit: int = 5) -> list[int]:
    """Up to `limit` versions in [first, last] that are not in the sorted `present`."""
    missing: list[int] = []
    expected = first
    for v in [*present, last + 1]:
        while expected < v and len(missing) < limit:
            missing.append(expected)
            expected += 1
        if len(missing) >= limit:
            break
        expected = v + 1
    return missing


def plan_segment(listing: LogListing, version: int | None) -> tuple[int | None, list[int]]:
    """Choose the newest usable checkpoint <= `version` and the commits after it.

    Raises:
        VersionNotFoundError: `version` is not reachable from the log.
        LogGapError: commits are missing in the middle of the segment.
    """
    latest = listing.latest
    if latest is None:
        raise VersionNotFoundError("the table log is empty")
    target = latest if version is None else version
    if target > latest or target < 0:
        raise VersionNotFoundError(
            f"version {target} does not exist; this table has versions "
            f"{_describe_versions(listing)}"
        )
    cps = [v for v in listing.checkpoints if v <= target]
    start = max(cps) if cps else None
    first_commit = (start + 1) if start is not None else 0
    # Only listed files are counted: a stray far-future name must not build a huge range.
    needed = sorted(v for v in listing.commits if first_commit <= v <= target)
    complete = len(needed) == target - first_commit + 1
    missing = [] if complete else _first_missing(needed, first_commit, target)
    if missing and start is None and missing[0] == 0:
        raise VersionNotFoundError(
            f"version {target} is no longer reconstructable: its early log entries were "
            f"cleaned up and no checkpoint covers them; this table has versions "
            f"{_describe_versions(listing)}"
        )
    if missing:
        raise _gap(missing, start, target)
    return start, needed


def _gap(missing: list[int], start: int | None, target: int) -> LogGapError:
    """The error for a version past missing commits: which are missing, which versions read."""
    last = missing[0] - 1  # the segment up to it is complete: missing[0] is the first hole
    floor = start if start is not None else 0  # (before a checkpoint, there may be other holes)
    readable = f"versions {floor}..{last} are" if last > floor else f"version {last} is"
    unreadable = f"versions {missing[0]}..{target}" if target > missing[0] else f"version {target}"
    return LogGapError(
        f"the log has a gap: commit file(s) {', '.join(commit_path(v) for v in missing)} are "
        f"missing (deleted by hand or by a tool outside Delta?) while later ones exist, and no "
        f"checkpoint covers them, so {unreadable} cannot be reconstructed; {readable} before "
        "the gap (read with Table.snapshot(version=...)); restore the missing commit file(s) "
        "to read the versions after it",
        tuple(missing), last)


def reachable_versions(listing: LogListing) -> list[int]:
    """Listed versions from the oldest checkpoint (or 0) on, whose commit or checkpoint exists.

    Built from the listing only, so its size is that of the log directory.
    """
    latest = listing.latest
    if latest is None:
        return []
    floor = 0 if 0 in listing.commits else min(listing.checkpoints, default=latest)
    return sorted(v for v in {*listing.commits, *listing.checkpoints} if v >= floor)


def _describe_versions(listing: LogListing) -> str:
    latest = listing.latest
    if latest is None:
        return "none"
    floor = 0 if 0 in listing.commits else min(listing.checkpoints, default=latest)
    return f"{floor}..{latest}" if latest > floor else str(floor)


# How far a commit's recorded time may run ahead of the time the store stamped on its
# log entry before lakeflow takes the store's time instead (docs/reliability.md).
CLOCK_SKEW_TOLERANCE_MS = 5 * 60_000


def recorded_timestamp(actions: Sequence[Action]) -> int | None:
    """The time a commit's writer recorded: its in-commit timestamp or commitInfo."""
    for a in actions:
        if isinstance(a, CommitInfo) and a.timestamp is not None:
            return a.timestamp
    return None


def bounded_timestamp(version: int, recorded: int | None, mtime_ms: int | None,
                      first_ms: int | None = None) -> int | None:
    """A commit's time in ms: what its writer recorded, unless the store's time refutes it.

    A log entry cannot be written after the store stamped it, so a recorded time more
    than `CLOCK_SKEW_TOLERANCE_MS` after the entry's modification time comes from a
    clock that runs ahead: the store's time is used instead, with a warning. Earlier
    recorded times are kept (copying a table makes every mtime later), and so are
    mtimes from before `first_ms`, the oldest commit's recorded time: those were not
    stamped by the store at commit time but reset (e.g. to the epoch by an archiver).
    """
    if recorded is None:
        return mtime_ms
    if mtime_ms is not None and recorded > mtime_ms + CLOCK_SKEW_TOLERANCE_MS \
            and (first_ms is None or mtime_ms + CLOCK_SKEW_TOLERANCE_MS >= first_ms):
        ahead = dt.timedelta(milliseconds=recorded - mtime_ms)
        warnings.warn(f"commit {version} records a time {ahead} ahead of the store's time of its "
                      "log entry (a writer's clock runs ahead); lakeflow uses the store's time",
                      stacklevel=3)
        return mtime_ms
    return recorded
