"""`lakeflow view create|refresh|show`: incremental aggregate views."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

import lakeflow as lf
from lakeflow.cli._app import (
    FormatOpt,
    JsonOpt,
    OutputOpt,
    RowsOut,
    StorageOpt,
    ViewArg,
    app,
    console,
    limited,
    more_line,
    names_list,
    print_json,
    print_rows,
    storage_options,
)

view_app = typer.Typer(no_args_is_help=True, help="Incremental aggregate views of a table.")
app.add_typer(view_app, name="view")

_AGG = re.compile(r"^\s*(\w+)\s*=\s*(\w+)\s*(?:\(\s*(\*|[^()]*?)\s*\))?\s*$")


def _aggregates(values: list[str] | None) -> list[str]:
    for v in values or []:
        if not _AGG.match(v):
            raise typer.BadParameter(f"{v!r} is not NAME=FUNCTION(COLUMN), e.g. total=sum(amount) or n=count")
    return values or []


def _parse_aggregates(values: list[str]) -> dict[str, Any]:
    """`total=sum(amount)` -> {"total": ("amount", "sum")}; `n=count` -> {"n": "count"}."""
    out: dict[str, Any] = {}
    for v in values:
        m = _AGG.match(v)
        assert m is not None  # checked at parse time
        name, function, column = m.groups()
        out[name] = function if column in (None, "*") else (column, function)
    return out


@view_app.command("create")
def view_create(uri: str = ViewArg, source: str = typer.Argument(..., help="The source table."),
                group_by: list[str] | None = typer.Option(None, help="Group columns (repeatable or comma-separated)."),
                agg: list[str] = typer.Option(..., callback=_aggregates, metavar="NAME=FUNCTION(COLUMN)",
                                              help="Aggregate (repeatable): sum, count, mean, min, max."),
                window: str | None = typer.Option(None, help='Also group by event-time window, e.g. "1d".'),
                refresh: bool = typer.Option(True, help="Fill the view from the source now."),
                as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Create a view of SOURCE grouped by columns (and window), with aggregates."""
    opts = storage_options(options)
    view = lf.View.create(uri, lf.Table(source, opts), names_list(group_by) or [], _parse_aggregates(agg),
                          window=window, storage_options=opts)
    version = view.refresh() if refresh else view.table.version
    if as_json:
        print_json({"uri": uri, "version": version, "source_version": view.source_version})
    else:
        console.print(f"created view {uri} (version {version}, source version {view.source_version})",
                      highlight=False)


@view_app.command("refresh")
def view_refresh(uri: str = ViewArg, as_json: bool = JsonOpt, options: list[str] | None = StorageOpt) -> None:
    """Fold the source's new commits into the view."""
    view = lf.View(uri, storage_options=storage_options(options))
    version = view.refresh()
    if as_json:
        print_json({"version": version, "source_version": view.source_version})
    else:
        console.print(f"view version {version}, source version {view.source_version}", highlight=False)


@view_app.command("show")
def view_show(uri: str = ViewArg, source_version: int | None = typer.Option(None, help="As of this source version."),
              limit: int | None = typer.Option(None, min=0, help="Rows to output."),
              as_json: bool = JsonOpt, fmt: str | None = FormatOpt, output: Path | None = OutputOpt,
              options: list[str] | None = StorageOpt) -> None:
    """Print the view's rows (as of the last refresh, or a source version)."""
    out = RowsOut(as_json, fmt, output)
    view = lf.View(uri, storage_options=storage_options(options))
    reflected = source_version if source_version is not None else view.source_version
    table = view.snapshot(source_version)
    rows, truncated = limited(lambda n: table if n is None else table.slice(0, n), limit, out)
    if out.format:
        out.write(rows)
    elif as_json:
        print_json({"source_version": reflected, "num_rows": table.num_rows, "truncated": truncated,
                    "rows": rows.to_pylist()})
    else:
        print_rows(rows, f"view {uri} at source version {reflected}",
                   more_line(rows.num_rows, table.num_rows) if truncated else None)
