"""Every ```python block in README.md and docs/*.md runs (blocks of a page share a namespace)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_doc_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"doc_{page.stem}"}
    for i, code in enumerate(BLOCK.findall(page.read_text())):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)


SHELL_BLOCK = re.compile(r"^## The same from the command line\n.*?^```bash\n(.*?)^```", re.S | re.M)


def test_quickstart_command_line_runs(tmp_path):
    """The quickstart's shell walkthrough, line by line, with `lakeflow` as this interpreter's CLI."""
    script = SHELL_BLOCK.search((ROOT / "docs" / "quickstart.md").read_text()).group(1)
    prelude = f'set -euo pipefail\nlakeflow() {{ "{sys.executable}" -m lakeflow.cli "$@"; }}\n'
    proc = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "batch 2 of loader is already in version 2: nothing written" in proc.stdout
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["num_rows"] == 3
