"""Delta log actions as frozen dataclasses, with their JSON and checkpoint-row codecs.

Each action knows how to read itself from the decoded JSON object of a commit line
(or a checkpoint row, which has the same shape once maps are turned into dicts) and
how to write itself back. Unknown actions and unknown fields are ignored, as the
protocol requires of readers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from lakeflow.errors import CorruptLogError

JSON = dict[str, Any]
# The schema of a metaData action that has none: a table without columns.
NO_SCHEMA = '{"type":"struct","fields":[]}'


def as_map(value: Any) -> dict[str, Any]:
    """Normalize a map from JSON (dict) or from a checkpoint row (list of pairs)."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {k: v for k, v in value}


def _drop_none(d: JSON) -> JSON:
    return {k: v for k, v in d.items() if v is not None}


def _text(d: JSON, key: str, action: str) -> str:
    """A required string field; ValueError naming the field otherwise."""
    value = d[key]
    if not isinstance(value, str):
        raise ValueError(f"{action}.{key} must be a string, got {_shown(value)}")
    return value


def _optional(d: JSON, key: str, action: str, kind: type, default: Any = None) -> Any:
    """An optional field of type `kind` (or null); ValueError naming the field otherwise."""
    value = d.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{action}.{key} must be a {kind.__name__}, got {_shown(value)}")
    return value


def _string_map(value: Any, field_name: str) -> dict[str, str | None]:
    """A map of strings to strings or null (partition values); ValueError naming the key."""
    out = as_map(value)
    for k, v in out.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, str)):
            raise ValueError(f"{field_name}[{k!r}] must be a string or null, got {_shown(v)}")
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


@dataclass(frozen=True)
class Protocol:
    """The protocol versions and table features a reader and writer must support."""

    min_reader_version: int
    min_writer_version: int
    reader_features: tuple[str, ...] | None = None
    writer_features: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, d: JSON) -> Protocol:
        rf, wf = d.get("readerFeatures"), d.get("writerFeatures")
        return cls(
            int(d["minReaderVersion"]),
            int(d["minWriterVersion"]),
            tuple(rf) if rf is not None else None,
            tuple(wf) if wf is not None else None,
        )

    def to_json(self) -> JSON:
        out: JSON = {
            "minReaderVersion": self.min_reader_version,
            "minWriterVersion": self.min_writer_version,
        }
        if self.reader_features is not None:
            out["readerFeatures"] = list(self.reader_features)
        if self.writer_features is not None:
            out["writerFeatures"] = list(self.writer_features)
        return {"protocol": out}


@dataclass(frozen=True)
class Metadata:
    """Table identity, schema, partitioning and configuration.

    `has_schema` is False for a metaData action without `schemaString`; its
    `schema_string` is then `NO_SCHEMA`.
    """

    id: str
    schema_string: str
    partition_columns: tuple[str, ...] = ()
    configuration: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    format_provider: str = "parquet"
    format_options: Mapping[str, str] = field(default_factory=dict)
    created_time: int | None = None
    has_schema: bool = True

    @classmethod
    def from_json(cls, d: JSON) -> Metadata:
        fmt = d.get("format") or {}
        # Databricks Delta Live Tables wrote metaData actions without a schemaString (the
        # schema came in a later commit): such a version has no columns to read.
        has_schema = "schemaString" in d
        schema_string = _text(d, "schemaString", "metaData") if has_schema else NO_SCHEMA
        try:
            schema = json.loads(schema_string)
        except RecursionError:
            raise ValueError("metaData.schemaString nests too deep to be a table schema") from None
        if not isinstance(schema, dict):
            raise ValueError(f"metaData.schemaString is {_shown(schema)}, not a JSON object")
        columns = d.get("partitionColumns") or ()
        if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
            raise ValueError(f"metaData.partitionColumns must be a list of strings, got {_shown(columns)}")
        return cls(
            id=str(d["id"]),
            schema_string=schema_string,
            partition_columns=tuple(columns),
            configuration={k: v for k, v in as_map(d.get("configuration")).items()
                           if v is not None},
            name=d.get("name"),
            description=d.get("description"),
            format_provider=fmt.get("provider") or "parquet",
            format_options=as_map(fmt.get("options")),
            created_time=d.get("createdTime"),
            has_schema=has_schema,
        )

    def to_json(self) -> JSON:
        return {
            "metaData": _drop_none(
                {
                    "id": self.id,
                    "name": self.name,
                    "description": self.description,
                    "format": {"provider": self.format_provider,
                               "options": dict(self.format_options)},
                    "schemaString": self.schema_string if self.has_schema else None,
                    "partitionColumns": list(self.partition_columns),
                    "configuration": dict(self.configuration),
                    "createdTime": self.created_time,
                }
            )
        }


