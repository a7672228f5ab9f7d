"""Delta log actions as frozen dataclasses, with their JSON and checkpoint-row codecs.

Each action knows how to read itself from the decoded JSON object of a commit line
(or a checkpoint row, which has the same shape once maps are turned into dicts) and
how to write itself back. Unknown actions and unknown fields are ignored, as the
protocol requires of readers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from lakeflow.errors import CorruptLogError

JSON = dict[str, Any]


def as_map(value: Any) -> dict[str, Any]:
    """Normalize a map from JSON (dict) or from a checkpoint row (list of pairs)."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {k: v for k, v in value}


def _drop_none(d: JSON) -> JSON:
    return {k: v for k, v in d.items() if v is not None}


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
    """Table identity, schema, partitioning and configuration."""

    id: str
    schema_string: str
    partition_columns: tuple[str, ...] = ()
    configuration: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    format_provider: str = "parquet"
    format_options: Mapping[str, str] = field(default_factory=dict)
    created_time: int | None = None

    @classmethod
    def from_json(cls, d: JSON) -> Metadata:
        fmt = d.get("format") or {}
        if not isinstance(d["schemaString"], str):  # str(None) would become the schema "None"
            raise TypeError(f"metaData.schemaString must be a string, not {d['schemaString']!r}")
        return cls(
            id=str(d["id"]),
            schema_string=d["schemaString"],
            partition_columns=tuple(d.get("partitionColumns") or ()),
            configuration={k: v for k, v in as_map(d.get("configuration")).items()
                           if v is not None},
            name=d.get("name"),
            description=d.get("description"),
            format_provider=fmt.get("provider") or "parquet",
            format_options=as_map(fmt.get("options")),
            created_time=d.get("createdTime"),
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
                    "schemaString": self.schema_string,
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
            path=str(d["path"]),
            partition_values=as_map(d.get("partitionValues")),
            size=int(d.get("size") or 0),
            modification_time=int(d.get("modificationTime") or 0),
            data_change=bool(d.get("dataChange", True)),
            stats=d.get("stats"),
            tags=as_map(d["tags"]) if d.get("tags") else None,
            deletion_vector=d.get("deletionVector"),
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
        """The decoded `stats` JSON, or None when absent or unreadable."""
        if not self.stats:
            return None
        try:
            value = json.loads(self.stats)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

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
            path=str(d["path"]),
            deletion_timestamp=d.get("deletionTimestamp"),
            data_change=bool(d.get("dataChange", True)),
            extended_file_metadata=d.get("extendedFileMetadata"),
            partition_values=as_map(pv) if pv is not None else None,
            size=d.get("size"),
            stats=d.get("stats"),
            tags=as_map(d["tags"]) if d.get("tags") else None,
            deletion_vector=d.get("deletionVector"),
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
            path=str(d["path"]),
            partition_values=as_map(d.get("partitionValues")),
            size=int(d.get("size") or 0),
            data_change=bool(d.get("dataChange", False)),
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
    """Parse newline-delimited JSON commit bytes into actions.

    Raises:
        CorruptLogError: the file is not valid UTF-8 JSON lines or misses required fields.
    """
    actions: list[Action] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptLogError(f"log entry {name} is not UTF-8: {e}") from e
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("line is not a JSON object")
            action = decode_action(obj)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptLogError(
                f"log entry {name} line {lineno} is not a valid Delta action ({e}); "
                "the file is truncated or was not written by a Delta writer"
            ) from e
        if action is not None:
            actions.append(action)
    return actions


def encode_commit(actions: Iterable[Action]) -> bytes:
    """Serialize actions as newline-delimited JSON, one action per line."""
    lines = [json.dumps(a.to_json(), separators=(",", ":"), ensure_ascii=False)
             for a in actions]
    return ("\n".join(lines) + "\n").encode("utf-8")
