"""The CLI reference page is generated from the app: every command and option has help."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

from tools import docs_hooks  # noqa: E402


def test_every_command_argument_and_option_has_help():
    assert docs_hooks.undocumented() == []


def test_reference_renders_every_command_and_option():
    page = docs_hooks.render()
    for path, cmd in docs_hooks.commands():
        text = docs_hooks.section(path, cmd)
        assert f"`{path}`" in text and text in page
        for param in cmd.params:
            if param.param_type_name == "option" and param.name != "help":
                assert all(opt in text for opt in param.opts), (path, param.opts)
                assert param.help.replace("|", "\\|") in text


def test_undocumented_finds_a_missing_help(monkeypatch):
    _, show = next((p, c) for p, c in docs_hooks.commands() if p == "lakeflow show")
    option = next(p for p in show.params if p.name == "where")
    monkeypatch.setattr(option, "help", None)
    monkeypatch.setattr(docs_hooks, "commands", lambda: iter([("lakeflow show", show)]))
    assert docs_hooks.undocumented() == ["lakeflow show where"]


def test_hook_fills_the_marker_only():
    assert docs_hooks.on_page_markdown("# x\n") == "# x\n"
    assert "`lakeflow append`" in docs_hooks.on_page_markdown(f"# x\n{docs_hooks.MARKER}\n")
