"""A mixed concurrent run: writer processes interleave every kind of operation on one table.

Each worker owns a range of ids and keeps a model of its rows, so the final table must
equal the union of the models whatever the interleaving; every version is claimed by at
most one acknowledged operation; deltalake reads the same rows; a view over the table
equals its aggregate recomputed from scratch. CI runs a short version; `pytest -m slow`
runs 6 processes x 300 operations (docs/reliability.md).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lakeflow as lf

from helpers import processes, sql_scan, worker_options

pytestmark = pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)

SCHEMA = pa.schema([("id", pa.int64()), ("writer", pa.int64()), ("value", pa.int64())])
OPS = ("append", "append_once", "merge", "delete", "compact", "checkpoint", "vacuum", "cleanup_log",
       "refresh_view")
WEIGHTS = (30, 15, 15, 10, 5, 5, 5, 5, 10)
CI_SIZE = {"local": (3, 40), "s3": (2, 20)}
FULL_SIZE = (6, 300)


@pytest.fixture(params=["ci", pytest.param("full", marks=pytest.mark.slow)])
def size(request, backend) -> tuple[int, int]:
    return FULL_SIZE if request.param == "full" else CI_SIZE[backend]


def rows(writer: int, values: dict[int, int]) -> pa.Table:
    return pa.table({"id": list(values), "writer": [writer] * len(values), "value": list(values.values())},
                    schema=SCHEMA)


class Worker:
    """One process's operations, its model of its own rows and the versions it was given."""

    def __init__(self, uri: str, view_uri: str, options: dict | None, writer: int, seed: int) -> None:
        self.t = lf.Table(uri, storage_options=options)
        self.view = lf.View(view_uri, source=self.t, storage_options=options)
        self.options = options
        self.writer, self.rng = writer, random.Random(seed)
        self.model: dict[int, int] = {}
        self.claims: list[tuple[int, str]] = []
        self.next_id, self.batch = writer * 1_000_000, 0
        self.log: list[str] = []

    def new_ids(self, n: int) -> dict[int, int]:
        out = {self.next_id + i: self.rng.randrange(1000) for i in range(n)}
        self.next_id += n
        return out

    def op_append(self) -> None:
        values = self.new_ids(self.rng.randint(1, 5))
        self.claims.append((self.t.append(rows(self.writer, values)), "append"))
        self.model.update(values)

    def op_append_once(self) -> None:
        values = self.new_ids(3)
        app, self.batch = f"worker-{self.writer}", self.batch + 1
        first = self.t.append(rows(self.writer, values), app_id=app, txn_version=self.batch)
        again = self.t.append(rows(self.writer, values), app_id=app, txn_version=self.batch)
        assert again == first, (first, again)
        self.claims.append((first, "append_once"))
        self.model.update(values)

    def op_merge(self) -> None:
        owned = self.rng.sample(sorted(self.model), min(3, len(self.model)))
        # New values always differ from the old ones: an equal value is "unchanged", not updated.
        values = {i: (self.model[i] + self.rng.randrange(1, 1000)) % 1000 for i in owned} | self.new_ids(1)
        result = self.t.merge(rows(self.writer, values), on=["id"], retries=20)
        assert (result.inserted, result.updated) == (1, len(owned)), result
        self.claims.append((result.version, "merge"))
        self.model.update(values)

    def op_delete(self) -> None:
        owned = self.rng.sample(sorted(self.model), min(2, len(self.model)))
        if owned:
            deleted = self.t.delete(pc.field("id").isin(owned), retries=20)
            if deleted != len(owned):
                seen = lf.Table(self.t.uri, storage_options=self.options).to_arrow(
                    filter=pc.field("id").isin(owned)).column("id").to_pylist()
                raise AssertionError(f"delete of {owned} at version {self.t.state.version} removed {deleted} "
                                     f"rows; a fresh handle sees {seen}; log: {self.log[-5:]}")
            for i in owned:
                del self.model[i]

    def op_compact(self) -> None:
        result = self.t.compact()
        if result.version is not None:
            self.claims.append((result.version, "compact"))

    def op_checkpoint(self) -> None:
        self.t.checkpoint()

    def op_vacuum(self) -> None:
        self.t.vacuum()

    def op_cleanup_log(self) -> None:
        self.t.cleanup_log(retention=dt.timedelta(0))

    def op_refresh_view(self) -> None:
        self.view.refresh()

    def run(self, ops: int) -> None:
        for _ in range(ops):
            op = self.rng.choices(OPS, WEIGHTS)[0]
            self.log.append(op)
            try:
                getattr(self, f"op_{op}")()
            except lf.CommitConflictError:
                self.log.append(f"{op}: conflict")  # not acknowledged: the model stays as it was


def work(uri: str, view_uri: str, options: dict | None, writer: int, ops: int, start_at: float
         ) -> tuple[dict[int, int], list[tuple[int, str]], list[str]]:
    w = Worker(uri, view_uri, options, writer, seed=1000 + writer)
    time.sleep(max(0.0, start_at - time.time()))
    w.run(ops)
    return w.model, w.claims, w.log


def sql_rows(uri: str, options: dict | None) -> pa.Table:
    return sql_scan(uri, storage_options=options, query="SELECT id, writer, value FROM t ORDER BY id")


def test_mixed_operations_lose_nothing_and_claim_no_version_twice(table_uri, backend, request, size):
    writers, ops = size
    options: Any = worker_options(backend, request)
    t = lf.Table.create(table_uri, SCHEMA, key=["id"], storage_options=options)
    view_uri = table_uri.rstrip("/") + "-view"
    lf.View.create(view_uri, t, group_by=["writer"], aggregates={"total": ("value", "sum"), "n": "count"},
                   storage_options=options)
    with processes(writers) as pool:
        start_at = time.time() + 1.0
        futures = [pool.submit(work, table_uri, view_uri, options, w, ops, start_at) for w in range(writers)]
        results = [f.result() for f in futures]
    model = {k: v for m, _, _ in results for k, v in m.items()}
    claims = sorted(c for _, cs, _ in results for c in cs)
    versions = [v for v, _ in claims]
    assert len(versions) == len(set(versions)), [c for c in claims if versions.count(c[0]) > 1]
    final = lf.Table(table_uri, storage_options=options)
    assert final.version >= max(versions, default=0)
    got = final.to_arrow().sort_by("id")
    assert dict(zip(got.column("id").to_pylist(), got.column("value").to_pylist(), strict=True)) == model
    oracle = sql_rows(table_uri, options)
    assert oracle.column("id").to_pylist() == got.column("id").to_pylist()
    assert oracle.column("value").to_pylist() == got.column("value").to_pylist()
    view = lf.View(view_uri, source=final, storage_options=options)
    view.refresh()
    expected = (pl.from_arrow(final.snapshot(version=view.source_version).to_arrow())
                .group_by("writer").agg(total=pl.col("value").sum(), n=pl.len()).sort("writer"))
    stored = pl.from_arrow(view.snapshot()).select("writer", "total", "n").sort("writer")
    assert stored.cast(pl.Int64).to_dicts() == expected.cast(pl.Int64).to_dicts()
    conflicts = sum(entry.endswith(": conflict") for _, _, log in results for entry in log)
    print(f"\n{writers}x{ops} mixed operations on {backend}: {len(model)} rows, {len(claims)} claimed "
          f"versions (none twice), final version {final.version}, {conflicts} conflicts")
