"""The table history: one `Commit` per log entry, newest first, with its event-time record."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lakeflow.actions import Action, CommitInfo, Txn
from lakeflow.errors import InvalidArgumentError
from lakeflow.late import read_time_info
from lakeflow.log_reader import LogReader, from_ms


@dataclass(frozen=True)
class Commit:
    """One entry of the table history."""

    version: int
    timestamp: dt.datetime | None
    operation: str | None
    parameters: Mapping[str, Any]
    metrics: Mapping[str, Any]
    app_id: str | None = None
    txn_version: int | None = None
    engine: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    late_rows: int | None = None
    revised_windows: tuple[dt.datetime, ...] = ()
    watermark: dt.datetime | None = None


def _entry(version: int, timestamp_ms: int | None, actions: list[Action]) -> Commit:
    info: dict[str, Any] = {}
    txn = None
    for a in actions:
        if isinstance(a, CommitInfo):
            info = dict(a.values)
        elif isinstance(a, Txn):
            txn = a
    return Commit(
        version=version,
        timestamp=from_ms(timestamp_ms),
        operation=info.get("operation"),
        parameters=info.get("operationParameters") or {},
        metrics=info.get("operationMetrics") or {},
        app_id=txn.app_id if txn else None,
        txn_version=txn.version if txn else None,
        engine=info.get("engineInfo"),
        info=info,
        **vars(read_time_info(info)),
    )


def history(log: LogReader, latest: int, limit: int | None = None) -> list[Commit]:
    """The commits up to version `latest`, newest first, while their log entries exist.

    Raises:
        InvalidArgumentError: `limit` is negative.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be a non-negative int or None, got {limit!r}")
    out: list[Commit] = []
    for v in range(latest, -1, -1):
        if limit is not None and len(out) >= limit:
            break
        try:
            actions = log.read_commit(v)
        except FileNotFoundError:
            break
        out.append(_entry(v, log.commit_ts(v), actions))
    return out


__all__ = ["Commit", "history"]
