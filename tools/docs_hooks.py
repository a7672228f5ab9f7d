"""mkdocs hooks: the CLI reference page is rendered from the typer app itself.

`docs/reference/cli.md` holds the marker `<!-- cli-reference -->`; at build time it is
replaced by every command's help, arguments and options, so the page cannot drift from
the code. `undocumented()` lists what has no help text (tests/test_cli_reference.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

MARKER = "<!-- cli-reference -->"


# typer ships its own copy of click; its objects are read by their attributes.
Command = Any
Param = Any


def _root() -> Command:
    from lakeflow.cli import app

    return typer.main.get_command(app)


def _is_group(cmd: Command) -> bool:
    return hasattr(cmd, "commands")


def commands(cmd: Command | None = None, path: str = "lakeflow") -> Iterator[tuple[str, Command]]:
    """Every command and group under `cmd`, depth first, with its full command line name."""
    cmd = cmd or _root()
    yield path, cmd
    if _is_group(cmd):
        for name in sorted(cmd.commands):
            yield from commands(cmd.commands[name], f"{path} {name}")


def _param_help(param: Param) -> str:
    return (getattr(param, "help", None) or "").strip()


def _params(cmd: Command) -> list[Param]:
    return [p for p in cmd.params if p.name != "help"]


def undocumented() -> list[str]:
    """`command` or `command option` for each command, argument or option without help text."""
    missing = []
    for path, cmd in commands():
        if not (cmd.help or "").strip():
            missing.append(path)
        missing.extend(f"{path} {p.name}" for p in _params(cmd) if not _param_help(p))
    return missing


def _param_row(cmd: Command, path: str, param: Param) -> str:
    record = param.get_help_record(cmd.make_context(path, [], resilient_parsing=True))
    names, text = record if record else (param.name.upper(), _param_help(param))
    if param.param_type_name == "argument":
        names += "" if param.required else " (optional)"
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"| `{names}` | {text} |"


def section(path: str, cmd: Command) -> str:
    """One command's reference: its help, usage line and a table of its arguments and options."""
    depth = path.count(" ")
    out = [f"{'#' * min(depth + 2, 4)} `{path}`\n", f"{(cmd.help or '').strip()}\n"]
    if not _is_group(cmd) or depth == 0:
        usage = " ".join(cmd.collect_usage_pieces(cmd.make_context(path, [], resilient_parsing=True)))
        out.append(f"```\n{path} {usage}\n```\n")
    rows = [_param_row(cmd, path, p) for p in _params(cmd)]
    if rows:
        out.append("| argument or option | meaning |\n| --- | --- |\n" + "\n".join(rows) + "\n")
    return "\n".join(out)


def render() -> str:
    """The CLI reference as Markdown: one section per command."""
    return "\n".join(section(path, cmd) for path, cmd in commands())


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill in the CLI reference where its marker stands."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
