"""A project: a directory of declared assets, their tables, landing and archive folders.

`Project(dir)` mirrors the commands: `ingest`, `run`, `status`, `rebuild`,
`graph`, `validate`; `Project.init(dir)` writes a skeleton.
"""

from __future__ import annotations

import datetime as dt
import graphlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from lakeflow.errors import InvalidArgumentError, LakeflowError, TableNotFoundError
from lakeflow.factory.declarations import Asset, DeclarationError, load_project
from lakeflow.factory.derived import SqlAsset, SqlAssetError, check_sql, differences
from lakeflow.factory.ingest import REJECTED_DIR, Folder, IngestedFile, app_id, ingest_asset
from lakeflow.table import Table
from lakeflow.views import View

_SKELETON = {
    "lakeflow.yaml": "# A lakeflow project: see docs/factory.md\ntables: tables/\n"
                     "landing: ingest/landing/\narchive: ingest/archive/\n",
    "assets/payments.yaml": "description: card payments, one CSV file per day\n"
                            "schema:\n  id: int64\n  account: string\n  amount: double\n"
                            "  ts: timestamp[us, UTC]\nkey: [id]\nevent_time: ts\nwindow: 1d\n"
                            "ingest:\n  format: csv\n",
    "assets/balances.yaml": "from: payments\nview:\n  group_by: [account]\n  aggregates:\n"
                            "    balance: [amount, sum]\n    payments: count\n",
    "ingest/landing/payments/.keep": "",
}


@dataclass(frozen=True)
class AssetStatus:
    """Where one asset stands.

    Attributes:
        name: the asset.
        kind: "ingested", "view" or "sql".
        version: its table's version (None: not created yet).
        rows: rows at that version.
        watermark: the event-time watermark.
        last_ingest: when the last landing file was committed.
        pending: landing files not loaded yet.
        rejected: files in the landing folder's `_rejected/`.
        late_rows: late rows in the last 10 commits.
        source: the source asset of a derived asset.
        reflects: the source version it reflects.
        behind: source versions it has not folded in yet.
    """

    name: str
    kind: str
    version: int | None
    rows: int | None = None
    watermark: dt.datetime | None = None
    last_ingest: dt.datetime | None = None
    pending: int = 0
    rejected: int = 0
    late_rows: int = 0
    source: str | None = None
    reflects: int | None = None
    behind: int | None = None


@dataclass(frozen=True)
class RunResult:
    """What `run` did: files per ingested asset, source version reflected per derived asset."""

    ingested: Mapping[str, tuple[IngestedFile, ...]] = field(default_factory=dict)
    refreshed: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RebuildResult:
    """A derived asset recomputed from its source's log.

    Attributes:
        asset: the asset.
        source_version: the source version recomputed at.
        differences: rows the incremental state and the recomputation disagree on
            (with `verify`; None otherwise). Anything but 0 is a bug.
        version: the derived table's version after the rebuild (None with verify: nothing written).
    """

    asset: str
    source_version: int
    differences: int | None
    version: int | None


