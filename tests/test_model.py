"""Model-based test: random sequences of table operations against a plain in-memory model.

The model is the list of every version's rows (a multiset of (id, v, part)).
Hypothesis drives creates, appends (through the handle and through a stale second
handle), checkpoints, log cleanup with short retentions, reopening, time travel by
version and by instant, reads through the stale handle, and, where the Table has
them, merge, delete, diff, column renames (the model keeps its own names; each
version records the table's) and a drop of `v` re-added under its name (a new
column: every row reads null; a diff across both is refused); after every step
the table must equal the model.
Runs 200 examples in CI (profile "ci"); `HYPOTHESIS_PROFILE=dev` or `long` runs more.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import lakeflow as lf

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.int64()), ("part", pa.string())])
PARTS = ["a", "b", "ü/x=1"]
HAS = {name: hasattr(lf.Table, name) for name in ("merge", "delete", "diff", "rename_column")}

values = st.integers(-3, 3) | st.none()
retentions = st.sampled_from([dt.timedelta(0), dt.timedelta(milliseconds=1),
                              dt.timedelta(milliseconds=30), dt.timedelta(hours=1)])
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
        self.names = {"v": "v", "part": "part"}  # the model's column -> the table's name for it now
        self.version_names = [dict(self.names)]
        self.drops: list[int] = []  # versions that dropped `v` (the next one adds it back)
        self.mapped_at: int | None = None  # the version that turned column mapping on
        self.next_id = 0
        self.floor = 0  # the oldest version log cleanup left reachable
        self.checkpointed: set[int] = set()

    def teardown(self) -> None:
        fs = fsspec.filesystem("memory")
        root = "/" + self.uri.split("://", 1)[1]
        if fs.exists(root):
            fs.rm(root, recursive=True)

    @property
    def current(self) -> Rows:
        return self.versions[-1]

    def out(self, rows) -> pa.Table:
        """Model rows as the table names its columns now."""
        return arrow(rows).rename_columns(["id", self.names["v"], self.names["part"]])

    def read(self, table: pa.Table, version: int | None = None) -> Rows:
        """A table's rows in the model's names, as the table named them at `version` (default: now)."""
        names = self.version_names[-1 if version is None else version]
        table = table.rename_columns([{names[k]: k for k in names}.get(c, c) for c in table.column_names])
        if "v" not in table.column_names:  # dropped at that version
            table = table.append_column("v", pa.nulls(table.num_rows, pa.int64()))
        return rows_of(table)

    def settle(self, expected: Rows) -> None:
        """Record what an operation should have produced: a new version, or none when nothing changed."""
        version = lf.Table(self.uri).version
        if version == len(self.versions):
            self.versions.append(expected)
            self.version_names.append(dict(self.names))
            if version % 3 == 0:  # delta.checkpointInterval
                self.checkpointed.add(version)
        else:
            assert version == len(self.versions) - 1, "more than one commit"
            assert expected == self.current, "the table changed without a commit"

    def version_from(self, data, lowest: int, label: str) -> int:
        """A version in [lowest, last], drawn without depending on `lowest`.

        `lowest` may depend on the clock (what log cleanup deleted), and hypothesis
        needs the same draws when it replays an example.
        """
        last = len(self.versions) - 1
        return lowest + data.draw(st.integers(0, last), label=label) % (last - lowest + 1)

    def fresh_ids(self, n: int) -> list[int]:
        self.next_id += n
        return list(range(self.next_id - n, self.next_id))

    @rule(new=st.lists(st.tuples(values, parts), max_size=4), stale=st.booleans())
    def append(self, new, stale) -> None:
        rows = [(i, v, p) for i, (v, p) in zip(self.fresh_ids(len(new)), new, strict=True)]
        (self.stale if stale else self.table).append(self.out(rows))
        self.settle(self.current + Counter(rows))

    @rule()
    def checkpoint(self) -> None:
        assert self.table.checkpoint() == len(self.versions) - 1
        self.checkpointed.add(len(self.versions) - 1)

    @rule(retention=retentions, checkpoint_first=st.booleans())
    def cleanup_log(self, retention, checkpoint_first) -> None:
        if checkpoint_first:  # as maintenance jobs do; else only earlier checkpoints anchor it
            self.checkpoint()
        time.sleep(0.02)  # quick commits are stamped up to a few ms ahead of the clock
        deleted = self.table.cleanup_log(retention=retention)
        if deleted:
            anchor = deleted[-1] + 1
            assert deleted == list(range(self.floor, anchor)) and anchor in self.checkpointed
            self.floor = anchor

    @rule()
    def stale_reads(self) -> None:
        """An old handle's version and snapshot are the latest, whatever cleanup deleted."""
        assert self.stale.version == len(self.versions) - 1
        assert self.stale.snapshot().version == len(self.versions) - 1
        assert self.read(self.stale.snapshot().to_arrow()) == self.current

    @rule()
    def reopen(self) -> None:
        self.table = lf.Table(self.uri)

    @rule(data=st.data())
    def time_travel(self, data) -> None:
        gone = data.draw(st.integers(0, len(self.versions) - 1), label="maybe gone")
        if gone < self.floor:
            with pytest.raises(lf.VersionNotFoundError):
                self.table.snapshot(version=gone)
        version = self.version_from(data, self.floor, "version")
        assert self.read(self.table.snapshot(version=version).to_arrow(), version) == self.versions[version]
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
            self.table.merge(self.out(source), on="id")
            updated = {row[0]: row for row in source}
            expected = Counter(updated.pop(row[0], row) for row in self.current.elements())
            self.settle(expected + Counter(updated.values()))

    if HAS["delete"]:
        @rule(below=st.integers(-3, 4), part=st.sampled_from([None, *PARTS]))
        def delete(self, below, part) -> None:
            where = pc.field(self.names["v"]) < below
            if part is not None:
                where = where | (pc.field(self.names["part"]) == part)
            deleted = self.table.delete(where)
            kept = Counter({r: n for r, n in self.current.items()
                            if not ((r[1] is not None and r[1] < below) or r[2] == part)})
            assert deleted == sum(self.current.values()) - sum(kept.values())
            self.settle(kept)

    @rule(below=st.integers(-3, 4), step=st.integers(1, 3))
    def update(self, below, step) -> None:
        v = self.names["v"]
        updated = self.table.update(pc.field(v) < below, {v: f"{v} + {step}"})
        changed = Counter({(i, x + step if x is not None and x < below else x, p): n
                           for (i, x, p), n in self.current.items()})
        assert updated == sum(n for (_, x, _), n in self.current.items() if x is not None and x < below)
        self.settle(changed)

    @rule(new=st.lists(st.tuples(values, parts), max_size=4))
    def overwrite(self, new) -> None:
        rows = [(i, v, p) for i, (v, p) in zip(self.fresh_ids(len(new)), new, strict=True)]
        self.table.overwrite(self.out(rows))
        self.settle(Counter(rows))

    @rule(data=st.data())
    def restore(self, data) -> None:
        """Restore an earlier version: its rows and its column names come back."""
        # Not to before column mapping came on or before a drop: a diff across that is refused.
        lowest = max(self.floor, self.mapped_at or 0, self.drops[-1] + 1 if self.drops else 0)
        version = self.version_from(data, lowest, "restore to")
        self.table.restore(version)
        self.names = dict(self.version_names[version])
        self.settle(self.versions[version])

    if HAS["diff"]:
        @rule(data=st.data())
        def diff(self, data) -> None:
            start = self.version_from(data, self.floor, "from")
            end = self.version_from(data, self.floor, "to")
            self.table.refresh()
            lo, hi = sorted((start, end))
            absent = hi in self.drops  # no `v` at the newer end: the diff has none
            if not absent and any(lo < x < hi for x in self.drops):  # `v` is another column at each end
                with pytest.raises(lf.UnsupportedFeatureError, match="another column"):
                    self.table.diff(start, end, key=())
                return
            d = self.table.diff(start, end, key=())
            # A diff across a rename shows the newer names; across a drop, no `v` at all.
            before, after = (Counter({(i, None if absent else v, p): n for (i, v, p), n in self.versions[w].items()})
                             for w in (start, end))
            assert self.read(d.added, hi) == after - before
            assert self.read(d.removed, hi) == before - after

    if HAS["rename_column"]:
        @rule(column=st.sampled_from(["v", "part"]), back=st.booleans())
        def rename(self, column, back) -> None:
            """Rename a column (turning column mapping on) or rename it back; the rows stay."""
            new = column if back else f"{column}_{len(self.versions)}"
            if new == self.names[column]:
                return
            self.table.rename_column(self.names[column], new)
            self.names[column] = new
            self.settle(self.current)
            self.mapped_at = self.mapped_at or len(self.versions) - 1

        @rule()
        def drop_and_add_back(self) -> None:
            """Drop `v`, then add a column of the same name: a new column, which every row reads as null."""
            self.table.drop_columns(self.names["v"])
            cleared = Counter({(i, None, p): n for (i, _, p), n in self.current.items()})
            self.settle(cleared)
            self.mapped_at = self.mapped_at or len(self.versions) - 1
            self.drops.append(len(self.versions) - 1)
            self.table.add_columns([pa.field(self.names["v"], pa.int64())])
            self.settle(cleared)

    @invariant()
    def matches_the_model(self) -> None:
        self.table.refresh()
        assert self.table.version == len(self.versions) - 1
        assert self.read(self.table.snapshot().to_arrow()) == self.current


# At least 200 examples in CI; more under the "dev" and "long" profiles.
TableModel.TestCase.settings = settings(max_examples=max(200, settings().max_examples),
                                        stateful_step_count=8)
test_table_model = TableModel.TestCase
