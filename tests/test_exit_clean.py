"""Fresh processes that import polars and read a checkpointed table exit cleanly.

pyarrow finishes Parquet reads on its own threads. When such a thread drops the
last reference to Python-owned memory (bytes, io.BytesIO) while the interpreter
is finalizing, it cannot take the GIL, and the process aborts with "terminate
called without an active exception" (rc 134) — about one run in seven, more on a
loaded machine (docs/reliability.md). A single process proves nothing, so each
case runs several fresh interpreters, a few at a time.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

import lakeflow as lf

RUNS_PER_OPERATION = 3  # x 4 operations x 3 backends = 36 fresh processes
CONCURRENT = 4

# What a job does, in a fresh interpreter that imported polars first.
_OPERATIONS = {
    "open": "lf.Table(URI)",
    "read": "lf.Table(URI).to_arrow()",
    "history": "sys.exit(main(['history', '--json', URI]))",
    "info": "sys.exit(main(['info', '--json', URI]))",
}
_CREATE = """
t = lf.Table.create(URI, pa.schema([("id", pa.int64()), ("name", pa.string())]),
                    partition_by=["name"])
for i in range(3):
    t.append(pa.table({"id": [i, i + 10], "name": ["a", "b"]}))
t.checkpoint()
t.append(pa.table({"id": [99], "name": ["c"]}))
"""


def _script(uri: str, operation: str, create: bool) -> str:
    lines = ["import sys", "import polars", "import pyarrow as pa", "import lakeflow as lf",
             "from lakeflow.cli import main", f"URI = {uri!r}"]
    if create:  # memory:// lives in one process: that process writes the table first
        lines.append(_CREATE)
    lines.append(_OPERATIONS[operation])
    return "\n".join(lines)


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)


def test_processes_exit_cleanly(table_uri: str, backend: str) -> None:
    in_process = backend == "memory"
    if not in_process:
        exec(_CREATE, {"lf": lf, "pa": pa, "URI": table_uri})
    jobs = [(op, _script(table_uri, op, in_process))
            for op in _OPERATIONS for _ in range(RUNS_PER_OPERATION)]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(lambda job: (job[0], _run(job[1])), jobs))
    failed = [(op, r.returncode, r.stderr.strip()[-300:]) for op, r in results
              if r.returncode != 0 or "terminate called" in r.stderr]
    assert not failed, f"{len(failed)} of {len(results)} processes did not exit cleanly: {failed}"


@pytest.mark.parametrize("operation", ["history", "info"])
def test_operations_print_json(local_uri: str, operation: str) -> None:
    """The scripts above do what they claim: the CLI reads the checkpointed table."""
    exec(_CREATE, {"lf": lf, "pa": pa, "URI": local_uri})
    result = _run(_script(local_uri, operation, create=False))
    assert result.returncode == 0, result.stderr
    assert '"version": 4' in result.stdout
