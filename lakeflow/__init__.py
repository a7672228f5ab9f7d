"""lakeflow: versioned tables as a flow of commits, stored as Delta Lake tables."""

from __future__ import annotations

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
from lakeflow.factory import DeclarationError, Project, SqlAssetError
from lakeflow.ops.maintenance import CompactResult, VacuumResult
from lakeflow.ops.merge import MergeResult
from lakeflow.ops.staged import StagedFiles, write_files
from lakeflow.snapshot import DataFile, Snapshot
from lakeflow.table import Commit, Table
from lakeflow.transaction import CommitResult, Transaction
from lakeflow.variant import variant_to_json
from lakeflow.version import __version__
from lakeflow.views import View

__all__ = [
    "AppendOnlyError",
    "Commit",
    "CommitChanges",
    "CommitConflictError",
    "CommitResult",
    "CompactResult",
    "ConstraintViolationError",
    "CorruptLogError",
    "DataFile",
    "DataFileNotFoundError",
    "DeclarationError",
    "Diff",
    "DiffSummary",
    "DuplicateKeyError",
    "InvalidArgumentError",
    "LakeflowError",
    "LateDataError",
    "LogGapError",
    "MergeResult",
    "Project",
    "SchemaMismatchError",
    "Snapshot",
    "SqlAssetError",
    "StagedFiles",
    "StorageError",
    "Table",
    "TableExistsError",
    "TableNotFoundError",
    "Transaction",
    "UnsupportedFeatureError",
    "VacuumResult",
    "VacuumedDataError",
    "VersionNotFoundError",
    "View",
    "__version__",
    "variant_to_json",
    "write_files",
]
