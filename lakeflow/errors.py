"""The lakeflow error tree: every failure a user can act on is one of these."""

from __future__ import annotations


class LakeflowError(Exception):
    """Base class of every error lakeflow raises on purpose."""


class TableNotFoundError(LakeflowError):
    """No Delta table (no `_delta_log` commits) exists at the given URI."""


class TableExistsError(LakeflowError):
    """`Table.create` was asked to create a table where one already exists."""


class SchemaMismatchError(LakeflowError):
    """Input data or arguments do not fit the table schema."""


class DuplicateKeyError(SchemaMismatchError):
    """Rows that must be told apart by a key share a key value."""


class ConstraintViolationError(SchemaMismatchError):
    """Rows break a rule the table declares (invariant, CHECK constraint, generated column)."""


class AppendOnlyError(LakeflowError):
    """A write would change or remove rows of a table with `delta.appendOnly=true`."""


class CommitConflictError(LakeflowError):
    """A concurrent writer won, and this commit cannot be replayed on top of it."""


class VersionNotFoundError(LakeflowError):
    """The requested version or instant does not exist in the log."""


class UnsupportedFeatureError(LakeflowError):
    """The table uses a Delta feature lakeflow does not implement yet."""


class CorruptLogError(LakeflowError):
    """A log entry or checkpoint cannot be parsed, or points outside the table."""


class LogGapError(CorruptLogError):
    """Commit files are missing in the middle of the log and no checkpoint covers them.

    The versions before the gap stay readable by time travel; the latest and every
    version from the gap on are not (until the missing commits are restored).

    Attributes:
        missing: the first missing versions (up to five).
        last_readable: the newest version before the gap.
    """

    def __init__(self, message: str, missing: tuple[int, ...], last_readable: int) -> None:
        super().__init__(message)
        self.missing = missing
        self.last_readable = last_readable


class LateDataError(LakeflowError):
    """Rows arrived behind the table's watermark and the policy refuses them."""


class StorageError(LakeflowError):
    """The storage backend failed, or cannot give the guarantees a write needs."""


class DataFileNotFoundError(StorageError):
    """A data file the log references is missing (vacuumed, or deleted by hand)."""


class VacuumedDataError(DataFileNotFoundError, VersionNotFoundError):
    """The data of a range of versions is gone: files only those versions use were vacuumed.

    Both a missing data file and a version that can no longer be read, so either
    `except` catches it.
    """


class InvalidArgumentError(LakeflowError, ValueError):
    """An argument has the wrong type or value."""


__all__ = [
    "AppendOnlyError",
    "CommitConflictError",
    "ConstraintViolationError",
    "CorruptLogError",
    "DataFileNotFoundError",
    "DuplicateKeyError",
    "InvalidArgumentError",
    "LakeflowError",
    "LateDataError",
    "LogGapError",
    "SchemaMismatchError",
    "StorageError",
    "TableExistsError",
    "TableNotFoundError",
    "UnsupportedFeatureError",
    "VacuumedDataError",
    "VersionNotFoundError",
]
