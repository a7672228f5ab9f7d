"""Event time, watermarks and late data.

A table may name an event-time column and a window (`Table.create(...,
event_time="ts", window="1d")`). An append or merge may carry a *watermark*, an
aware datetime meaning "all events before T have arrived". The table's
watermark is the largest one seen so far. A row whose event time is below the
table's watermark when it arrives is *late*; the lateness policy (the
`lakeflow.late` table property, or `late=` per call) accepts it (default),
rejects the whole write with `LateDataError`, or quarantines the late rows in a
side table while the on-time rows commit.

Where the watermark lives: in the commitInfo of every lakeflow commit on an
event-time table (`lakeflow.watermark`, with the version it was computed from
in `lakeflow.watermarkBase`). commitInfo costs one JSON field per commit, needs
no protocol upgrade, keeps deltalake and Spark able to append, and never makes
two writers conflict. A metaData change per commit would make every
watermarked append conflict with every concurrent writer, and a `txn` entry
would take part in exactly-once deduplication. Checkpoints drop commitInfo, but
they never delete commits: the table watermark is found by reading back from
the newest commit to the first one lakeflow wrote, usually one commit. Only if
log cleanup removed every commit that recorded it is the watermark forgotten
(the next `watermark=` sets it again).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.actions import Action, CommitInfo
from lakeflow.config import DEFAULT_WINDOW, check_policy
from lakeflow.errors import (
    InvalidArgumentError,
    LateDataError,
    SchemaMismatchError,
    TableNotFoundError,
)
from lakeflow.log_reader import LogReader
from lakeflow.snapshot import Snapshot
from lakeflow.storage import open_storage
from lakeflow.write import conform

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
QUARANTINE_DIR = "_lakeflow_quarantine"
QUARANTINE_VERSION = "_lakeflow_version"
QUARANTINE_WATERMARK = "_lakeflow_watermark"

WATERMARK_KEY = "lakeflow.watermark"
BASE_KEY = "lakeflow.watermarkBase"
STALE_KEY = "lakeflow.staleWatermark"
LATE_ROWS_KEY = "lakeflow.lateRows"
WINDOWS_KEY = "lakeflow.revisedWindows"
TIME_INFO_KEYS = frozenset({WATERMARK_KEY, BASE_KEY, STALE_KEY, LATE_ROWS_KEY, WINDOWS_KEY})

_UNITS_US = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000}
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")


def window_micros(window: str | dt.timedelta) -> int:
    """The length of a window such as "1d", "6h", "15m", "30s" (or a timedelta) in µs.

    Raises:
        InvalidArgumentError: not a positive whole number of seconds.
    """
    if isinstance(window, dt.timedelta):
        us = window // dt.timedelta(microseconds=1)
        if us <= 0 or us % 1_000_000:
            raise InvalidArgumentError(f"window must be a positive whole number of seconds, got {window}")
        return us
    m = _WINDOW_RE.match(window) if isinstance(window, str) else None
    if m is None or int(m.group(1)) == 0:
        raise InvalidArgumentError(
            f"window must look like '1d', '6h', '15m' or '30s' (or be a timedelta), got {window!r}")
    return int(m.group(1)) * _UNITS_US[m.group(2)]


def format_window(window: str | dt.timedelta) -> str:
    """The canonical spelling of a window: its largest whole unit ("24h" -> "1d").

    Raises:
        InvalidArgumentError: the window is invalid.
    """
    us = window_micros(window)
    unit = next(u for u, size in _UNITS_US.items() if us % size == 0)
    return f"{us // _UNITS_US[unit]}{unit}"


def to_micros(instant: Any, what: str = "watermark") -> int:
    """An aware datetime as µs since the epoch.

    Raises:
        InvalidArgumentError: `instant` is not a datetime with a time zone.
    """
    if not isinstance(instant, dt.datetime):
        raise InvalidArgumentError(
            f"{what} must be a datetime with a time zone, got {type(instant).__name__} {instant!r}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidArgumentError(
            f"{what} {instant!r} has no time zone; pass e.g. datetime(..., tzinfo=timezone.utc)")
    return (instant - EPOCH) // dt.timedelta(microseconds=1)


def from_micros(us: int) -> dt.datetime:
    """µs since the epoch as an aware UTC datetime."""
    return EPOCH + dt.timedelta(microseconds=us)


def window_start(instant: dt.datetime | dt.date | str, window_us: int) -> dt.datetime:
    """The start of the epoch-aligned UTC window holding `instant`.

    A date stands for its midnight UTC; a string is parsed as ISO-8601.

    Raises:
        InvalidArgumentError: the instant is not an aware datetime, date or ISO string.
    """
    if isinstance(instant, str):
        try:
            instant = dt.datetime.fromisoformat(instant.replace("Z", "+00:00"))
        except ValueError as e:
            raise InvalidArgumentError(f"{instant!r} is not an ISO-8601 date or instant") from e
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
    if not isinstance(instant, dt.datetime) and isinstance(instant, dt.date):
        instant = dt.datetime(instant.year, instant.month, instant.day, tzinfo=UTC)
    us = to_micros(instant, "window start")
    return from_micros(us // window_us * window_us)


def _iso(us: int) -> str:
    return from_micros(us).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_iso(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def event_micros(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Event times as int64 µs since the epoch (naive timestamps and dates read as UTC)."""
    values = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    t = values.type
    if pa.types.is_timestamp(t):
        return pc.cast(values, pa.timestamp("us", t.tz), safe=False).cast(pa.int64())
    if pa.types.is_date32(t):
        return pc.multiply(values.cast(pa.int32()).cast(pa.int64()), _UNITS_US["d"])
    if pa.types.is_date64(t):
        return pc.multiply(values.cast(pa.int64()), 1000)
    raise SchemaMismatchError(f"the event-time column must be a timestamp or date, not {t}")


