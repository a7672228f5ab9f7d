"""Model-based test: random sequences of table operations against a plain in-memory model.

The model is the list of every version's rows (a multiset of (id, v, part)).
Hypothesis drives creates, appends (through the handle and through a stale second
handle), checkpoints, reopening, time travel by version and by instant, and, where
the Table has them, merge, delete and diff; after every step the table must equal
the model. Runs 200 examples in CI (profile "ci"); `HYPOTHESIS_PROFILE=dev` or
`long` runs more.
"""

from __future__ import annotations

import uuid
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import lakeflow as lf

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.int64()), ("part", pa.string())])
PARTS = ["a", "b", "ü/x=1"]
HAS = {name: hasattr(lf.Table, name) for name in ("merge", "delete", "diff")}

values = st.integers(-3, 3) | st.none()
parts = st.sampled_from(PARTS)

Rows = Counter  # of (id, v, part)


def rows_of(table: pa.Table) -> Rows:
    return Counter(zip(*(table.column(c).to_pylist() for c in ("id", "v", "part")), strict=True))


def arrow(rows) -> pa.Table:
    ids, vs, ps = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table({"id": pa.array(ids, pa.int64()), "v": pa.array(vs, pa.int64()),
                     "part": pa.array(ps, pa.string())}, schema=SCHEMA)


class TableModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.uri = f"memory://model-{uuid.uuid4().hex}"
        self.table = lf.Table.create(self.uri, SCHEMA, partition_by=["part"], key=["id"],
                                     properties={"delta.checkpointInterval": "3"})
        self.stale = lf.Table(self.uri)  # a second handle that falls behind
        self.versions: list[Rows] = [Counter()]
        self.next_id = 0

    def teardown(self) -> None:
        fs = fsspec.filesystem("memory")
        root = "/" + self.uri.split("://", 1)[1]
        if fs.exists(root):
            fs.rm(root, recursive=True)

    @property
    def current(self) -> Rows:
        return self.versions[-1]

    def settle(self, expected: Rows) -> None:
        """Record what an operation should have produced: a new version, or none when nothing changed."""
        version = lf.Table(self.uri).version
        if version == len(self.versions):
            self.versions.append(expected)
        else:
            assert version == len(self.versions) - 1, "more than one commit"
            assert expected == self.current, "the table changed without a commit"

    def fresh_ids(self, n: int) -> list[int]:
        self.next_id += n
        return list(range(self.next_id - n, self.next_id))

    @rule(new=st.lists(st.tuples(values, parts), max_size=4), stale=st.booleans())
    def append(self, new, stale) -> None:
        rows = [(i, v, p) for i, (v, p) in zip(self.fresh_ids(len(new)), new, strict=True)]
        (self.stale if stale else self.table).append(arrow(rows))
        self.settle(self.current + Counter(rows))

    @rule()
    def checkpoint(self) -> None:
        assert self.table.checkpoint() == len(self.versions) - 1

    @rule()
    def reopen(self) -> None:
        self.table = lf.Table(self.uri)

    @rule(data=st.data())
    def time_travel(self, data) -> None:
        version = data.draw(st.integers(0, len(self.versions) - 1), label="version")
        assert rows_of(self.table.snapshot(version=version).to_arrow()) == self.versions[version]
        self.table.refresh()
        instant = {c.version: c.timestamp for c in self.table.history()}[version]
        assert self.table.snapshot(as_of=instant).version == version

    if HAS["merge"]:
        @rule(data=st.data(), inserts=st.lists(st.tuples(values, parts), max_size=2))
        def merge(self, data, inserts) -> None:
            existing = sorted({row[0] for row in self.current})
            matched = data.draw(st.lists(st.sampled_from(existing), unique=True, max_size=3)
                                if existing else st.just([]), label="ids")
            source = [(i, data.draw(values), data.draw(parts)) for i in matched]
            source += [(i, v, p) for i, (v, p) in zip(self.fresh_ids(len(inserts)), inserts, strict=True)]
            self.table.merge(arrow(source), on="id")
            updated = {row[0]: row for row in source}
            expected = Counter(updated.pop(row[0], row) for row in self.current.elements())
            self.settle(expected + Counter(updated.values()))

    if HAS["delete"]:
        @rule(below=st.integers(-3, 4), part=st.sampled_from([None, *PARTS]))
        def delete(self, below, part) -> None:
            where = pc.field("v") < below
            if part is not None:
                where = where | (pc.field("part") == part)
            deleted = self.table.delete(where)
            kept = Counter({r: n for r, n in self.current.items()
                            if not ((r[1] is not None and r[1] < below) or r[2] == part)})
            assert deleted == sum(self.current.values()) - sum(kept.values())
            self.settle(kept)

    if HAS["diff"]:
        @rule(data=st.data())
        def diff(self, data) -> None:
            last = len(self.versions) - 1
            start = data.draw(st.integers(0, last), label="from")
            end = data.draw(st.integers(0, last), label="to")
            self.table.refresh()
            d = self.table.diff(start, end, key=())
            assert rows_of(d.added) == self.versions[end] - self.versions[start]
            assert rows_of(d.removed) == self.versions[start] - self.versions[end]

    @invariant()
    def matches_the_model(self) -> None:
        self.table.refresh()
        assert self.table.version == len(self.versions) - 1
        assert rows_of(self.table.snapshot().to_arrow()) == self.current


# At least 200 examples in CI; more under the "dev" and "long" profiles.
TableModel.TestCase.settings = settings(max_examples=max(200, settings().max_examples),
                                        stateful_step_count=8)
test_table_model = TableModel.TestCase
