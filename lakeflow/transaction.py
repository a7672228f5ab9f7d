"""Optimistic commits: staged actions plus a record of what was read.

A commit tries version N = read version + 1 with an atomic put-if-absent. On
losing the race it reads the winning commits and checks them against what the
transaction read: a winner that removed a file it read, changed the schema or
protocol, or (for predicates) added files that could match, is a logical
conflict, as is a winner that moved an application's `txn` version the
transaction read (a view refresh folds from it). Otherwise the transaction is replayed at the next version, a bounded
number of times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lakeflow.actions import Action, Add, CommitInfo, Metadata, Protocol, Remove, Txn, encode_commit
from lakeflow.checkpoint import write_checkpoint
from lakeflow.config import TableConfig
from lakeflow.constraints import settle
from lakeflow.errors import CommitConflictError, InvalidArgumentError, LakeflowError, StorageError
from lakeflow.log import CLOCK_SKEW_TOLERANCE_MS, TableState, check_writable, commit_path, list_log, replay
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.storage import Storage
from lakeflow.version import __version__

T = TypeVar("T")
DEFAULT_MAX_ATTEMPTS = 1000
_VERIFY_ATTEMPTS = 3  # the commit is written: a transient failure of its check is retried


@dataclass(frozen=True)
class CommitRequest:
    """What a writer wants to commit, and what it read to decide it (a `Transaction`'s data).

    Attributes:
        actions: the file/metadata actions to commit (no commitInfo).
        operation: the Delta operation name (WRITE, MERGE, DELETE, ...).
        parameters: operationParameters for commitInfo.
        metrics: operationMetrics for commitInfo.
        read_files: paths whose content the decision depended on.
        read_predicate: a test for files added by winners that the transaction
            would have had to read (None: it read no predicate).
        read_txns: application ids whose `txn` version the decision depended on:
            a winner that writes a `txn` for one of them conflicts, whatever
            files either read.
        txn: the application transaction recorded for exactly-once appends.
        extra_info: more commitInfo fields (lakeflow's own, user metadata).
    """

    actions: Sequence[Action]
    operation: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    read_files: frozenset[str] = frozenset()
    read_predicate: Callable[[Add], bool] | None = None
    read_txns: frozenset[str] = frozenset()
    txn: Txn | None = None
    extra_info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blind_append(self) -> bool:
        """Adds only, having read nothing: never conflicts with other appends."""
        return not self.read_files and self.read_predicate is None and not self.read_txns and all(
            isinstance(a, Add) for a in self.actions)


@dataclass(frozen=True)
class CommitOutcome:
    """What `commit_request` did: the version written (or found), and the state after it."""

    version: int
    state: TableState
    timestamp_ms: int
    deduplicated: bool = False


def uses_in_commit_timestamps(state: TableState) -> bool:
    """Whether the In-Commit Timestamps feature is active on the table."""
    return (TableConfig.of(state.metadata).in_commit_timestamps
            and "inCommitTimestamp" in (state.protocol.writer_features or ()))


def conflict_reason(tx: CommitRequest, winner: Sequence[Action]) -> str | None:
    """Why `winner` invalidates `tx`, or None when `tx` can be replayed on top of it."""
    for a in winner:
        if isinstance(a, (Metadata, Protocol)):
            return "a concurrent commit changed the table schema, configuration or protocol"
        if isinstance(a, Remove) and a.path in tx.read_files:
            return f"a concurrent commit removed the file {a.path} that this operation read"
        if isinstance(a, Add) and a.data_change and tx.read_predicate is not None \
                and tx.read_predicate(a):
            return f"a concurrent commit added the file {a.path}, which this operation's predicate could match"
        if isinstance(a, Txn) and a.app_id in tx.read_txns:
            return f"a concurrent commit moved the transaction version of {a.app_id!r} that this operation read"
    return None


def _txn_satisfied(txn: Txn | None, winner: Sequence[Action]) -> bool:
    return txn is not None and any(
        isinstance(a, Txn) and a.app_id == txn.app_id and a.version >= txn.version for a in winner)


def _written_by(winner: Sequence[Action], txn_id: str) -> bool:
    """Whether commit `winner` is this transaction's own (its commitInfo carries `txn_id`)."""
    return any(isinstance(a, CommitInfo) and a.values.get("txnId") == txn_id for a in winner)


def _commit_info(tx: CommitRequest, state: TableState, read_version: int, timestamp_ms: int,
                 txn_id: str) -> CommitInfo:
    values: dict[str, Any] = {"timestamp": timestamp_ms}
    if uses_in_commit_timestamps(state):
        values["inCommitTimestamp"] = timestamp_ms
    values.update({
        "operation": tx.operation,
        "operationParameters": dict(tx.parameters),
        "operationMetrics": dict(tx.metrics),
        "isBlindAppend": tx.blind_append,
        "engineInfo": f"lakeflow/{__version__}",
        "clientVersion": f"lakeflow-{__version__}",
    })
    if read_version >= 0:  # what the writer read, even when replayed past winners
        values["readVersion"] = read_version
    values.update(tx.extra_info)
    values["txnId"] = txn_id
    return CommitInfo(values)


def _commit_time(now: int, last_timestamp_ms: int | None) -> int:
    """This commit's time: the clock, but after the previous commit (timestamps are monotonic).

    `last_timestamp_ms` is already bounded by the store's time (`log.bounded_timestamp`),
    so a writer whose clock ran ahead does not push every later commit ahead.
    """
    if last_timestamp_ms is None or now > last_timestamp_ms:
        return now
    if last_timestamp_ms > now + CLOCK_SKEW_TOLERANCE_MS:
        behind = dt.timedelta(milliseconds=last_timestamp_ms - now)
        warnings.warn(f"this machine's clock is {behind} behind the table's last commit; "
                      "the new commit is stamped just after it (fix the clock, e.g. with NTP)",
                      stacklevel=4)
    return last_timestamp_ms + 1


def _not_before(action: Action, ts: int) -> Action:
    """A remove stamped by a clock running behind the commit's time is stamped at the commit.

    Vacuum keeps removed files for the retention after `deletionTimestamp`: a stamp from
    a clock a year behind would let any vacuum (lakeflow's or another engine's) delete
    them at once.
    """
    if isinstance(action, Remove) and (action.deletion_timestamp or 0) < ts - CLOCK_SKEW_TOLERANCE_MS:
        return dataclasses.replace(action, deletion_timestamp=ts)
    return action


def _previous_exists(storage: Storage, version: int) -> bool:
    """Whether commit `version - 1` exists, retrying transient store failures."""
    for attempt in range(_VERIFY_ATTEMPTS):
        try:
            return storage.exists(commit_path(version - 1))
        except StorageError as e:
            if attempt == _VERIFY_ATTEMPTS - 1:
                raise StorageError(
                    f"version {version} was written, but checking that it did not re-create "
                    f"a cleaned-up version failed ({e}); re-open the table to see whether the "
                    "commit is visible (an exactly-once append can simply be retried)"
                ) from e.__cause__
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _cleaned_under(operation: str, version: int) -> CommitConflictError:
    return CommitConflictError(
        f"{operation} lost the race for version {version} while log cleanup removed the "
        "versions around it; re-read the table and retry")


def _check_not_recreated(storage: Storage, version: int, operation: str) -> None:
    """Prove that the commit just created at `version` is new, not a cleaned-up one re-created.

    Put-if-absent only proves the file was absent, and log cleanup deletes old
    commits. Cleanup deletes a commit only below a checkpoint it keeps, and
    deletes commits oldest first: if `version - 1` is still there after the write,
    `version` had never been cleaned up. Else a listing decides: with no
    checkpoint after `version`, it cannot have been cleaned up either.

    Raises:
        CommitConflictError: the log had been cleaned up past `version` (the file
            just written is deleted again: a handle at `version - 1` must not read it).
        StorageError: the store kept failing the check.
    """
    if version == 0 or _previous_exists(storage, version):
        return
    beyond = [v for v in list_log(storage).checkpoints if v > version]
    if not beyond:
        return
    storage.delete(commit_path(version))  # no reader needs it: a checkpoint is after it
    raise CommitConflictError(
        f"{operation} created version {version}, but the log had been cleaned up past version "
        f"{version - 1} (it has a checkpoint at version {max(beyond)}): the commit would "
        "re-create a cleaned-up version that no reader sees, so it was withdrawn; re-open "
        "the table and retry"
    )


def _commit_actions(tx: CommitRequest, state: TableState, read_version: int, ts: int,
                    txn_id: str) -> list[Action]:
    """The actions of one attempt at committing `tx` on `state`, stamped `ts`."""
    # commitInfo first: required with In-Commit Timestamps, harmless otherwise.
    actions: list[Action] = [_commit_info(tx, state, read_version, ts, txn_id)]
    actions += [_not_before(a, ts) for a in tx.actions]
    if tx.txn is not None:
        actions.append(Txn(tx.txn.app_id, tx.txn.version, ts))
    return actions


def _read_live_winner(storage: Storage, tx: CommitRequest, version: int,
                      read_winner: Callable[[int], tuple[Sequence[Action], int | None]]
                      ) -> tuple[Sequence[Action], int | None]:
    """The commit that took `version`, provided the log around it is still live.

    Raises:
        CommitConflictError: log cleanup removed the winner or its predecessor.
    """
    try:
        winner, winner_ts = read_winner(version)
    except FileNotFoundError:
        raise _cleaned_under(tx.operation, version) from None
    # The winner extends the state only while the state is still on the live log: a
    # cleaned-up predecessor means the winner may be a re-creation being withdrawn.
    if version > 0 and not storage.exists(commit_path(version - 1)):
        raise _cleaned_under(tx.operation, version) from None
    return winner, winner_ts


def _settled_by(storage: Storage, state: TableState, tx: CommitRequest, version: int,
                winner: Sequence[Action], winner_ts: int | None, mine: Sequence[Action], ts: int,
                txn_id: str) -> CommitOutcome | None:
    """The outcome when the winner at `version` ends the transaction; None: replay past it.

    The winner is this transaction's own commit (a retried put), or already holds
    its application transaction; otherwise a logical conflict is refused.

    Raises:
        CommitConflictError: the winner conflicts with what `tx` read.
    """
    if _written_by(winner, txn_id):
        _check_not_recreated(storage, version, tx.operation)
        return CommitOutcome(version, replay(state, [(version, mine)]), ts)
    if _txn_satisfied(tx.txn, winner):
        return CommitOutcome(version, replay(state, [(version, winner)]), winner_ts or ts, deduplicated=True)
    reason = conflict_reason(tx, winner)
    if reason is not None:
        raise CommitConflictError(
            f"{tx.operation} based on version {state.version} conflicts with version "
            f"{version}: {reason}; re-read the table and retry"
        ) from None
    return None


def commit_request(
    storage: Storage,
    state: TableState,
    tx: CommitRequest,
    *,
    last_timestamp_ms: int | None,
    read_winner: Callable[[int], tuple[Sequence[Action], int | None]],
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    clock: Callable[[], float] = time.time,
) -> CommitOutcome:
    """Commit `tx` on top of `state`, replaying it past concurrent winners.

    Args:
        storage: the table's storage.
        state: the state the transaction was prepared against.
        tx: the transaction.
        last_timestamp_ms: the commit timestamp of `state.version`.
        read_winner: reads commit N, returning its actions and timestamp.
        max_attempts: how many versions to try before giving up.
        clock: time source (seconds), for tests.

    Raises:
        CommitConflictError: a winner conflicts logically, or attempts ran out.
    """
    # Identifies this transaction's commit: a store SDK that retries a conditional put
    # whose reply was lost gets "already exists" for the commit it just wrote.
    txn_id = str(uuid.uuid4())
    read_version = state.version
    for attempt in range(max_attempts):
        version = state.version + 1
        ts = _commit_time(int(clock() * 1000), last_timestamp_ms)
        actions = _commit_actions(tx, state, read_version, ts, txn_id)
        data = encode_commit(actions)
        try:
            storage.write_if_absent(commit_path(version), data)
        except FileExistsError:
            winner, winner_ts = _read_live_winner(storage, tx, version, read_winner)
            outcome = _settled_by(storage, state, tx, version, winner, winner_ts, actions, ts, txn_id)
            if outcome is not None:
                return outcome
            state = replay(state, [(version, winner)])
            last_timestamp_ms = winner_ts
            if attempt >= 3:
                time.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))
            continue
        _check_not_recreated(storage, version, tx.operation)
        return CommitOutcome(version, replay(state, [(version, actions)]), ts)
    raise CommitConflictError(
        f"{tx.operation} lost the race for a new version {max_attempts} times in a row; "
        "too many concurrent writers, retry later"
    )


