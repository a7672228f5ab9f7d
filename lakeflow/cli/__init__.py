"""The `lakeflow` command: a thin typer + rich layer over the library.

This package is the only code that knows typer and rich; each module holds one
group of commands (reads, writes, maintain, views, factory, demo) over the public API.
Every `LakeflowError` is mapped to one line on stderr and exit code 1, in `main`;
`--debug` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from rich.markup import escape

import lakeflow as lf
from lakeflow.cli import demo, factory, maintain, reads, views, writes
from lakeflow.cli._app import STATE, app, err_console

__all__ = ["app", "demo", "entry", "factory", "main", "maintain", "reads", "views", "writes"]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error.")) -> None:
    STATE.debug = debug


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping every lakeflow error (and failed file I/O) to one line and exit code 1."""
    runner: Callable[..., Any] = typer.main.get_command(app)
    STATE.debug = False
    try:
        runner(args=argv, standalone_mode=False)
    except (lf.LakeflowError, OSError) as e:
        if STATE.debug:
            traceback.print_exc(file=sys.stderr)
        one_line = " ".join(str(e).split())
        err_console.print(f"[red]error:[/red] {type(e).__name__}: {escape(one_line)}", highlight=False)
        return 1
    except typer.Abort:
        return 1
    except Exception as e:  # click usage errors carry their own exit code
        code = getattr(e, "exit_code", None)
        if code is not None and hasattr(e, "show"):
            e.show()
            return int(code)
        raise
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
