"""The log reader: commits and checkpoints with their caches, timestamps, states.

One `LogReader` per table handle. It loads the state at a version (from the
checkpoint pointer, else a listing), advances a state by probing for newer
commits instead of listing, and knows every commit's timestamp (recorded, or
the store's time when the recorded one is implausible). `head` is the newest
state it has loaded or committed: what the handle reads and writes on top of.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from lakeflow.actions import Action, Txn
from lakeflow.checkpoint import read_checkpoint_state
from lakeflow.errors import (
    CorruptLogError,
    InvalidArgumentError,
    LakeflowError,
    LogGapError,
    TableNotFoundError,
    VersionNotFoundError,
)
from lakeflow.log import (
    CLOCK_SKEW_TOLERANCE_MS,
    LOG_DIR,
    LogListing,
    TableState,
    bounded_timestamp,
    check_readable,
    commit_path,
    list_log,
    plan_segment,
    reachable_versions,
    read_commit,
    read_last_checkpoint,
    recorded_timestamp,
    replay,
)
from lakeflow.storage import Storage

VersionRef = int | dt.datetime | str  # a version, or an instant (latest commit at or before it)
_COMMIT_CACHE_SIZE = 4096
_CHECKPOINT_CACHE_SIZE = 4
_LOAD_ATTEMPTS = 3
_READ_THREADS = 16  # commit files read at once (round trips to an object store overlap)


def instant_ms(instant: dt.datetime | dt.date | str, what: str = "as_of") -> int:
    """An aware datetime or ISO-8601 string as ms since the epoch.

    Raises:
        InvalidArgumentError: not an instant with a time zone.
    """
    if isinstance(instant, str):
        try:
            instant = dt.datetime.fromisoformat(instant.replace("Z", "+00:00"))
        except ValueError as e:
            raise InvalidArgumentError(
                f"{what} {instant!r} is not an ISO-8601 instant such as 2024-05-01T12:00:00Z"
            ) from e
    if isinstance(instant, dt.datetime):
        if instant.tzinfo is None:
            raise InvalidArgumentError(
                f"{what} {instant!r} has no time zone; pass an aware datetime "
                "(e.g. datetime(..., tzinfo=timezone.utc)) or an ISO string ending in Z"
            )
        return int(instant.timestamp() * 1000)
    if isinstance(instant, dt.date):
        raise InvalidArgumentError(f"{what} needs an instant (datetime or ISO string), not a date")
    raise InvalidArgumentError(f"{what} must be a datetime or ISO string, got {type(instant).__name__}")


def from_ms(ms: int | None) -> dt.datetime | None:
    """Ms since the epoch as an aware UTC datetime (None stays None)."""
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


class LogReader:
    """Reads one table's log, caching commits, checkpoints and timestamps.

    Args:
        storage: the table's storage.
        storage_options: the options it was opened with (side tables reuse them).
    """

    def __init__(self, storage: Storage, storage_options: Mapping[str, Any] | None = None) -> None:
        self.storage = storage
        self.storage_options = storage_options
        self._commits: OrderedDict[int, list[Action]] = OrderedDict()
        self._timestamps: dict[int, int | None] = {}
        self._listing_mtimes: dict[int, int | None] = {}
        self._checkpoints: OrderedDict[int, TableState] = OrderedDict()
        self._checkpoint_files: dict[int, str] = {}  # version -> a file of the checkpoint read
        self._head: TableState | None = None
        # A log with a gap opens before it (time travel reads); the latest refuses (`refresh`).
        self._gap: LogGapError | None = None

    @property
    def uri(self) -> str:
        """The table URI."""
        return self.storage.uri

    # ---- the head: the newest state this reader has seen ---------------------------------

    @property
    def head(self) -> TableState:
        """The newest state loaded or committed through this reader (loaded on first use)."""
        if self._head is None:
            try:
                self._head = self.load(None)
            except LogGapError as e:
                self._gap = e
                self._head = self.load(e.last_readable)
        return self._head

    def observe(self, state: TableState) -> None:
        """Make `state` the head if it is newer (a commit through this reader)."""
        if self._head is None or state.version > self._head.version:
            self._head = state

    def refresh(self) -> TableState:
        """Read commits newer than the head (only those) and return the new head.

        When the head's own commit was cleaned up, the log moved on without it:
        the state is loaded afresh from the checkpoint pointer or a listing.

        Raises:
            CorruptLogError: the log no longer reaches the head's version.
            LogGapError: commits are missing before the latest (the head stays before them).
        """
        head = self.head
        # Probing cannot see a gap whose next commit is far ahead: a gapped log is listed.
        state = self.advance(head) if self._gap is None else None
        if state is None:
            state = self.load(None)
            self._gap = None
            if state.version < head.version:
                raise CorruptLogError(
                    f"the log of {self.uri} ends at version {state.version}, but this handle "
                    f"read version {head.version}: commit files were deleted")
        self._head = state
        return state

    # ---- commits and states --------------------------------------------------------------

    def read_commit(self, version: int) -> list[Action]:
        """The actions of commit `version` (cached).

        Raises:
            FileNotFoundError: the commit file does not exist.
        """
        actions = self._commits.get(version)
        if actions is None:
            actions = read_commit(self.storage, version)
            self._commits[version] = actions
            if len(self._commits) > _COMMIT_CACHE_SIZE:
                self._commits.popitem(last=False)
        return actions

    def read_commits(self, versions: Sequence[int]) -> list[tuple[int, list[Action]]]:
        """(version, actions) of each of `versions`, in order; those not cached read concurrently.

        On an object store each read is a round trip: a fresh open of a log without
        a checkpoint would otherwise wait for one GET per commit in turn.

        Raises:
            FileNotFoundError: a commit file does not exist.
        """
        missing = [v for v in versions if v not in self._commits]
        fetched: dict[int, list[Action]] = {}  # kept here: the cache may not hold them all
        if len(missing) > 1:
            with ThreadPoolExecutor(min(_READ_THREADS, len(missing))) as pool:
                fetched = dict(zip(missing, pool.map(lambda v: read_commit(self.storage, v), missing),
                                   strict=True))
            self._commits.update(fetched)
            while len(self._commits) > _COMMIT_CACHE_SIZE:
                self._commits.popitem(last=False)
        return [(v, fetched[v] if v in fetched else self.read_commit(v)) for v in versions]

    def forget_after(self, version: int) -> None:
        """Drop cached commits after `version` (winners read may be re-creations since withdrawn)."""
        for v in [v for v in self._commits if v > version]:
            del self._commits[v]

    def advance(self, state: TableState, until: int | None = None) -> TableState | None:
        """Replay the commits after `state` (up to `until`), probing instead of listing.

        Returns None when the log has moved past `state` and the commits after it
        were cleaned up, or a commit is missing while a later one exists: only a
        fresh load (checkpoint pointer, listing) catches up, or finds the gap.
        """
        new: list[tuple[int, list[Action]]] = []
        v = state.version + 1
        while until is None or v <= until:
            try:
                new.append((v, self.read_commit(v)))
            except FileNotFoundError:
                # The commit the state was read at is gone: cleanup ran past it, and only a
                # fresh load is sure to follow the live log (see docs/reliability.md).
                if not self._still_there(state.version):
                    return None
                if not self.storage.exists(commit_path(v + 1)):
                    break
                # v + 1 exists: v was committed meanwhile (read it once more), or cleanup
                # is deleting it, or the log has a gap: a fresh load tells, bounded.
                try:
                    new.append((v, self.read_commit(v)))
                except FileNotFoundError:
                    return None
            v += 1
        if not new:
            return state
        state = replay(state, new)
        check_readable(state.protocol, state.metadata)
        return state

    def _still_there(self, version: int) -> bool:
        """Whether the log still has the commit of `version`, or the checkpoint of it this reader read."""
        if self.storage.exists(commit_path(version)):
            return True
        name = self._checkpoint_files.get(version)  # tables whose checkpoint outlived its commit
        return name is not None and self.storage.exists(f"{LOG_DIR}/{name}")

    def _checkpoint_state(self, version: int, names: Sequence[str]) -> TableState:
        """The replayed checkpoint at `version`; cached, since time travel and diffs reuse it."""
        state = self._checkpoints.get(version)
        if state is None:
            state = read_checkpoint_state(self.storage, names, version)
            self._checkpoints[version] = state
            self._checkpoint_files[version] = names[0]
            if len(self._checkpoints) > _CHECKPOINT_CACHE_SIZE:
                self._checkpoints.popitem(last=False)
        return state

    def load(self, version: int | None) -> TableState:
        """The state at `version` (None: the latest), from the checkpoint pointer or a listing.

        A file that vanishes meanwhile (a concurrent log cleanup) makes it start over,
        a bounded number of times. The head does not change.

        Raises:
            TableNotFoundError: there is no Delta log.
            VersionNotFoundError: files kept vanishing, or `version` is not reachable.
        """
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                return self._load_once(version)
            except FileNotFoundError as e:
                if attempt == _LOAD_ATTEMPTS - 1:
                    raise VersionNotFoundError(
                        f"log files kept vanishing while reading {self.uri} (concurrent log "
                        f"cleanup?): {e}"
                    ) from e
        raise AssertionError("unreachable")

    def _load_once(self, version: int | None) -> TableState:
        last = read_last_checkpoint(self.storage)
        if last is not None and (version is None or last[0] <= version):
            try:
                state = self._checkpoint_state(last[0], last[1])
            except (FileNotFoundError, CorruptLogError):
                pass  # a stale pointer or a torn checkpoint: fall back to listing the log
            else:
                advanced = self.advance(state, version)  # None: the pointer is stale
                if advanced is not None and (version is None or advanced.version == version):
                    return advanced
        listing = list_log(self.storage)
        if listing.latest is None:
            detail = "it has no _delta_log commits" if self.storage.exists("") else "nothing exists there"
            raise TableNotFoundError(
                f"no Delta table at {self.uri}: {detail}; create one with "
                "lakeflow.Table.create(uri, schema)"
            )
        commits, base = self._plan(listing, version)
        state = replay(base, self.read_commits(commits))
        check_readable(state.protocol, state.metadata)
        self._listing_mtimes.update({v: info.mtime_ms for v, info in listing.commits.items()})
        return state

    def _plan(self, listing: LogListing, version: int | None) -> tuple[list[int], TableState | None]:
        """The commits that build `version`, and the checkpoint state they start from."""
        while True:
            checkpoint, commits = plan_segment(listing, version)
            if checkpoint is None:
                return commits, None
            try:
                return commits, self._checkpoint_state(checkpoint, listing.checkpoints[checkpoint])
            except CorruptLogError as e:
                # A torn checkpoint (a crash while writing it to a store without atomic
                # writes) is only a cache: plan again from the commits it summarises.
                listing = LogListing(listing.commits,
                                     {v: p for v, p in listing.checkpoints.items() if v != checkpoint})
                try:
                    plan_segment(listing, version)
                except LakeflowError:
                    raise e from None  # the commits it summarises are gone: it was no mere cache
                warnings.warn(f"ignoring the unreadable checkpoint at version {checkpoint}: {e}",
                              stacklevel=4)

    # ---- time ----------------------------------------------------------------------------

    def record_timestamp(self, version: int, timestamp_ms: int) -> None:
        """Remember the timestamp of a commit this reader wrote."""
        self._timestamps[version] = timestamp_ms

    def commit_ts(self, version: int) -> int | None:
        """The commit time of `version` in ms (None: its commit is gone)."""
        if version not in self._timestamps:
            try:
                actions = self.read_commit(version)
            except FileNotFoundError:
                return None
            self._timestamps[version] = recorded_timestamp(actions)
        recorded = self._timestamps[version]
        if recorded is not None and version not in self._listing_mtimes \
                and recorded > time.time() * 1000 + CLOCK_SKEW_TOLERANCE_MS:
            # Later than this clock: one of the two runs ahead, and the store's time decides.
            self._listing_mtimes.update({v: i.mtime_ms for v, i in list_log(self.storage).commits.items()})
            self._listing_mtimes.setdefault(version, None)
        mtime = self._listing_mtimes.get(version)
        if recorded is not None and mtime is not None and recorded > mtime + CLOCK_SKEW_TOLERANCE_MS:
            # Rare: an entry stamped before its recorded time. Is the stamp plausible?
            oldest = min(self._listing_mtimes)
            if oldest not in self._timestamps:
                self.commit_ts(oldest)  # reads and caches its recorded time
            return bounded_timestamp(version, recorded, mtime, self._timestamps.get(oldest))
        return recorded if recorded is not None else mtime

    def timeline(self) -> list[tuple[int, int]]:
        """(version, monotonic timestamp ms) for every version whose commit is readable."""
        listing = list_log(self.storage)
        self._listing_mtimes.update({v: i.mtime_ms for v, i in listing.commits.items()})
        out: list[tuple[int, int]] = []
        last = None
        for v in reachable_versions(listing):  # listed versions only: bounded by the log
            ts = self.commit_ts(v)
            if ts is None:
                continue
            # Clock skew between writers must not make time travel ambiguous.
            ts = ts if last is None else max(ts, last + 1)
            out.append((v, ts))
            last = ts
        return out

    def version_at(self, instant: dt.datetime | str) -> int:
        """The latest version committed at or before `instant`: as by `timeline()`, reading few commits.

        The timeline's time at a version is the largest of ts(j) + (commits from j to
        it) over the versions j up to it, so it is at or before `instant` unless some j
        pushes it past. A listed commit's time is never later than its store mtime plus
        the skew tolerance (`commit_ts` takes the mtime then), so most commits are
        cleared without being read; a binary search over the versions then reads only
        the commits near the instant (and any whose time has no such bound).

        Raises:
            VersionNotFoundError: `instant` is before the first commit.
            InvalidArgumentError: `instant` is not an aware datetime or ISO string.
        """
        target = instant_ms(instant)
        listing = list_log(self.storage)
        self._listing_mtimes.update({v: i.mtime_ms for v, i in listing.commits.items()})
        versions = reachable_versions(listing)
        bounds = self._time_bounds(listing, versions)
        lo, hi = -1, len(versions)  # the timeline is at or before target through lo, past it from hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._not_past(versions, bounds, mid, target) else (lo, mid)
        best = next((versions[p] for p in range(lo, -1, -1) if self.commit_ts(versions[p]) is not None), None)
        if best is None:
            first = next((t for _, t in self._first_time(versions)), None)
            raise VersionNotFoundError(
                f"no version of {self.uri} existed at {from_ms(target)}; the first commit "
                f"was at {from_ms(first)}"
            )
        return best

    def _first_time(self, versions: Sequence[int]) -> Iterator[tuple[int, int]]:
        """(version, time) of the versions with a readable commit time, oldest first, lazily."""
        for v in versions:
            ts = self.commit_ts(v)
            if ts is not None:
                yield v, ts

    def _time_bounds(self, listing: LogListing, versions: Sequence[int]) -> npt.NDArray[np.float64]:
        """Per version, a time `commit_ts` cannot exceed, known without a read (inf: read it).

        `commit_ts` takes the mtime for a recorded time past mtime + tolerance, unless the
        mtime is from before the oldest commit's recorded time (reset by an archiver).
        """
        oldest = min(self._listing_mtimes, default=None)
        if oldest is not None and oldest not in self._timestamps:
            self.commit_ts(oldest)  # reads and caches its recorded time
        first_ms = self._timestamps.get(oldest) if oldest is not None else None
        out = np.full(len(versions), np.inf)
        for p, v in enumerate(versions):
            info = listing.commits.get(v)
            mtime = info.mtime_ms if info is not None else None
            if v in self._timestamps:  # read before: its time is known
                known = self.commit_ts(v)
                out[p] = known if known is not None else np.inf
            elif mtime is not None and (first_ms is None or mtime + CLOCK_SKEW_TOLERANCE_MS >= first_ms):
                out[p] = mtime + CLOCK_SKEW_TOLERANCE_MS
        return out

    def _not_past(self, versions: Sequence[int], bounds: npt.NDArray[np.float64], p: int, target: int) -> bool:
        """Whether the timeline at position `p` (or the last timed version before it) is at or before `target`.

        Reads only the commits whose bound cannot clear them, newest first, stopping at one
        that pushes the time past `target`.
        """
        positions = np.arange(p + 1)
        unsure = np.flatnonzero(~(bounds[:p + 1] + (p - positions) <= target))
        untimed = 0  # versions after the one looked at, up to p, without a time (not in the timeline)
        for j in unsure[::-1]:
            ts = self.commit_ts(versions[j])
            if ts is None:
                untimed += 1
            elif ts + (p - j) - untimed > target:
                return False
        return True

    def resolve(self, value: VersionRef | None, what: str) -> int:
        """The version `value` names (None: the latest, read now); -1 is the empty table before 0.

        The head is refreshed only when `value` is past it.

        Raises:
            InvalidArgumentError: `value` is no version or instant.
            VersionNotFoundError: the version does not exist.
        """
        if value is None:
            return self.refresh().version
        if isinstance(value, (dt.datetime, str)):
            return self.version_at(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(
                f"{what} must be a version number, an aware datetime or an ISO-8601 string, "
                f"got {value!r}"
            )
        latest = self.head.version
        if value > latest:
            latest = self.refresh().version
        if value < -1 or value > latest:
            raise VersionNotFoundError(
                f"{what}={value} does not exist; {self.uri} has versions 0..{latest} "
                "(and -1, the empty table before version 0)"
            )
        return value

    def txn_version_holding(self, state: TableState, app_id: str, txn_version: int) -> int:
        """The version up to `state` whose commit recorded (app_id, >= txn_version); latest if unknown."""
        found = state.version
        for v in range(state.version, -1, -1):
            try:
                actions = self.read_commit(v)
            except FileNotFoundError:
                break
            hit = [a for a in actions if isinstance(a, Txn) and a.app_id == app_id]
            if hit:
                if hit[0].version < txn_version:
                    break
                found = v
        return found


__all__ = ["LogReader", "VersionRef", "from_ms", "instant_ms"]