class Project:
    """A lakeflow project directory.

    Args:
        path: the project directory (holds `lakeflow.yaml` and/or `assets/`).
        storage_options: credentials for tables and folders on object stores.

    Raises:
        DeclarationError: a declaration is invalid (file, line and field named).
    """

    def __init__(self, path: str | Path, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise InvalidArgumentError(f"{self.root} is not a directory; create a project with `lakeflow init`")
        self.storage_options = storage_options
        self.config, self.files = load_project(self.root)
        self.order = self._order()
        # Handles kept across refreshes: a warm handle reads only the commits since its last
        # refresh, where opening one lists and replays the log (see `_warm`).
        self._tables: dict[str, Table] = {}
        self._views: dict[str, View] = {}

    @classmethod
    def init(cls, path: str | Path) -> Project:
        """Write a project skeleton (an ingested asset, a view over it, a landing folder) and open it.

        Raises:
            InvalidArgumentError: the directory already holds a project.
        """
        root = Path(path)
        if (root / "lakeflow.yaml").exists() or (root / "assets").exists():
            raise InvalidArgumentError(f"{root} already holds a lakeflow project")
        for name, text in _SKELETON.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text, encoding="utf-8")
        return cls(root)

    # ---- the declarations --------------------------------------------------------------------

    @property
    def assets(self) -> Mapping[str, Asset]:
        """Every declared asset by name."""
        return self.config.assets

    def _order(self) -> tuple[str, ...]:
        """Assets in dependency order (sources first); refuses unknown sources and cycles."""
        graph: dict[str, set[str]] = {}
        for name, a in self.assets.items():
            if a.from_ is not None and a.from_ not in self.assets:
                raise DeclarationError(f"{self.files[name]}: {name}.from names no asset: {a.from_!r}")
            if a.sql is not None and a.from_ is not None:
                try:
                    check_sql(a.sql, a.from_)
                except SqlAssetError as e:
                    raise DeclarationError(f"{self.files[name]}: {name}.sql: {e}") from e
            graph[name] = {a.from_} if a.from_ is not None else set()
        try:
            return tuple(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as e:
            raise DeclarationError(f"the assets' from: form a cycle: {' -> '.join(e.args[1])}") from e

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Each asset and the assets derived from it."""
        return {n: tuple(d for d in self.order if self.assets[d].from_ == n) for n in self.order}

    def mermaid(self) -> str:
        """The asset graph as a Mermaid flowchart."""
        lines = ["flowchart LR"]
        lines += [f"  {n}[{n}]" for n in self.order if not self.graph()[n] and self.assets[n].from_ is None]
        lines += [f"  {n} --> {d}" for n, ds in self.graph().items() for d in ds]
        return "\n".join(lines)

    def _path(self, base: str, *parts: str) -> str:
        root = base if "://" in base or base.startswith("/") else str(self.root / base)
        return "/".join([root.rstrip("/"), *parts])

    def table_uri(self, name: str) -> str:
        """Where the asset's table lives."""
        return self._path(self.config.tables, self._asset(name).name)

    def landing(self, name: str) -> Folder:
        """The asset's landing folder."""
        return Folder(self._path(self.config.landing, name), self.storage_options)

    def archive(self, name: str) -> Folder:
        """The asset's archive folder."""
        return Folder(self._path(self.config.archive, name), self.storage_options)

    def _asset(self, name: str) -> Asset:
        try:
            return self.assets[name]
        except KeyError:
            raise InvalidArgumentError(f"no asset {name!r}; the project declares {sorted(self.assets)}") from None

    def table(self, name: str) -> Table:
        """The asset's table handle.

        Raises:
            TableNotFoundError: not created yet (ingest or run first).
        """
        return Table(self.table_uri(name), self.storage_options)

    def _warm(self, name: str) -> Table:
        """The asset's table through the handle this project keeps, refreshed.

        A handle whose refresh fails (the table was deleted, its log cleaned up
        past it) is dropped and the table opened afresh.

        Raises:
            TableNotFoundError: not created yet.
        """
        handle = self._tables.get(name)
        if handle is not None:
            try:
                handle.refresh()
                return handle
            except LakeflowError:
                del self._tables[name]
        handle = self._tables[name] = self.table(name)
        return handle

    # ---- ingest ------------------------------------------------------------------------------

    def check_table(self, name: str) -> None:
        """Refuse an ingested asset whose table lacks a column its declaration names.

        A column renamed or dropped on the table (`rename_column`, `drop_columns`)
        would make every landing file fail to load.

        Raises:
            DeclarationError: naming the declaration file and the columns.
        """
        declared = self._asset(name).arrow_schema
        if declared is None:  # inferred, or a derived asset
            return
        try:
            names = set(self._warm(name).schema.names)  # the handle the run goes on with
        except TableNotFoundError:
            return
        missing = [c for c in declared.names if c not in names]
        if missing:
            raise DeclarationError(
                f"{self.files[name]}: {name}.schema declares {missing}, which its table {self.table_uri(name)} "
                f"lacks (it has {sorted(names)}): a column was renamed or dropped on the table; declare the "
                "table's columns")

    def _ingested_table(self, asset: Asset, schema: pa.Schema | None) -> Table:
        try:
            return self.table(asset.name)
        except TableNotFoundError:
            declared = asset.arrow_schema
            return Table.create(self.table_uri(asset.name), declared if declared is not None else schema,
                                partition_by=asset.partition_by, key=asset.key, event_time=asset.event_time,
                                window=asset.window, storage_options=self.storage_options,
                                properties={**asset.properties, **({"lakeflow.late": asset.late} if asset.late
                                                                  else {})},
                                description=asset.description)

    def ingest(self, assets: str | Sequence[str] | None = None,
               on_file: Callable[[IngestedFile], None] | None = None) -> dict[str, tuple[IngestedFile, ...]]:
        """Load the new landing files of the ingested assets (default: all), each file once.

        `on_file` is called with each file's outcome as it is known (for progress).
        """
        return {n: self._ingest_one(self.assets[n], on_file) for n in self._names(assets, derived=False)}

    def _ingest_one(self, asset: Asset, on_file: Callable[[IngestedFile], None] | None
                    ) -> tuple[IngestedFile, ...]:
        self.check_table(asset.name)  # before a file is read against the declaration

        def table_for(schema: pa.Schema | None) -> Table:
            return self._ingested_table(asset, schema)

        return tuple(ingest_asset(table_for, asset, self.landing(asset.name), self.archive(asset.name),
                                  on_file=on_file))

    def pending(self, assets: str | Sequence[str] | None = None) -> int:
        """How many landing files wait to be ingested (default: all ingested assets)."""
        names = self._names(assets, derived=False)
        return sum(len(self.landing(n).names(self.assets[n].reader.glob)) for n in names)

    def _names(self, assets: str | Sequence[str] | None, derived: bool | None = None) -> list[str]:
        wanted = [assets] if isinstance(assets, str) else list(assets) if assets is not None else list(self.order)
        for n in wanted:
            self._asset(n)
        return [n for n in self.order if n in wanted and (derived is None or self.assets[n].derived == derived)]

    # ---- derived assets ----------------------------------------------------------------------

    def _view(self, asset: Asset) -> View:
        """The asset's view, kept with its (warm) source handle while both tables are there."""
        assert asset.from_ is not None
        source = self._warm(asset.from_)
        view = self._views.get(asset.name)
        if view is not None and view.source is source:
            try:
                view.table.refresh()
                return view
            except LakeflowError:
                pass  # the view table was deleted or cleaned up past: open it afresh
        view = self._views[asset.name] = self._open_view(asset, source)
        return view

    def _open_view(self, asset: Asset, source: Table) -> View:
        assert asset.view is not None
        try:
            return View(self.table_uri(asset.name), source, self.storage_options)
        except TableNotFoundError:
            aggregates = {k: v if isinstance(v, str) else tuple(v) for k, v in asset.view.aggregates.items()}
            view = View.create(self.table_uri(asset.name), source, asset.view.group_by, aggregates,
                               window=asset.view.window, storage_options=self.storage_options)
            if asset.properties:  # e.g. delta.enableDeletionVectors: refreshes then mark, not rewrite
                view.table.set_properties(asset.properties)
            return view

    def _sql_table(self, spec: SqlAsset, source: Table) -> Table:
        try:
            return self._warm(spec.name)
        except TableNotFoundError:
            table = Table.create(self.table_uri(spec.name), spec.output_schema(source.schema),
                                 key=spec.key(source), storage_options=self.storage_options,
                                 properties=dict(self.assets[spec.name].properties))
            self._tables[spec.name] = table
            return table

    def _sql(self, asset: Asset) -> SqlAsset:
        assert asset.sql is not None and asset.from_ is not None
        return SqlAsset(asset.name, asset.from_, asset.sql)

    def refresh(self, name: str) -> int:
        """Fold a derived asset's source changes in, exactly once; return the source version it reflects."""
        asset = self._asset(name)
        if asset.from_ is None:
            raise InvalidArgumentError(f"{name} is ingested, not derived: use ingest")
        if asset.view is not None:
            view = self._view(asset)
            view.refresh()
            return view.source_version
        spec, source = self._sql(asset), self._warm(asset.from_)
        return spec.refresh(source, self._sql_table(spec, source))

    def run(self, assets: str | Sequence[str] | None = None,
            on_file: Callable[[IngestedFile], None] | None = None) -> RunResult:
        """Ingest, then refresh every derived asset in dependency order (default: all assets)."""
        names = self._names(assets)
        ingested = self.ingest([n for n in names if not self.assets[n].derived], on_file)
        refreshed = {n: self.refresh(n) for n in names if self.assets[n].derived and self._has_source(n)}
        return RunResult(ingested, refreshed)

    def _has_source(self, name: str) -> bool:
        source = self.assets[name].from_
        assert source is not None
        try:
            self._warm(source)
        except TableNotFoundError:
            return False  # nothing landed yet
        return True

    def rebuild(self, name: str, verify: bool = False) -> RebuildResult:
        """Recompute a derived asset from its source's log (Kappa).

        With `verify`, compare the recomputation with the incremental state at the
        source version it reflects, and write nothing; else commit the recomputation.
        """
        asset = self._asset(name)
        if asset.from_ is None:
            raise InvalidArgumentError(f"{name} is ingested, not derived: nothing to rebuild")
        source = self._warm(asset.from_)
        if asset.view is not None:
            view = self._view(asset)
            at = view.source_version
            if verify:
                fresh = view.recompute(at)
                return RebuildResult(name, at, differences(view.snapshot(), fresh, view.keys), None)
            version = view.rebuild()
            return RebuildResult(name, view.source_version, None, version)
        spec = self._sql(asset)
        target = self._sql_table(spec, source)
        if verify:
            at = spec.reflected(target.snapshot())
            fresh = spec.recompute(source, at)
            return RebuildResult(name, at, differences(target.to_arrow(), fresh, target.key), None)
        at = spec.rebuild(source, target)
        return RebuildResult(name, at, None, target.version)

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> list[AssetStatus]:
        """Where every asset stands, in dependency order."""
        return [self._status(n) for n in self.order]

    def _status(self, name: str) -> AssetStatus:
        asset = self.assets[name]
        kind = "ingested" if asset.from_ is None else "view" if asset.view is not None else "sql"
        landing = self.landing(name) if asset.from_ is None else None
        pending = len(landing.names(asset.reader.glob)) if landing is not None else 0
        rejected = len(Folder(f"{self._path(self.config.landing, name)}/{REJECTED_DIR}",
                              self.storage_options).names("*.reason.txt")) if landing is not None else 0
        try:
            t = self.table(name)
        except TableNotFoundError:
            return AssetStatus(name, kind, None, pending=pending, rejected=rejected, source=asset.from_)
        history = t.history(limit=10)
        last = next((c.timestamp for c in t.history() if c.app_id == app_id(name)), None) if landing else None
        reflects = behind = None
        if asset.from_ is not None:
            txn = next(iter(t.snapshot().state.txns.values()), None)
            reflects = txn.version if txn is not None else -1
            behind = self._source_version(asset.from_) - reflects
        return AssetStatus(name, kind, t.version, t.snapshot().num_rows, t.watermark, last, pending, rejected,
                           sum(c.late_rows or 0 for c in history), asset.from_, reflects, behind)

    def _source_version(self, name: str) -> int:
        try:
            return self.table(name).version
        except TableNotFoundError:
            return -1


__all__ = ["AssetStatus", "Project", "RebuildResult", "RunResult"]
