"""Wide tables: lakeflow vs deltalake on tables of many columns, in one run, on local disk.

    python benchmarks/bench_wide.py [--columns 500 2000 10000] [--repeat 3]

For each column count: create, append one row three times, then (best of
`--repeat`) open + read the one-row-per-file table whole, read it with a filter
on one column, and diff it. The ratio lakeflow/deltalake should stay flat as the
column count grows (schema handling linear in the column count).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.compute as pc
from _report import Result, markdown
from bench_core import best_of
from deltalake import DeltaTable, QueryBuilder

import lakeflow as lf


def rows(n: int, k: int) -> pa.Table:
    return pa.table({"id": [k], **{f"c{i}": [k * i] for i in range(n)}})


def sql(uri: str, query: str) -> pa.Table:
    return QueryBuilder().register("t", DeltaTable(uri)).execute(query).read_all()


def measure(root: Path, n: int, repeat: int) -> list[tuple[str, float, float]]:
    lf_uri, dl_uri = str(root / f"lf{n}"), str(root / f"dl{n}")
    t = lf.Table.create(lf_uri, rows(n, 0).schema)
    append_lf = best_of(lambda: t.append(rows(n, t.version)), 3)
    deltalake.write_deltalake(dl_uri, rows(n, 0).schema.empty_table(),
                              configuration={"delta.enableChangeDataFeed": "true"})
    append_dl = best_of(lambda: deltalake.write_deltalake(dl_uri, rows(n, 1), mode="append"), 3)
    out = [(f"{n} columns: append one row", append_lf, append_dl)]
    out.append((f"{n} columns: open + read all", best_of(lambda: lf.Table(lf_uri).to_arrow(), repeat),
                best_of(lambda: sql(dl_uri, "SELECT * FROM t"), repeat)))
    out.append((f"{n} columns: open + filtered read",
                best_of(lambda: lf.Table(lf_uri).to_arrow(filter=pc.field("c1") == 2), repeat),
                best_of(lambda: sql(dl_uri, "SELECT * FROM t WHERE c1 = 2"), repeat)))
    out.append((f"{n} columns: open + diff (lakeflow) / load_cdf (deltalake)",
                best_of(lambda: lf.Table(lf_uri).diff(0), repeat),
                best_of(lambda: DeltaTable(dl_uri).load_cdf(1).read_all(), repeat)))
    assert lf.Table(lf_uri).to_arrow().num_rows == sql(lf_uri, "SELECT * FROM t").num_rows == 3
    return out


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser()
    parser.add_argument("--columns", type=int, nargs="+", default=[500, 2000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-wide-"))
    print(f"| measure | lakeflow ms | deltalake {deltalake.__version__} ms | ratio (lakeflow/deltalake) |")
    print("| --- | ---: | ---: | ---: |")
    rows = []
    for n in args.columns:
        for name, a, b in measure(root, n, args.repeat):
            print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |", flush=True)
            rows.append((name, f"{a:.1f}", f"{b:.1f}", a / b))
    table = markdown(["measure", "lakeflow ms", f"deltalake {deltalake.__version__} ms", "ratio (lakeflow/deltalake)"],
                     rows)
    return Result(table, [(r[0], r[3]) for r in rows])

if __name__ == "__main__":
    main()