@dataclass(frozen=True)
class Add:
    """A data file that becomes part of the table."""

    path: str
    partition_values: Mapping[str, str | None]
    size: int
    modification_time: int
    data_change: bool = True
    stats: str | None = None
    tags: Mapping[str, str] | None = None
    deletion_vector: Mapping[str, Any] | None = None
    base_row_id: int | None = None
    default_row_commit_version: int | None = None

    @classmethod
    def from_json(cls, d: JSON) -> Add:
        return cls(
            path=_text(d, "path", "add"),
            partition_values=_string_map(d.get("partitionValues"), "add.partitionValues"),
            size=int(d.get("size") or 0),
            modification_time=int(d.get("modificationTime") or 0),
            data_change=_optional(d, "dataChange", "add", bool, True) is not False,
            stats=_optional(d, "stats", "add", str),
            tags=as_map(d["tags"]) if d.get("tags") else None,
            deletion_vector=_optional(d, "deletionVector", "add", dict),
            base_row_id=d.get("baseRowId"),
            default_row_commit_version=d.get("defaultRowCommitVersion"),
        )

    def to_json(self) -> JSON:
        return {
            "add": _drop_none(
                {
                    "path": self.path,
                    "partitionValues": dict(self.partition_values),
                    "size": self.size,
                    "modificationTime": self.modification_time,
                    "dataChange": self.data_change,
                    "stats": self.stats,
                    "tags": dict(self.tags) if self.tags else None,
                    "deletionVector": dict(self.deletion_vector)
                    if self.deletion_vector else None,
                    "baseRowId": self.base_row_id,
                    "defaultRowCommitVersion": self.default_row_commit_version,
                }
            )
        }

    def parsed_stats(self) -> JSON | None:
        """The decoded `stats` JSON, or None when absent.

        Raises:
            CorruptLogError: the stats are not JSON, nest too deep, or a field
                lakeflow reads has the wrong type (naming the file and field).
        """
        if not self.stats:
            return None
        return _parse_stats(self.stats, self.path)

    def num_records(self) -> int | None:
        """`numRecords` from the stats, when the writer recorded it."""
        stats = self.parsed_stats()
        n = stats.get("numRecords") if stats else None
        return int(n) if n is not None else None

    def remove(self, deletion_timestamp: int, data_change: bool = True) -> Remove:
        """The `remove` action that retires this file."""
        return Remove(
            path=self.path,
            deletion_timestamp=deletion_timestamp,
            data_change=data_change,
            extended_file_metadata=True,
            partition_values=self.partition_values,
            size=self.size,
            stats=self.stats,
            tags=self.tags,
            deletion_vector=self.deletion_vector,  # the logical file is (path, DV)
        )


