"""`python -m benchmarks`: the doc's generated blocks and the runner's rewriting of them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("benchmarks_runner", ROOT / "benchmarks" / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_has_its_markers_in_the_doc():
    runner = _runner()
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    for name, (module, _, _) in runner.BENCHMARKS.items():
        assert f"<!-- bench:{name} -->\n" in doc and f"<!-- /bench:{name} -->" in doc, name
        assert (ROOT / "benchmarks" / f"{module}.py").exists()


def test_rewrite_replaces_only_between_markers(tmp_path):
    runner = _runner()
    doc = tmp_path / "b.md"
    doc.write_text("intro\n<!-- bench:core -->\nold table\n<!-- /bench:core -->\nafter\n")
    assert runner.rewrite(doc, {"core": "new table\n", "wide": "x\n"}) == ["wide"]
    assert doc.read_text() == "intro\n<!-- bench:core -->\nnew table\n<!-- /bench:core -->\nafter\n"


def test_markdown_right_aligns_only_numbers():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import markdown

    assert markdown(["a", "b", "c"], [("x", 1.234, "1,000"), ("y", 2.0, "3")]).splitlines() == [
        "| a | b | c |", "| --- | ---: | ---: |", "| x | 1.23 | 1,000 |", "| y | 2.00 | 3 |"]
