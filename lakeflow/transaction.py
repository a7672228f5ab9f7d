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
from typing import Any

from lakeflow import __version__
from lakeflow.actions import Action, Add, CommitInfo, Metadata, Protocol, Remove, Txn, encode_commit
from lakeflow.errors import CommitConflictError, StorageError
from lakeflow.log import CLOCK_SKEW_TOLERANCE_MS, TableState, commit_path, list_log, replay
from lakeflow.storage import Storage

DEFAULT_MAX_ATTEMPTS = 1000
_VERIFY_ATTEMPTS = 3  # the commit is written: a transient failure of its check is retried


@dataclass(frozen=True)
class Transaction:
    """What a writer wants to commit, and what it read to decide it.

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
    """The result of a commit: the version written (or found), and the state after it."""

    version: int
    state: TableState
    timestamp_ms: int
    deduplicated: bool = False


def uses_in_commit_timestamps(state: TableState) -> bool:
    """Whether the In-Commit Timestamps feature is active on the table."""
    return (
        state.metadata.configuration.get("delta.enableInCommitTimestamps", "").lower() == "true"
        and "inCommitTimestamp" in (state.protocol.writer_features or ())
    )


def conflict_reason(tx: Transaction, winner: Sequence[Action]) -> str | None:
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


def _commit_info(tx: Transaction, state: TableState, read_version: int, timestamp_ms: int,
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


def commit(
    storage: Storage,
    state: TableState,
    tx: Transaction,
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
        # commitInfo first: required with In-Commit Timestamps, harmless otherwise.
        actions: list[Action] = [_commit_info(tx, state, read_version, ts, txn_id)]
        actions += [_not_before(a, ts) for a in tx.actions]
        if tx.txn is not None:
            actions.append(Txn(tx.txn.app_id, tx.txn.version, ts))
        data = encode_commit(actions)
        try:
            storage.write_if_absent(commit_path(version), data)
        except FileExistsError:
            try:
                winner, winner_ts = read_winner(version)
            except FileNotFoundError:
                raise _cleaned_under(tx.operation, version) from None
            # The winner extends the state only while the state is still on the live log: a
            # cleaned-up predecessor means the winner may be a re-creation being withdrawn.
            if version > 0 and not storage.exists(commit_path(version - 1)):
                raise _cleaned_under(tx.operation, version) from None
            if _written_by(winner, txn_id):
                _check_not_recreated(storage, version, tx.operation)
                return CommitOutcome(version, replay(state, [(version, actions)]), ts)
            if _txn_satisfied(tx.txn, winner):
                state = replay(state, [(version, winner)])
                return CommitOutcome(version, state, winner_ts or ts, deduplicated=True)
            reason = conflict_reason(tx, winner)
            if reason is not None:
                raise CommitConflictError(
                    f"{tx.operation} based on version {state.version} conflicts with version "
                    f"{version}: {reason}; re-read the table and retry"
                ) from None
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
