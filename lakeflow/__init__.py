"""lakeflow: versioned tables as a flow of commits, stored as Delta Lake tables."""

from __future__ import annotations

__version__ = "0.1.0"

from lakeflow.diff import CommitChanges, Diff, DiffSummary
from lakeflow.errors import (
    AppendOnlyError,
    CommitConflictError,
    ConstraintViolationError,
    CorruptLogError,
    DataFileNotFoundError,
    DuplicateKeyError,
    InvalidArgumentError,
    LakeflowError,
    LateDataError,
    LogGapError,
    SchemaMismatchError,
    StorageError,
    TableExistsError,
    TableNotFoundError,
    UnsupportedFeatureError,
    VacuumedDataError,
    VersionNotFoundError,
)
from lakeflow.merge import MergeResult
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.table import Commit, Table
from lakeflow.views import View

__all__ = [
    "AppendOnlyError",
    "Commit",
    "CommitChanges",
    "CommitConflictError",
    "ConstraintViolationError",
    "CorruptLogError",
    "DataFile",
    "DataFileNotFoundError",
    "Diff",
    "DiffSummary",
    "DuplicateKeyError",
    "InvalidArgumentError",
    "LakeflowError",
    "LateDataError",
    "LogGapError",
    "MergeResult",
    "SchemaMismatchError",
    "Snapshot",
    "StorageError",
    "Table",
    "TableExistsError",
    "TableNotFoundError",
    "UnsupportedFeatureError",
    "VacuumedDataError",
    "VersionNotFoundError",
    "View",
    "__version__",
]
