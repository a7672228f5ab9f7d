"""Every table property lakeflow reads (`delta.*`, `lakeflow.*`), typed, with its default.

`TableConfig.of(metadata)` decodes a table's `configuration` once; code reads
the typed fields, never the raw strings. Unknown keys are kept in `raw`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from lakeflow.actions import Metadata
from lakeflow.errors import InvalidArgumentError

LatePolicy = Literal["accept", "reject", "quarantine"]
LATE_POLICIES: tuple[LatePolicy, ...] = ("accept", "reject", "quarantine")
# How a write treats input columns the table lacks: refuse them (None) or add them.
SchemaMode = Literal["merge"]

KEY = "lakeflow.key"
EVENT_TIME = "lakeflow.eventTime"
WINDOW = "lakeflow.window"
LATE = "lakeflow.late"
VIEW = "lakeflow.view"
# Application ids of the commits that keep a derived table current from its source (a view, a
# SQL asset); the txn records the source version the table reflects.
VIEW_APP_PREFIX = "lakeflow.view/"
DERIVED_APP_PREFIX = "derive/"
CHANGE_DATA_FEED = "delta.enableChangeDataFeed"
IN_COMMIT_TIMESTAMPS = "delta.enableInCommitTimestamps"
CHECKPOINT_INTERVAL = "delta.checkpointInterval"
LOG_RETENTION = "delta.logRetentionDuration"
DELETED_FILE_RETENTION = "delta.deletedFileRetentionDuration"
TARGET_FILE_SIZE = "delta.targetFileSize"
COLUMN_MAPPING_MODE = "delta.columnMapping.mode"
DELETION_VECTORS = "delta.enableDeletionVectors"
STATS_AS_STRUCT = "delta.checkpoint.writeStatsAsStruct"
STATS_AS_JSON = "delta.checkpoint.writeStatsAsJson"

DEFAULT_WINDOW = "1d"
DEFAULT_CHECKPOINT_INTERVAL = 100
DEFAULT_LOG_RETENTION_MS = 30 * 86_400_000  # Delta's default: interval 30 days
DEFAULT_DELETED_FILE_RETENTION_MS = 7 * 86_400_000  # interval 1 week
DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024

_UNITS_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000,
             "day": 86_400_000, "week": 7 * 86_400_000}


def parse_interval_ms(text: str, default: int) -> int:
    """Parse a Delta interval string such as `interval 7 days`; `default` when unparsable."""
    m = re.fullmatch(r"\s*(?:interval\s+)?(\d+)\s+([a-z]+?)s?\s*", text.lower())
    if not m or m.group(2) not in _UNITS_MS:
        return default
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def check_policy(late: str | None, what: str = "late") -> LatePolicy | None:
    """`late`, checked to be a lateness policy (None: not given).

    Raises:
        InvalidArgumentError: it is none of accept / reject / quarantine.
    """
    if late is None:
        return None
    for policy in LATE_POLICIES:
        if late == policy:
            return policy
    raise InvalidArgumentError(f"{what} must be one of {', '.join(LATE_POLICIES)}; got {late!r}")


def _flag(raw: Mapping[str, str], key: str) -> bool:
    return raw.get(key, "").lower() == "true"


def _int(raw: Mapping[str, str], key: str, default: int | None) -> int | None:
    try:
        return int(raw[key]) if raw.get(key) else default
    except ValueError:
        return default  # as Delta readers do: a malformed optional property is its default


def _interval(raw: Mapping[str, str], key: str, default: int) -> int:
    text = raw.get(key)
    return parse_interval_ms(text, default) if text else default


@dataclass(frozen=True)
class TableConfig:
    """A table's configuration, decoded.

    Attributes:
        key: the declared key columns (`lakeflow.key`, a JSON list; empty: none).
        event_time: the event-time column (`lakeflow.eventTime`).
        window: the event-time window late rows are reported by (`lakeflow.window`,
            "1d" when the table has an event time; None without one).
        late: the table's lateness policy as stored (`lakeflow.late`; None: accept);
            checked by `check_policy` where a write applies it, so a bad value
            never stops a read.
        change_data_feed: `delta.enableChangeDataFeed`.
        in_commit_timestamps: `delta.enableInCommitTimestamps`.
        checkpoint_interval: `delta.checkpointInterval` (default 100; 0 or less: never).
        log_retention_ms: `delta.logRetentionDuration` (default 30 days).
        deleted_file_retention_ms: `delta.deletedFileRetentionDuration` (default 1 week).
        target_file_size: `delta.targetFileSize` in bytes (None: unset; each
            operation has its default, e.g. `DEFAULT_TARGET_FILE_SIZE` for compaction).
        column_mapping_mode: `delta.columnMapping.mode` ("none", "name" or "id").
        deletion_vectors: `delta.enableDeletionVectors` (deletes mark rows instead of rewriting files).
        stats_as_struct: `delta.checkpoint.writeStatsAsStruct` (default false, as the protocol,
            Spark and delta-rs have it): checkpoints also hold typed `stats_parsed`.
        stats_as_json: `delta.checkpoint.writeStatsAsJson` (default true): checkpoints hold
            the JSON `stats`.
        raw: every property as stored.
    """

    key: tuple[str, ...]
    event_time: str | None
    window: str | None
    late: str | None
    change_data_feed: bool
    in_commit_timestamps: bool
    checkpoint_interval: int
    log_retention_ms: int
    deleted_file_retention_ms: int
    target_file_size: int | None
    column_mapping_mode: str
    deletion_vectors: bool
    stats_as_struct: bool
    stats_as_json: bool
    raw: Mapping[str, str]

    @classmethod
    def of(cls, metadata: Metadata) -> TableConfig:
        """Decode `metadata.configuration` (malformed optional values read as their defaults)."""
        raw = metadata.configuration
        key = raw.get(KEY)
        event_time = raw.get(EVENT_TIME)
        return cls(
            key=tuple(json.loads(key)) if key else (),
            event_time=event_time,
            window=raw.get(WINDOW, DEFAULT_WINDOW) if event_time is not None else None,
            late=raw.get(LATE),
            change_data_feed=_flag(raw, CHANGE_DATA_FEED),
            in_commit_timestamps=_flag(raw, IN_COMMIT_TIMESTAMPS),
            checkpoint_interval=_int(raw, CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_INTERVAL) or 0,
            log_retention_ms=_interval(raw, LOG_RETENTION, DEFAULT_LOG_RETENTION_MS),
            deleted_file_retention_ms=_interval(raw, DELETED_FILE_RETENTION, DEFAULT_DELETED_FILE_RETENTION_MS),
            target_file_size=_int(raw, TARGET_FILE_SIZE, None),
            column_mapping_mode=raw.get(COLUMN_MAPPING_MODE, "none") or "none",
            deletion_vectors=_flag(raw, DELETION_VECTORS),
            stats_as_struct=_flag(raw, STATS_AS_STRUCT),
            stats_as_json=raw.get(STATS_AS_JSON, "true").lower() != "false",
            raw=raw,
        )


__all__ = ["LATE_POLICIES", "LatePolicy", "SchemaMode", "TableConfig", "check_policy", "parse_interval_ms"]