@dataclass(frozen=True)
class TimeInfo:
    """What one commit recorded about event time (from its commitInfo)."""

    late_rows: int | None
    revised_windows: tuple[dt.datetime, ...]
    watermark: dt.datetime | None


def read_time_info(info: Mapping[str, Any]) -> TimeInfo:
    """Decode the lakeflow event-time fields of a commitInfo (absent: None / empty)."""
    late = info.get(LATE_ROWS_KEY)
    windows = info.get(WINDOWS_KEY)
    parsed = [_parse_iso(w) for w in windows] if isinstance(windows, list) else []
    return TimeInfo(
        late_rows=late if isinstance(late, int) else None,
        revised_windows=tuple(w for w in parsed if w is not None),
        watermark=_parse_iso(info.get(WATERMARK_KEY)),
    )


def read_watermark(read_commit: Callable[[int], Sequence[Action]], version: int) -> dt.datetime | None:
    """The table watermark at `version`: the largest watermark any commit up to it carried.

    Reads back from `version`. A lakeflow commit records the watermark it knew
    as of its base version, which covers every commit up to that base, so the
    walk stops there; commits by other engines are stepped over. A missing
    (cleaned-up) commit ends the walk.
    """
    best: int | None = None
    v = version
    floor = -1
    while v > floor:
        try:
            actions = read_commit(v)
        except FileNotFoundError:
            break
        for a in actions:
            if isinstance(a, CommitInfo) and WATERMARK_KEY in a.values:
                mark = _parse_iso(a.values[WATERMARK_KEY])
                if mark is not None:
                    us = to_micros(mark)
                    best = us if best is None else max(best, us)
                base = a.values.get(BASE_KEY)
                if isinstance(base, int):
                    floor = max(floor, base)
        v -= 1
    return None if best is None else from_micros(best)


