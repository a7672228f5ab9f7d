"""Vectorized pruning (lakeflow.pruning): it only ever keeps more files than the
per-file guarantees do, and a warm handle reuses its snapshot."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.actions import Add

SCHEMA = pa.schema([("i", pa.int32()), ("f", pa.float64()), ("g", pa.float32()), ("s", pa.string()),
                    ("p", pa.int64())])
INTS = st.integers(-5, 5)
FLOATS = st.one_of(st.floats(-5, 5, width=32), st.sampled_from([math.nan, math.inf, -math.inf, -0.0]))
STRINGS = st.sampled_from(["", "a", "b", "ba", "c", "é"])
ODD = st.sampled_from([None, "x", True, 1.5, "NaN", 10**30])  # missing or of the wrong JSON type


def _stat(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, ODD)


@st.composite
def file_stats(draw: st.DrawFn) -> tuple[str | None, str | None]:
    """A file's stats JSON (random, sometimes lying or broken) and its partition value."""
    mins, maxs, nulls = {}, {}, {}
    for name, values in (("i", INTS), ("f", FLOATS), ("g", FLOATS), ("s", STRINGS)):
        if draw(st.booleans()):
            a, b = draw(_stat(values)), draw(_stat(values))
            mins[name], maxs[name] = a, b
        if draw(st.booleans()):
            nulls[name] = draw(st.sampled_from([0, 0, 1, None, "0"]))
    stats = {"numRecords": 3, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    text = None if draw(st.integers(0, 9)) == 0 else json.dumps(stats)
    part = draw(st.sampled_from([None, "-1", "0", "3"]))
    return text, part


def _literal(draw: st.DrawFn, name: str) -> Any:
    if name == "s":
        return draw(STRINGS)
    if name in ("f", "g"):
        return draw(st.one_of(FLOATS, INTS))
    return draw(st.one_of(INTS, st.sampled_from([2.5, 3.0])))


@st.composite
def filters(draw: st.DrawFn, depth: int = 0) -> pc.Expression:
    """A random filter over SCHEMA: comparisons, is_in, is_null, and/or/not."""
    kind = draw(st.integers(0, 6 if depth < 3 else 3))
    name = draw(st.sampled_from(["i", "f", "g", "s", "p"]))
    field = pc.field(name)
    if kind == 0:
        return field.is_null(nan_is_null=draw(st.booleans()))
    if kind == 1:
        return field.isin([_literal(draw, "s" if name == "s" else "i") for _ in range(draw(st.integers(1, 3)))])
    if kind <= 3:
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        lit = pc.scalar(_literal(draw, name))
        swap = draw(st.booleans())
        a, b = (lit, field) if swap else (field, lit)
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if kind == 4:
        return ~draw(filters(depth + 1))
    left, right = draw(filters(depth + 1)), draw(filters(depth + 1))
    return left & right if kind == 5 else left | right


def _table(files: list[tuple[str | None, str | None]]) -> lf.Table:
    t = lf.Table.create(f"memory://prune-{uuid.uuid4().hex}", SCHEMA, partition_by=["p"])
    adds = [Add(path=f"p={part}/f{n}.parquet", partition_values={"p": part}, size=1,
                modification_time=0, stats=text) for n, (text, part) in enumerate(files)]
    t.transaction("WRITE").add(*adds).commit()
    return t


@settings(max_examples=200, deadline=None)
@given(st.lists(file_stats(), min_size=1, max_size=12), filters())
def test_vectorized_pruning_keeps_every_file_the_per_file_guarantees_keep(files, flt):
    snap = _table(files).snapshot()
    # The dataset carries every file with its per-file guarantee (the path before
    # vectorized pruning); its fragments are the files that path keeps.
    by_guarantee = {frag.path.rsplit("/", 2)[-2] + "/" + frag.path.rsplit("/", 1)[-1]
                    for frag in snap.to_pyarrow_dataset().get_fragments(filter=flt)}
    kept = {f.path for f in snap.files_matching(flt)}
    assert by_guarantee <= kept
    assert kept == by_guarantee  # survivors are pruned by the same guarantees after


def test_pruning_reads_one_file_of_many(table_uri):
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64()), ("tag", pa.string())]))
    for i in range(30):
        t.append(pa.table({"id": [i * 10 + j for j in range(10)], "tag": [f"t{i}"] * 10}))
    snap = lf.Table(table_uri).snapshot()
    assert [f.num_records for f in snap.files_matching(pc.field("id") == 123)] == [10]
    assert snap.to_arrow(filter=pc.field("id") == 123).to_pylist() == [{"id": 123, "tag": "t12"}]
    assert len(snap.files_matching(pc.field("tag").isin(["t3", "t4"]) | (pc.field("id") > 289))) == 3
    assert len(snap.files_matching(~(pc.field("id") < 290))) == 1


@pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)
def test_a_warm_handle_reuses_its_snapshot_until_the_table_moves(table_uri):
    t = lf.Table.create(table_uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1]}))
    first = t.snapshot()
    assert t.snapshot() is first  # nothing new: same snapshot, its files and scans kept
    lf.Table(table_uri).append(pa.table({"id": [2]}))  # another handle commits
    moved = t.snapshot()
    assert moved is not first and moved.version == first.version + 1
    assert sorted(moved.to_arrow().column("id").to_pylist()) == [1, 2]
    assert first.to_arrow().column("id").to_pylist() == [1]