@dataclass(frozen=True)
class Remove:
    """A tombstone: a data file that is no longer part of the table."""

    path: str
    deletion_timestamp: int | None = None
    data_change: bool = True
    extended_file_metadata: bool | None = None
    partition_values: Mapping[str, str | None] | None = None
    size: int | None = None
    stats: str | None = None
    tags: Mapping[str, str] | None = None
    deletion_vector: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, d: JSON) -> Remove:
        pv = d.get("partitionValues")
        return cls(
            path=_text(d, "path", "remove"),
            deletion_timestamp=_optional(d, "deletionTimestamp", "remove", int),
            data_change=_optional(d, "dataChange", "remove", bool, True) is not False,
            extended_file_metadata=d.get("extendedFileMetadata"),
            partition_values=_string_map(pv, "remove.partitionValues") if pv is not None else None,
            size=_optional(d, "size", "remove", int),
            stats=_optional(d, "stats", "remove", str),
            tags=as_map(d["tags"]) if d.get("tags") else None,
            deletion_vector=_optional(d, "deletionVector", "remove", dict),
        )

    def to_json(self) -> JSON:
        return {
            "remove": _drop_none(
                {
                    "path": self.path,
                    "deletionTimestamp": self.deletion_timestamp,
                    "dataChange": self.data_change,
                    "extendedFileMetadata": self.extended_file_metadata,
                    "partitionValues": dict(self.partition_values)
                    if self.partition_values is not None else None,
                    "size": self.size,
                    "stats": self.stats,
                    "tags": dict(self.tags) if self.tags else None,
                    "deletionVector": dict(self.deletion_vector)
                    if self.deletion_vector else None,
                }
            )
        }


@dataclass(frozen=True)
class Txn:
    """An application transaction id: `app_id` has committed up to `version`."""

    app_id: str
    version: int
    last_updated: int | None = None

    @classmethod
    def from_json(cls, d: JSON) -> Txn:
        return cls(str(d["appId"]), int(d["version"]), d.get("lastUpdated"))

    def to_json(self) -> JSON:
        return {"txn": _drop_none({"appId": self.app_id, "version": self.version,
                                   "lastUpdated": self.last_updated})}


@dataclass(frozen=True)
class CommitInfo:
    """Free-form provenance of one commit; lakeflow reads a few well-known keys."""

    values: Mapping[str, Any]

    @classmethod
    def from_json(cls, d: JSON) -> CommitInfo:
        return cls(dict(d))

    def to_json(self) -> JSON:
        return {"commitInfo": dict(self.values)}

    @property
    def timestamp(self) -> int | None:
        """The commit time in ms: `inCommitTimestamp` when present, else `timestamp`."""
        for key in ("inCommitTimestamp", "timestamp"):
            value = self.values.get(key)
            if isinstance(value, int):
                return value
        return None


@dataclass(frozen=True)
class Cdc:
    """A change data file written alongside a commit (never part of a snapshot)."""

    path: str
    partition_values: Mapping[str, str | None]
    size: int
    data_change: bool = False
    tags: Mapping[str, str] | None = None

    @classmethod
    def from_json(cls, d: JSON) -> Cdc:
        return cls(
            path=_text(d, "path", "cdc"),
            partition_values=_string_map(d.get("partitionValues"), "cdc.partitionValues"),
            size=int(d.get("size") or 0),
            data_change=_optional(d, "dataChange", "cdc", bool, False) is True,
            tags=as_map(d["tags"]) if d.get("tags") else None,
        )

    def to_json(self) -> JSON:
        return {"cdc": _drop_none({"path": self.path,
                                   "partitionValues": dict(self.partition_values),
                                   "size": self.size, "dataChange": self.data_change,
                                   "tags": dict(self.tags) if self.tags else None})}


@dataclass(frozen=True)
class DomainMetadata:
    """Named configuration owned by a system or feature; read and kept."""

    domain: str
    configuration: str
    removed: bool = False

    @classmethod
    def from_json(cls, d: JSON) -> DomainMetadata:
        return cls(str(d["domain"]), str(d.get("configuration") or ""),
                   bool(d.get("removed", False)))

    def to_json(self) -> JSON:
        return {"domainMetadata": {"domain": self.domain, "configuration": self.configuration,
                                   "removed": self.removed}}


_STATS_MAPS = ("minValues", "maxValues", "nullCount")


