"""Asset declarations: `lakeflow.yaml` and `assets/<name>.yaml`, validated with pydantic.

One model for both forms. A bad declaration raises `DeclarationError` naming
the file, the line and the field; `project_json_schema()` is the JSON Schema
editors use (published as `docs/lakeflow-project.schema.json`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lakeflow.config import LatePolicy
from lakeflow.errors import InvalidArgumentError
from lakeflow.late import window_micros
from lakeflow.types import parse_type

Format = Literal["csv", "parquet", "ndjson"]
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROJECT_FILE = "lakeflow.yaml"
ASSETS_DIR = "assets"


class DeclarationError(InvalidArgumentError):
    """A project declaration is invalid; the message names the file, line and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class IngestSpec(_Model):
    """How files in the landing folder are read."""

    format: Format = "csv"
    pattern: str | None = Field(None, description="file name glob (default: *.<format>)")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options (e.g. delimiter)")
    watermark_lag: str | None = Field(
        None, description="e.g. 1h: each file's commit moves the watermark to its newest event time minus this "
                          "(assets with event_time); rows behind it in later files are late")

    @field_validator("watermark_lag")
    @classmethod
    def _lag(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                window_micros(value)
            except InvalidArgumentError as e:
                raise ValueError(str(e)) from e
        return value

    @property
    def glob(self) -> str:
        """The file name pattern, defaulting to the format's extension."""
        return self.pattern or {"csv": "*.csv", "parquet": "*.parquet", "ndjson": "*.ndjson"}[self.format]


class ViewSpec(_Model):
    """An incremental aggregate (see docs/views.md)."""

    group_by: list[str] = Field(default_factory=list)
    window: str | None = None
    aggregates: dict[str, str | list[str]] = Field(
        description="output -> 'count' or [column, function] with function sum|count|mean|min|max")


class Asset(_Model):
    """One data asset: ingested from a landing folder, or derived from another asset."""

    name: str = Field("", description="set from the mapping key or file name")
    description: str | None = None
    schema_: dict[str, str] | None = Field(None, alias="schema", description="column -> type")
    infer: bool = False
    key: list[str] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=list)
    event_time: str | None = None
    window: str | None = None
    late: LatePolicy | None = None
    ingest: IngestSpec | None = None
    properties: dict[str, str] = Field(default_factory=dict)
    from_: str | None = Field(None, alias="from", description="the source asset of a derived asset")
    view: ViewSpec | None = None
    sql: str | None = None

    @field_validator("schema_")
    @classmethod
    def _types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, text in (value or {}).items():
            try:
                parse_type(text)
            except ValueError as e:
                raise ValueError(f"column {column!r}: {e}") from e
        return value

    @model_validator(mode="after")
    def _kind(self) -> Asset:
        if self.from_ is None:
            if self.view is not None or self.sql is not None:
                raise ValueError("view: and sql: need from: <source asset>")
            if (self.schema_ is None) == (not self.infer):
                raise ValueError("an ingested asset needs exactly one of schema: or infer: true")
            if self.ingest is not None and self.ingest.watermark_lag is not None and self.event_time is None:
                raise ValueError("ingest.watermark_lag needs event_time:")
            return self
        if (self.view is None) == (self.sql is None):
            raise ValueError("a derived asset needs exactly one of view: or sql:")
        ingest_only = [f for f in ("schema_", "ingest", "key", "partition_by", "event_time", "window", "late")
                       if getattr(self, f) not in (None, [], False)]
        if ingest_only or self.infer:
            names = [f.rstrip("_") for f in ingest_only] + (["infer"] if self.infer else [])
            raise ValueError(f"{', '.join(names)}: only for ingested assets (this one is derived from:)")
        return self

    @property
    def derived(self) -> bool:
        """Whether the asset is derived from another one."""
        return self.from_ is not None

    @property
    def arrow_schema(self) -> pa.Schema | None:
        """The declared schema as Arrow (None: inferred)."""
        if self.schema_ is None:
            return None
        return pa.schema([pa.field(c, parse_type(t)) for c, t in self.schema_.items()])

    @property
    def reader(self) -> IngestSpec:
        """How the asset's landing files are read."""
        return self.ingest or IngestSpec.model_validate({})


class ProjectConfig(_Model):
    """`lakeflow.yaml`: where tables and landing folders are, and assets declared inline."""

    tables: str = "tables/"
    landing: str = "ingest/landing/"
    archive: str = "ingest/archive/"
    assets: dict[str, Asset] = Field(default_factory=dict)


def project_json_schema() -> dict[str, Any]:
    """The JSON Schema of `lakeflow.yaml` (assets files follow its `Asset` definition)."""
    return ProjectConfig.model_json_schema(by_alias=True)


# ---- loading with line numbers ------------------------------------------------------------

def _node_line(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The line (1-based) of the YAML node at pydantic's error location `loc`, or its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise DeclarationError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from e
    except OSError as e:
        raise DeclarationError(f"cannot read {path}: {e}") from e


def _error(path: Path, node: yaml.Node | None, e: ValidationError,
           prefix: Sequence[str | int] = ()) -> DeclarationError:
    first = e.errors()[0]
    loc = [*prefix, *first["loc"]]
    field = ".".join(str(p) for p in loc if p not in ("function-after[_kind()]",)) or "(top level)"
    line = _node_line(node, loc)
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return DeclarationError(f"{path}:{line}: {field}: {first['msg']}{more}")


def _asset(path: Path, raw: Any, node: yaml.Node | None, name: str, prefix: Sequence[str]) -> Asset:
    if not NAME.match(name):
        raise DeclarationError(f"{path}:{_node_line(node, prefix)}: asset name {name!r} must be a word "
                               "(letters, digits, _; usable as a SQL table name)")
    if not isinstance(raw, Mapping):
        raise DeclarationError(f"{path}:{_node_line(node, prefix)}: asset {name!r} must be a mapping")
    try:
        return Asset.model_validate({**raw, "name": name})
    except ValidationError as e:
        raise _error(path, node, e, prefix) from None


def load_project(root: Path) -> tuple[ProjectConfig, dict[str, Path]]:
    """The project at `root`, and the file each asset was declared in.

    Raises:
        DeclarationError: a file is not valid YAML, or a declaration is invalid
            or declared twice.
    """
    main = root / PROJECT_FILE
    raw, node = _parse(main) if main.exists() else ({}, None)
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise DeclarationError(f"{main}:1: the project file must be a mapping")
    inline = raw.get("assets") or {}
    try:
        config = ProjectConfig.model_validate({**raw, "assets": {}})
    except ValidationError as e:
        raise _error(main, node, e) from None
    if not isinstance(inline, Mapping):
        raise DeclarationError(f"{main}:{_node_line(node, ['assets'])}: assets: must be a mapping of name -> asset")
    assets = {n: _asset(main, a, node, str(n), ["assets", str(n)]) for n, a in inline.items()}
    files = dict.fromkeys(assets, main)
    for path in sorted((root / ASSETS_DIR).glob("*.yaml")) + sorted((root / ASSETS_DIR).glob("*.yml")):
        name = path.stem
        if name in assets:
            raise DeclarationError(f"{path}:1: asset {name!r} is also declared in {files[name]}")
        body, body_node = _parse(path)
        assets[name] = _asset(path, body or {}, body_node, name, [])
        files[name] = path
    return config.model_copy(update={"assets": assets}), files


__all__ = ["Asset", "DeclarationError", "IngestSpec", "ProjectConfig", "ViewSpec", "load_project",
           "project_json_schema"]