@dataclass(frozen=True)
class EventClock:
    """A table's event-time column, window and watermark, as one write sees them.

    Attributes:
        column: the event-time column.
        window_us: the window length in µs.
        watermark_us: the table watermark at `base_version` (None: none yet).
        given_us: the watermark passed with this write (None: none).
        base_version: the version the write read.
        policy: accept, reject or quarantine.
    """

    column: str
    window_us: int
    watermark_us: int | None
    given_us: int | None
    base_version: int
    policy: str

    @classmethod
    def of(cls, snapshot: Snapshot, watermark: Any = None, late: str | None = None) -> EventClock | None:
        """The clock of the table at `snapshot` for one write; None when it has no event time.

        Raises:
            InvalidArgumentError: a bad watermark or policy, or either one given
                for a table without an event-time column.
        """
        check_policy(late)
        given = None if watermark is None else to_micros(watermark)
        config = snapshot.config
        if config.event_time is None:
            if watermark is not None or late is not None:
                raise InvalidArgumentError(
                    "watermark= and late= need a table with an event-time column; create it "
                    "with Table.create(..., event_time='column')")
            return None
        policy = late or check_policy(config.late, "table property lakeflow.late")
        mark = read_watermark(snapshot.log.read_commit, snapshot.version)
        return cls(config.event_time, window_micros(config.window or DEFAULT_WINDOW),
                   None if mark is None else to_micros(mark), given, snapshot.version,
                   policy or "accept")

    def late(self, rows: pa.Table) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Which rows are late: event time below the table watermark (null: never)."""
        if self.watermark_us is None or self.column not in rows.column_names:
            return np.zeros(rows.num_rows, dtype=bool)
        mask = pc.fill_null(pc.less(event_micros(rows.column(self.column)), self.watermark_us), False)
        return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)

    def windows(self, rows: pa.Table, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> set[int]:
        """Start (µs) of the windows holding the masked rows' event times."""
        if not mask.any():
            return set()
        us = event_micros(rows.column(self.column).filter(pa.array(mask))).to_numpy()
        return set(np.unique(np.floor_divide(us, self.window_us) * self.window_us).tolist())

    def earliest(self, rows: pa.Table, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> dt.datetime:
        """The earliest event time among the masked rows."""
        us = event_micros(rows.column(self.column).filter(pa.array(mask)))
        return from_micros(int(pc.min(us).as_py()))

    def refuse(self, count: int, earliest: dt.datetime, what: str) -> LateDataError:
        """The error for a write the reject policy refuses."""
        assert self.watermark_us is not None
        return LateDataError(
            f"{count} {what} behind the table watermark {from_micros(self.watermark_us)} "
            f"(earliest event time {earliest}); the lateness policy is 'reject', nothing "
            "was written. Pass late='accept' or late='quarantine' to take them")

    @property
    def advances(self) -> bool:
        """Whether this write moves the table watermark forward."""
        return self.given_us is not None and (self.watermark_us is None
                                              or self.given_us > self.watermark_us)

    @property
    def next_watermark(self) -> dt.datetime | None:
        """The table watermark after this write."""
        if self.advances:
            assert self.given_us is not None
            return from_micros(self.given_us)
        return None if self.watermark_us is None else from_micros(self.watermark_us)

    def commit_info(self, late_rows: int, windows: Iterable[int]) -> dict[str, Any]:
        """The commitInfo fields recording this write's event-time effects."""
        mark = self.next_watermark
        info: dict[str, Any] = {
            WATERMARK_KEY: None if mark is None else _iso(to_micros(mark)),
            BASE_KEY: self.base_version,
            LATE_ROWS_KEY: late_rows,
            WINDOWS_KEY: [_iso(w) for w in sorted(windows)],
        }
        if self.given_us is not None and not self.advances and self.given_us != self.watermark_us:
            info[STALE_KEY] = _iso(self.given_us)  # moved backwards: ignored, but kept on record
        return info


QuarantineTarget = Union[LogReader, str]  # noqa: UP007 (a runtime alias); a table's log, or a URI (created on first use)


@dataclass(frozen=True)
class Quarantine:
    """Late rows held back from a write, and the table they go to."""

    rows: pa.Table
    target: QuarantineTarget
    watermark: dt.datetime

    def tagged(self, version: int) -> pa.Table:
        """The rows as the quarantine table stores them, for the main commit at `version`."""
        return tag(self.rows, version, self.watermark)


def open_target(source: LogReader, target: QuarantineTarget) -> LogReader | None:
    """The log of the quarantine table (opened with the source's storage options); None if absent."""
    if isinstance(target, LogReader):
        return target
    log = LogReader(open_storage(target, source.storage_options), source.storage_options)
    try:
        log.head  # noqa: B018 -- loads it
    except TableNotFoundError:
        return None
    return log


def tag(rows: pa.Table, version: int, watermark: dt.datetime) -> pa.Table:
    """`rows` with the quarantine columns: the main commit's version and the watermark."""
    n = rows.num_rows
    return rows.append_column(QUARANTINE_VERSION, pa.array([version] * n, pa.int64())).append_column(
        QUARANTINE_WATERMARK, pa.array([watermark] * n, pa.timestamp("us", "UTC")))


def quarantine_for(snapshot: Snapshot, rows: pa.Table, clock: EventClock,
                   target: QuarantineTarget | None) -> Quarantine:
    """Where late `rows` go; checks an existing table's schema before anything is written.

    Raises:
        SchemaMismatchError: the quarantine table cannot hold the rows.
    """
    assert clock.watermark_us is not None
    mark = from_micros(clock.watermark_us)
    dest = target if target is not None else f"{snapshot.log.uri.rstrip('/')}/{QUARANTINE_DIR}"
    existing = open_target(snapshot.log, dest)
    if existing is not None:
        conform(tag(rows.slice(0, 0), 0, mark), Snapshot(existing, existing.head).schema)
    return Quarantine(rows, dest, mark)


@dataclass(frozen=True)
class Arrival:
    """An append's rows split by the lateness policy, and what the commit records."""

    rows: pa.Table
    info: Mapping[str, Any]
    must_commit: bool
    quarantine: Quarantine | None = None


def arrive(snapshot: Snapshot, rows: pa.Table, watermark: Any, late: str | None,
           quarantine: QuarantineTarget | None) -> Arrival:
    """Judge appended rows against the table watermark and apply the policy.

    Raises:
        LateDataError: late rows under the reject policy.
        InvalidArgumentError: a bad watermark, policy or quarantine argument.
    """
    clock = EventClock.of(snapshot, watermark, late)
    check_quarantine_arg(clock, quarantine)
    if clock is None:
        return Arrival(rows, {}, False)
    mask = clock.late(rows)
    held = None
    if mask.any():
        if clock.policy == "reject":
            raise clock.refuse(int(mask.sum()), clock.earliest(rows, mask), "rows are")
        if clock.policy == "quarantine":
            held = quarantine_for(snapshot, rows.filter(pa.array(mask)), clock, quarantine)
            rows = rows.filter(pa.array(~mask))
            mask = np.zeros(rows.num_rows, dtype=bool)
    info = clock.commit_info(int(mask.sum()), clock.windows(rows, mask))
    return Arrival(rows, info, clock.advances, held)


def check_quarantine_arg(clock: EventClock | None, quarantine: QuarantineTarget | None) -> None:
    """Refuse `quarantine=` unless the write quarantines late rows.

    Raises:
        InvalidArgumentError: `quarantine=` given with another policy.
    """
    if quarantine is not None and (clock is None or clock.policy != "quarantine"):
        raise InvalidArgumentError("quarantine= is only used with the 'quarantine' lateness policy")


__all__ = [
    "TIME_INFO_KEYS",
    "Arrival",
    "EventClock",
    "Quarantine",
    "QuarantineTarget",
    "arrive",
    "check_policy",
    "quarantine_for",
    "TimeInfo",
    "format_window",
    "read_time_info",
    "read_watermark",
    "window_start",
]
