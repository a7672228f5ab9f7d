"""What every command shares: the typer app, consoles, common options and output.

Output rules: piped output is never wrapped; `--json` prints one JSON document;
rows go out as a rich table, JSON, CSV or Parquet (stdout or `--output FILE`);
progress bars go to stderr and only on a terminal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from rich.text import Text

import lakeflow as lf

_PIPE_WIDTH = 100_000
DISPLAY_ROWS = 20
STORAGE_ENV = "LAKEFLOW_STORAGE_OPTIONS"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Versioned tables as a flow of commits (Delta Lake compatible).")
# Piped output is read by programs: never wrap it at a guessed terminal width. No markup:
# values such as "timestamp[us, tz=UTC]" are printed as they are.
console = Console(soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)


@dataclass
class RunState:
    """Settings of the current invocation (set by the root callback)."""

    debug: bool = False


STATE = RunState()


def _pairs(values: list[str] | None) -> list[str]:
    """Check KEY=VALUE options at parse time, so a bad one is a usage error (exit 2)."""
    for v in values or []:
        if not v.partition("=")[0] or "=" not in v:
            raise typer.BadParameter(f"{v!r} is not KEY=VALUE")
    return values or []


def names_list(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated column names as one list (None when none given)."""
    if not values:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


TableArg = typer.Argument(..., metavar="URI", help="The table: a local path, file://, memory:// or s3:// URI.")
ViewArg = typer.Argument(..., metavar="URI", help="The view's table: a local path, file://, memory:// or s3:// URI.")
JsonOpt = typer.Option(False, "--json", help="Print one machine-readable JSON document.")
StorageOpt = typer.Option(None, "--option", "-o", callback=_pairs, metavar="KEY=VALUE",
                          help=f"Storage option (repeatable); also {STORAGE_ENV} as a JSON object.")
FormatOpt = typer.Option(None, "--format", help="Write the rows as csv or parquet (to stdout or --output).")
OutputOpt = typer.Option(None, "--output", dir_okay=False, help="Write the rows to this file.")
PropertyOpt = typer.Option(None, "--property", callback=_pairs, metavar="KEY=VALUE",
                           help="Table property (repeatable).")


def storage_options(pairs: Sequence[str] | None) -> dict[str, str] | None:
    """`LAKEFLOW_STORAGE_OPTIONS` (a JSON object), overridden by `--option KEY=VALUE`.

    Raises:
        InvalidArgumentError: the environment variable is not a JSON object of strings.
    """
    out: dict[str, str] = {}
    raw = os.environ.get(STORAGE_ENV)
    if raw:
        try:
            env = json.loads(raw)
        except ValueError as e:
            raise lf.InvalidArgumentError(f"{STORAGE_ENV} is not valid JSON: {e}") from e
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise lf.InvalidArgumentError(f'{STORAGE_ENV} must be a JSON object of strings, e.g. {{"key": "value"}}')
        out.update(env)
    out.update(dict(p.split("=", 1) for p in pairs or []))
    return out or None


def open_table(uri: str, options: Sequence[str] | None) -> lf.Table:
    """The table at `uri`, with the storage options of the command line and environment."""
    return lf.Table(uri, storage_options(options))


def instant(text: str, name: str) -> dt.datetime:
    """An ISO-8601 instant with a zone (`Z` allowed).

    Raises:
        InvalidArgumentError: it is not one, naming the option `name`.
    """
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise lf.InvalidArgumentError(
            f"{name} {text!r} is not an ISO-8601 instant with a time zone such as 2024-05-01T12:00:00Z")
    return value


def sql_filter(sql: str | None, schema: pa.Schema) -> pc.Expression | None:
    """`--where SQL` as an expression (sqlglot is imported only when SQL is given: it is slow to load)."""
    if sql is None:
        return None
    from lakeflow.sql import predicate

    return predicate(sql, schema)


def _finite(value: Any) -> Any:
    """NaN and infinities as the strings "NaN", "Infinity", "-Infinity": JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """One (strict) JSON document on stdout."""
    typer.echo(json.dumps(_finite(value), default=str, indent=2, ensure_ascii=False, allow_nan=False))


def print_fields(values: dict[str, Any]) -> None:
    """`name: value` lines for a person."""
    for k, v in values.items():
        console.print(Text.assemble((k, "bold"), f": {'' if v is None else v}"), highlight=False)


def print_rows(rows: Sequence[dict[str, Any]] | pa.Table, title: str, more: str | None = None) -> None:
    """Rows as a rich table, then `more` (what was left out) if anything was."""
    records = rows.to_pylist() if isinstance(rows, pa.Table) else list(rows)
    names = rows.column_names if isinstance(rows, pa.Table) else list(records[0]) if records else []
    rt = RichTable(title=title, title_justify="left")
    for name in names:
        rt.add_column(name)
    for r in records:
        rt.add_row(*["" if v is None else str(v) for v in r.values()])
    console.print(rt)
    if more:
        console.print(more, highlight=False)


@dataclass(frozen=True)
class RowsOut:
    """Where and how a read command writes its rows."""

    as_json: bool
    format: str | None
    output: Path | None

    def __post_init__(self) -> None:
        if self.format not in (None, "csv", "parquet"):
            raise typer.BadParameter(f"--format must be csv or parquet, not {self.format!r}")
        if self.format and self.as_json:
            raise typer.BadParameter("pass --json or --format, not both")
        if self.output is not None and not self.format:
            raise typer.BadParameter("--output needs --format csv or parquet")

    @property
    def complete(self) -> bool:
        """Whether rows go to a program (all of them unless --limit), not a person (a screenful)."""
        return self.as_json or self.format is not None

    def write(self, rows: pa.Table) -> None:
        """Write `rows` as CSV or Parquet to the output file or stdout.

        Raises:
            InvalidArgumentError: Parquet to a terminal, or columns CSV cannot hold.
        """
        if self.output is None and self.format == "parquet" and sys.stdout.isatty():
            raise lf.InvalidArgumentError("Parquet is binary: pass --output FILE or pipe stdout to a file")
        with self._sink() as sink:
            if self.format == "parquet":
                pq.write_table(rows, sink)
                return
            try:
                pacsv.write_csv(rows, sink)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise lf.InvalidArgumentError(f"CSV cannot hold these columns ({e}); use --format parquet") from e

    @contextlib.contextmanager
    def _sink(self) -> Iterator[BinaryIO]:
        if self.output is not None:
            with open(self.output, "wb") as f:
                yield f
            return
        sys.stdout.flush()
        stream = typer.get_binary_stream("stdout")
        yield stream
        stream.flush()


def limited(read: Callable[[int | None], pa.Table], limit: int | None, out: RowsOut) -> tuple[pa.Table, bool]:
    """Rows read with `read(n)` (n+1 rows, or all for None), cut to the limit: (rows, truncated).

    A person gets a screenful by default; a program all rows unless it asked for fewer.
    """
    shown = limit if limit is not None else None if out.complete else DISPLAY_ROWS
    rows = read(None if shown is None else shown + 1)
    if shown is None or rows.num_rows <= shown:
        return rows, False
    return rows.slice(0, shown), True


def more_line(shown: int, total: int | None) -> str:
    """What a person is told about rows left out."""
    if total is None:
        return f"... more rows matched (showing the first {shown}; raise --limit)"
    return f"... {total - shown} more rows (showing {shown} of {total}; raise --limit)"


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr when it is a terminal (none when piped); yields `advance()`."""
    if not err_console.is_terminal:
        yield lambda: None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               *([MofNCompleteColumn()] if total is not None else []), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