def _parse_stats(text: str, path: str) -> JSON:
    """Decode an add's `stats` and check the types of the fields lakeflow reads."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CorruptLogError(
            f"the stats of data file {path} are not valid JSON ({type(e).__name__}: {str(e)[:80]}); "
            "the log entry that added it is damaged"
        ) from None
    if not isinstance(value, dict):
        raise CorruptLogError(f"the stats of data file {path} are {_shown(value)}, not a JSON object")
    n = value.get("numRecords")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise CorruptLogError(f"stats.numRecords of data file {path} is {_shown(n)}, not a row count")
    for key in _STATS_MAPS:
        if value.get(key) is not None and not isinstance(value[key], dict):
            raise CorruptLogError(f"stats.{key} of data file {path} is {_shown(value[key])}, not a JSON object")
    return value


Action = Union[Protocol, Metadata, Add, Remove, Txn, CommitInfo, Cdc, DomainMetadata]  # noqa: UP007 (py3.10 runtime alias)

_DECODERS: dict[str, Any] = {
    "protocol": Protocol.from_json,
    "metaData": Metadata.from_json,
    "add": Add.from_json,
    "remove": Remove.from_json,
    "txn": Txn.from_json,
    "commitInfo": CommitInfo.from_json,
    "cdc": Cdc.from_json,
    "domainMetadata": DomainMetadata.from_json,
}


def decode_action(obj: JSON) -> Action | None:
    """Decode one action object (`{"add": {...}}`); None for unknown action kinds."""
    for key, value in obj.items():
        decoder = _DECODERS.get(key)
        if decoder is not None and value is not None:
            action: Action = decoder(value)
            return action
    return None


def parse_commit(data: bytes, name: str) -> list[Action]:
    """Parse commit bytes into actions: JSON objects, one action each.

    Delta writes one action per line; some writers (DuckDB) pretty-print each action
    over several lines. Lines are tried first, and only a file they do not split into
    objects is read as a stream of objects.

    Raises:
        CorruptLogError: the file is not valid UTF-8 JSON objects or misses required fields.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptLogError(f"log entry {name} is not UTF-8: {e}") from e
    actions: list[Action] = []
    for lineno, obj in _json_objects(text, name):
        try:
            action = decode_action(obj)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise _not_an_action(name, lineno, e) from e
        if action is not None:
            actions.append(action)
    return actions


def _not_an_action(name: str, lineno: int, e: Exception) -> CorruptLogError:
    return CorruptLogError(
        f"log entry {name} line {lineno} is not a valid Delta action ({type(e).__name__}: {e}); "
        "the file is truncated or was not written by a Delta writer"
    )


def _json_objects(text: str, name: str) -> list[tuple[int, JSON]]:
    """The JSON objects of a commit, each with the line it starts on."""
    out: list[tuple[int, JSON]] = []
    # Split on "\n" only: str.splitlines would also split on U+2028 and other
    # separators that JSON strings may hold unescaped.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return _json_stream(text, name)  # an object spread over several lines
        if not isinstance(obj, dict):
            return _json_stream(text, name)  # e.g. a number on a line of its own
        out.append((lineno, obj))
    return out


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_stream(text: str, name: str) -> list[tuple[int, JSON]]:
    """JSON objects separated by whitespace, however many lines each spans."""
    decoder = json.JSONDecoder()
    out: list[tuple[int, JSON]] = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        lineno = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
            if not isinstance(obj, dict):
                raise ValueError(f"{_shown(obj)} is not a JSON object")
        except (ValueError, RecursionError) as e:
            raise _not_an_action(name, lineno, e) from e
        out.append((lineno, obj))
        pos = _skip_space(text, pos)
    return out


def _skip_space(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def encode_commit(actions: Iterable[Action]) -> bytes:
    """Serialize actions as newline-delimited JSON, one action per line."""
    lines = [json.dumps(a.to_json(), separators=(",", ":"), ensure_ascii=False)
             for a in actions]
    return ("\n".join(lines) + "\n").encode("utf-8")
