"""`lakeflow init|validate|ingest|run|status|rebuild|graph`: the factory over a project directory."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import typer

import lakeflow as lf
from lakeflow.cli._app import (
    JsonOpt,
    StorageOpt,
    app,
    console,
    print_fields,
    print_json,
    print_rows,
    progress,
    storage_options,
)

ProjectArg = typer.Argument(Path("."), file_okay=False, help="The project directory.")
AssetsArg = typer.Argument(None, help="Assets (default: all).")


def _project(path: Path, options: list[str] | None) -> lf.Project:
    return lf.Project(path, storage_options(options))


def _kind(asset: lf.factory.Asset) -> str:
    return "ingested" if asset.from_ is None else "view" if asset.view is not None else "sql"


@app.command()
def init(path: Path = ProjectArg, as_json: bool = JsonOpt) -> None:
    """Write a project skeleton: an ingested asset, a view over it, a landing folder."""
    project = lf.Project.init(path)
    out = {"project": str(path), "assets": list(project.order),
           "landing": [str(project.landing(n).root) for n in project.order if not project.assets[n].derived]}
    if as_json:
        print_json(out)
        return
    console.print(f"created a project in {path} with assets {', '.join(project.order)}")
    console.print(f"drop CSV files in {out['landing'][0]} and run: lakeflow run {path}")


@app.command()
def validate(path: Path = ProjectArg, as_json: bool = JsonOpt) -> None:
    """Check every declaration, the asset graph and existing tables' columns (exit 1 naming file, line, field)."""
    project = lf.Project(path)
    for name in project.order:
        project.check_table(name)
    out = {"assets": {n: _kind(project.assets[n]) for n in project.order}, "order": list(project.order)}
    if as_json:
        print_json(out)
        return
    console.print(f"ok: {len(project.order)} assets, in order {' -> '.join(project.order)}")


def _ingested_rows(result: dict[str, tuple[lf.factory.IngestedFile, ...]]) -> list[dict[str, Any]]:
    return [{"asset": a, **dataclasses.asdict(f)} for a, files in result.items() for f in files]


@app.command()
def ingest(path: Path = ProjectArg, assets: list[str] | None = AssetsArg, as_json: bool = JsonOpt,
           options: list[str] | None = StorageOpt) -> None:
    """Load new landing files, each exactly once, then archive them."""
    project = _project(path, options)
    with progress("ingesting", total=project.pending(assets or None)) as done:
        rows = _ingested_rows(project.ingest(assets or None, on_file=lambda _: done()))
    if as_json:
        print_json({"files": rows})
    elif rows:
        print_rows(rows, "ingested files")
    else:
        console.print("no new files")


def _run_once(project: lf.Project, assets: list[str] | None, as_json: bool) -> None:
    ingested = [n for n in project.order if not project.assets[n].derived and (not assets or n in assets)]
    with progress("ingesting", total=project.pending(ingested)) as done:
        result = project.run(assets or None, on_file=lambda _: done())
    rows = _ingested_rows(dict(result.ingested))
    if as_json:
        print_json({"files": rows, "refreshed": dict(result.refreshed)})
        return
    if rows:
        print_rows(rows, "ingested files")
    for name, version in result.refreshed.items():
        console.print(f"{name}: reflects source version {version}")


@app.command()
def run(path: Path = ProjectArg, assets: list[str] | None = AssetsArg,
        watch: float | None = typer.Option(None, "--watch", metavar="SECONDS", help="Repeat every SECONDS."),
        as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Ingest, then refresh every derived asset in dependency order, each exactly once."""
    project = _project(path, options)
    while True:
        _run_once(project, assets, as_json)
        if watch is None:
            return
        time.sleep(watch)


@app.command()
def status(path: Path = ProjectArg, as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Where every asset stands: version, rows, watermark, pending and rejected files, lag."""
    rows = [dataclasses.asdict(s) for s in _project(path, options).status()]
    if as_json:
        print_json({"assets": rows})
        return
    print_rows(rows, "assets")


@app.command()
def rebuild(path: Path = ProjectArg, asset: str = typer.Argument(..., help="The derived asset."),
            verify: bool = typer.Option(False, "--verify", help="Compare with the incremental state; write nothing."),
            as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Recompute a derived asset from its source's log (and commit it, unless --verify)."""
    with progress(f"rebuilding {asset}"):
        result = _project(path, options).rebuild(asset, verify=verify)
    if as_json:
        print_json(dataclasses.asdict(result))
    else:
        print_fields(dataclasses.asdict(result))
    if verify and result.differences:
        raise lf.LakeflowError(f"{asset}: {result.differences} rows differ from the recomputation")


@app.command()
def graph(path: Path = ProjectArg, mermaid: bool = typer.Option(False, "--mermaid", help="Mermaid flowchart."),
          as_json: bool = JsonOpt) -> None:
    """The asset graph: each asset and the assets derived from it."""
    project = lf.Project(path)
    if as_json:
        print_json({n: list(d) for n, d in project.graph().items()})
    elif mermaid:
        console.print(project.mermaid())
    else:
        for n in project.order:
            derived = project.graph()[n]
            console.print(f"{n}{' -> ' + ', '.join(derived) if derived else ''}")
