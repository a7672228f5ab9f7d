"""Open benchmark: the time to open a table's latest version against its file count.

    python benchmarks/bench_open.py [--files 10 100 1000 3000]

For each count, lakeflow appends that many 10-row files (one commit each) and writes a
checkpoint; then lakeflow (`Table(uri).version`) and deltalake (`DeltaTable(uri).version()`)
open the same table, best of 5. Both read `_last_checkpoint`, the checkpoint and any
newer commits: the cost follows the number of files the checkpoint lists.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import deltalake
from _report import Result, markdown
from bench_core import SCHEMA, batch, best_of

import lakeflow as lf


def build(uri: str, files: int) -> None:
    t = lf.Table.create(uri, SCHEMA)
    for i in range(files):
        t.append(batch(i, 10))
    t.checkpoint()


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, nargs="+", default=[10, 100, 1000, 3000])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.files:
            uri = str(Path(tmp) / f"t{n}")
            build(uri, n)
            ours = best_of(lambda: lf.Table(uri).version)  # noqa: B023 (called before the loop moves on)
            peer = best_of(lambda: deltalake.DeltaTable(uri).version())  # noqa: B023
            assert lf.Table(uri).version == deltalake.DeltaTable(uri).version() == n
            rows.append((n, ours, peer))
    table = markdown(["files (one commit each, checkpointed)", "lakeflow open ms",
                      f"deltalake {deltalake.__version__} open ms", "ratio (lakeflow/deltalake)"],
                     [(n, a, b, a / b) for n, a, b in rows])
    print(table)
    return Result(table, [(f"open, {n} files", a / b) for n, a, b in rows],
                  {"open_ms": {"files": [r[0] for r in rows], "lakeflow": [r[1] for r in rows],
                               f"deltalake {deltalake.__version__}": [r[2] for r in rows]}})


if __name__ == "__main__":
    main()
