"""The data factory: declared assets, landing folders ingested exactly once, derived tables kept current."""

from lakeflow.factory.declarations import Asset, DeclarationError, project_json_schema
from lakeflow.factory.derived import SqlAssetError
from lakeflow.factory.ingest import IngestedFile
from lakeflow.factory.project import AssetStatus, Project, RebuildResult, RunResult

__all__ = ["Asset", "AssetStatus", "DeclarationError", "IngestedFile", "Project", "RebuildResult", "RunResult",
           "SqlAssetError", "project_json_schema"]