def retrying(snapshot: Snapshot, retries: int, attempt: Callable[[Snapshot], T]) -> T:
    """Run `attempt` on `snapshot`; after a conflict, on the latest snapshot, `retries` more times.

    The one retry helper of operations that read before they write (merge,
    delete, keyed appends, view refreshes): each attempt reads and decides anew.

    Raises:
        InvalidArgumentError: `retries` is not a non-negative int.
        CommitConflictError: the last attempt conflicted too.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"retries must be a non-negative int, got {retries!r}")
    for _ in range(retries):
        try:
            return attempt(snapshot)
        except CommitConflictError:
            snapshot = snapshot.latest()
    return attempt(snapshot)


@dataclass(frozen=True)
class CommitResult:
    """A committed transaction.

    Attributes:
        snapshot: the table right after the commit.
        version: the version committed; with `deduplicated`, the version of the
            earlier commit that already recorded the same (app_id, txn_version).
        deduplicated: nothing was written: the application transaction was there.
    """

    snapshot: Snapshot
    version: int
    deduplicated: bool = False


class Transaction:
    """A commit being built, bound to the snapshot it read (optimistic concurrency).

    Collect actions with `add` / `remove`, say what the decision read with `read`,
    then `commit()`; or use it as a context manager, which commits on a clean
    exit and commits nothing when the block raises::

        with table.transaction("WRITE") as tx:
            tx.add(*adds)

    Args:
        snapshot: the snapshot the transaction read.
        operation: the Delta operation name (WRITE, MERGE, DELETE, ...).
        parameters: operationParameters for the commitInfo.
    """

    def __init__(self, snapshot: Snapshot, operation: str, parameters: Mapping[str, Any] | None = None) -> None:
        if not isinstance(operation, str) or not operation:
            raise InvalidArgumentError(f"operation must be a non-empty str, got {operation!r}")
        self._snapshot = snapshot
        self._request = CommitRequest(actions=(), operation=operation, parameters=dict(parameters or {}))
        self._result: CommitResult | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot this transaction read."""
        return self._snapshot

    @property
    def request(self) -> CommitRequest:
        """What the transaction will commit, and what it read, as data."""
        return self._request

    @property
    def result(self) -> CommitResult | None:
        """The outcome once committed (None before)."""
        return self._result

    def _update(self, **changes: Any) -> Transaction:
        if self._result is not None:
            raise InvalidArgumentError("this transaction is already committed; start a new one")
        self._request = dataclasses.replace(self._request, **changes)
        return self

    def rebased(self, snapshot: Snapshot) -> Transaction:
        """A copy of this (uncommitted) transaction bound to `snapshot`, without its reads."""
        tx = Transaction(snapshot, self._request.operation)
        tx._request = dataclasses.replace(self._request, read_files=frozenset(), read_predicate=None,
                                          read_txns=frozenset())
        return tx

    def add(self, *actions: Action) -> Transaction:
        """Stage actions: `Add`, `Remove`, `Cdc`, a new `Metadata` or `Protocol`, ..."""
        return self._update(actions=(*self._request.actions, *actions))

    def remove(self, *files: DataFile, data_change: bool = True) -> Transaction:
        """Stage the removal of files of the snapshot (and record that it read them)."""
        now = int(time.time() * 1000)
        self.add(*(f.add.remove(now, data_change=data_change) for f in files))
        return self.read(files=[f.path for f in files])

    def read(self, files: Sequence[str] = (), predicate: Callable[[Add], bool] | None = None,
             txns: Sequence[str] = ()) -> Transaction:
        """Record what the decision read: file paths, a predicate over files, app ids' txn versions.

        A concurrent commit that removed a read file, added a file the predicate
        matches, or moved a read app id's version makes this commit conflict.
        """
        read = self._request
        tests = [p for p in (read.read_predicate, predicate) if p is not None]
        return self._update(read_files=read.read_files | frozenset(files),
                            read_predicate=_any_of(tests) if tests else None,
                            read_txns=read.read_txns | frozenset(txns))

    def set_txn(self, app_id: str, version: int) -> Transaction:
        """Record the application transaction (exactly-once: a commit already holding it wins)."""
        return self._update(txn=Txn(app_id, version))

    def info(self, metrics: Mapping[str, Any] | None = None, **values: Any) -> Transaction:
        """Add operationMetrics and other commitInfo fields."""
        return self._update(metrics={**self._request.metrics, **(metrics or {})},
                            extra_info={**self._request.extra_info, **values})

    def commit(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> CommitResult:
        """Commit on top of the snapshot, replayed past concurrent commits that do not conflict.

        Raises:
            UnsupportedFeatureError: the table has writer features lakeflow does not implement.
            CommitConflictError: a concurrent commit conflicts, or attempts ran out.
        """
        snap = self._update()._snapshot
        log, state = snap.log, snap.state
        check_writable(state.protocol, state.metadata)
        request = dataclasses.replace(self._request, actions=settle(state, self._request.actions))
        try:
            outcome = commit_request(
                log.storage, state, request, last_timestamp_ms=log.commit_ts(state.version),
                read_winner=lambda v: (log.read_commit(v), log.commit_ts(v)), max_attempts=max_attempts)
        except CommitConflictError:
            log.forget_after(state.version)  # winners read may be re-creations since withdrawn
            raise
        log.record_timestamp(outcome.version, outcome.timestamp_ms)
        log.observe(outcome.state)
        self._result = CommitResult(Snapshot(log, outcome.state), outcome.version, outcome.deduplicated)
        if not outcome.deduplicated:
            _maybe_checkpoint(self._result.snapshot)
        return self._result

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is None and self._result is None:
            self.commit()


def _any_of(tests: Sequence[Callable[[Add], bool]]) -> Callable[[Add], bool]:
    return tests[0] if len(tests) == 1 else lambda a: any(t(a) for t in tests)


def _maybe_checkpoint(snap: Snapshot) -> None:
    """Write a checkpoint at every `delta.checkpointInterval`-th version (a failure only warns)."""
    interval = snap.config.checkpoint_interval
    if interval > 0 and snap.version > 0 and snap.version % interval == 0:
        try:
            write_checkpoint(snap.storage, snap.state)
        except (OSError, LakeflowError) as e:
            # The commit is durable; a missing checkpoint only slows readers down.
            warnings.warn(f"checkpoint at version {snap.version} failed: {e}", stacklevel=4)


__all__ = ["CommitOutcome", "CommitRequest", "CommitResult", "Transaction", "commit_request",
           "conflict_reason", "retrying"]
