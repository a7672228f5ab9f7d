"""The columnar log state (lakeflow.file_set) against a plain dict replay of the same actions.

A `FileSet` keeps a checkpoint's add rows as Arrow columns and the later commits
as an overlay; every view of it (mapping, path order, columns, checkpoint rows)
must equal what replaying the actions into a dict of `Add` objects gives.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.actions import Action, Add, Remove
from lakeflow.checkpoint import write_checkpoint
from lakeflow.errors import CorruptLogError
from lakeflow.file_set import FileSet, decode_adds, encode_adds
from lakeflow.log import list_log, read_commit
from lakeflow.log_reader import LogReader
from lakeflow.storage import open_storage

PATHS = st.sampled_from([f"{d}f{i}.parquet" for d in ("", "p=a/", "p=b/") for i in range(6)])
DVS = st.none() | st.builds(
    lambda n, c: {"storageType": "u", "pathOrInlineDv": f"ab^-aqEH.-t@S}}K{{vb[*k^{n}", "offset": 1,
                  "sizeInBytes": 36, "cardinality": c}, st.integers(0, 3), st.integers(1, 9))


@st.composite
def adds(draw: st.DrawFn, path: str | None = None) -> Add:
    p = path if path is not None else draw(PATHS)
    stats = draw(st.none() | st.builds(lambda n: json.dumps({"numRecords": n, "minValues": {"id": n}}),
                                       st.integers(0, 99)))
    return Add(path=p, partition_values={"p": p[2]} if p.startswith("p=") else {},
               size=draw(st.integers(0, 10**6)), modification_time=draw(st.integers(0, 10**12)),
               data_change=draw(st.booleans()), stats=stats,
               tags=draw(st.none() | st.just({"k": "v"})), deletion_vector=draw(DVS))


# An edit: put an add, or drop a path.
EDITS = st.lists(st.one_of(adds(), PATHS), max_size=8)


def _model(base: Sequence[Add], commits: Sequence[Sequence[Add | str]]) -> dict[str, Add]:
    files = {a.path: a for a in base}
    for edits in commits:
        for e in edits:
            if isinstance(e, Add):
                files[e.path] = e
            else:
                files.pop(e, None)
    return files


def _check_views(files: FileSet, expected: Mapping[str, Add]) -> None:
    assert dict(files.items()) == expected
    assert sorted(files) == sorted(expected) and len(files) == len(expected)
    assert bool(files) == bool(expected)
    assert sorted(files.values(), key=lambda a: a.path) == sorted(expected.values(), key=lambda a: a.path)
    for p in [*expected, "absent.parquet", "p=a/f0.parquet"]:
        assert (p in files) == (p in expected)
        assert files.get(p) == expected.get(p)
    ordered = [expected[p] for p in sorted(expected)]
    view = files.by_path()
    assert len(view) == len(ordered) and [view[i] for i in range(len(view))] == ordered
    assert list(view) == ordered
    assert view.paths.to_pylist() == sorted(expected)
    assert view.stats().to_pylist() == [a.stats for a in ordered]
    assert view.partition_values() == [dict(a.partition_values) for a in ordered]
    assert sorted(decode_adds(files.table()), key=lambda a: a.path) == ordered


@settings(max_examples=150, deadline=None)
@given(st.lists(adds(), max_size=12), st.lists(EDITS, max_size=4), st.booleans())
def test_a_file_set_is_the_dict_replay_of_its_edits(base, commits, touch_first):
    files = FileSet.from_table(encode_adds(base))
    if touch_first and base:
        files.get(base[0].path)  # a lookup before the bulk decode hands out the same object
    _check_views(files, _model(base, []))
    for i in range(len(commits)):
        edit = files.edit()
        for e in commits[i]:
            if isinstance(e, Add):
                edit.put(e)
            else:
                edit.drop(e)
        before = dict(files.items())
        files = edit.build()
        _check_views(files, _model(base, commits[:i + 1]))
        assert before == _model(base, commits[:i])  # the earlier state did not change


# ---- whole logs: adds, removes and DV re-adds across checkpoints ---------------------


def _oracle(commits: Sequence[Sequence[Action]]) -> tuple[dict[str, Add], dict[str, Remove]]:
    """The active files and tombstones by the protocol: per commit, removes before adds, keyed by path."""
    files: dict[str, Add] = {}
    tombstones: dict[str, Remove] = {}
    for actions in commits:
        for a in actions:
            if isinstance(a, Remove):
                files.pop(a.path, None)
                tombstones[a.path] = a
        for a in actions:
            if isinstance(a, Add):
                files[a.path] = a
                tombstones.pop(a.path, None)
    return files, tombstones


def _norm_remove(r: Remove) -> tuple[Any, ...]:
    """A remove as a checkpoint keeps it (no stats or tags; absent and null fields alike)."""
    dv = {k: v for k, v in r.deletion_vector.items() if v is not None} if r.deletion_vector else None
    return (r.path, r.deletion_timestamp, r.data_change, dict(r.partition_values or {}), r.size, dv)


def _norm(add: Add) -> tuple[Any, ...]:
    """An add as a checkpoint round trip keeps it (absent and null fields alike)."""
    dv = {k: v for k, v in add.deletion_vector.items() if v is not None} if add.deletion_vector else None
    return (add.path, dict(add.partition_values), add.size, add.modification_time, add.data_change,
            add.stats, dict(add.tags or {}), dv)


# One commit: new files, removes of active ones, DV re-adds (remove and add of a path).
STEPS = st.lists(st.tuples(st.sampled_from(["add", "remove", "readd", "checkpoint"]),
                           st.integers(0, 10**6), adds(path="")), min_size=1, max_size=14)


def _commit(t: lf.Table, kind: str, pick: int, template: Add, counter: list[int]) -> None:
    active = sorted(t.state.files)
    if kind == "checkpoint":
        t.checkpoint()
        return
    if kind == "add" or not active:
        counter[0] += 1
        t.transaction().add(*(Add(**{**template.__dict__, "path": f"p=a/n{counter[0]}-{i}.parquet"})
                              for i in range(1 + pick % 3))).commit()
        return
    old = t.state.files[active[pick % len(active)]]
    tx = t.transaction().add(old.remove(int(time.time() * 1000)))  # kept by checkpoints (retention)
    if kind == "readd":
        dv = {"storageType": "u", "pathOrInlineDv": f"ab^-aqEH.-t@S}}K{{vb[*k^{pick}", "offset": 1,
              "sizeInBytes": 36, "cardinality": 1 + pick % 5}
        tx = tx.add(Add(**{**old.__dict__, "deletion_vector": dv, "data_change": True}))
    tx.commit()


@settings(max_examples=30, deadline=None)
@given(STEPS, st.integers(0, 14))
def test_every_version_equals_the_replay_of_all_commits(steps, at):
    uri = f"memory://fileset-{uuid.uuid4().hex}"
    t = lf.Table.create(uri, pa.schema([("id", pa.int64()), pa.field("p", pa.string())]), partition_by=["p"],
                        properties={"delta.enableDeletionVectors": "true", "delta.checkpointInterval": "4"})
    counter = [0]
    for i, (kind, pick, template) in enumerate(steps):
        if i == min(at, len(steps) - 1):
            t.checkpoint()  # at least one version comes from a checkpoint
        _commit(t, kind, pick, template, counter)
    storage = t.storage
    commits = [read_commit(storage, v) for v in range(t.version + 1)]
    assert list_log(storage).checkpoints
    fresh = LogReader(storage)
    for v in range(t.version + 1):
        state = fresh.load(v)
        expected, removed = _oracle(commits[:v + 1])
        assert sorted(map(_norm, state.files.values())) == sorted(map(_norm, expected.values()))
        assert sorted(state.files) == sorted(expected) == [a.path for a in state.files.by_path()]
        assert sorted(map(_norm_remove, state.tombstones.values())) == sorted(map(_norm_remove, removed.values()))
        assert sorted(state.tombstones) == sorted(removed) and len(state.tombstones) == len(removed)
    head = lf.Table(uri).snapshot()
    assert [f.path for f in head.files] == sorted(_oracle(commits)[0])


def test_a_checkpoint_of_a_columnar_state_reads_back_the_same_files(tmp_path):
    from deltalake import DeltaTable

    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1, 2]}))
    t.append(pa.table({"id": [3]}))
    t.checkpoint()
    t.append(pa.table({"id": [4]}))
    state = LogReader(open_storage(uri)).head  # checkpoint columns + one commit
    write_checkpoint(open_storage(uri), state)
    again = LogReader(open_storage(uri)).head
    assert dict(again.files.items()) == dict(state.files.items()) and len(again.files) == 3
    assert DeltaTable(uri).version() == 3 and len(DeltaTable(uri).file_uris()) == 3


def test_a_checkpoint_add_row_without_a_path_is_refused(tmp_path):
    import pyarrow.parquet as pq

    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1]}))
    t.checkpoint()
    path = tmp_path / "t" / "_delta_log" / "00000000000000000001.checkpoint.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    for row in rows:
        if row["add"] is not None:
            row["add"]["path"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    for v in (0, 1):  # no commits to fall back on: the checkpoint must be read
        (tmp_path / "t" / "_delta_log" / f"{v:020d}.json").unlink()
    with pytest.raises(CorruptLogError, match="without a path"):
        lf.Table(uri)


@given(st.lists(st.none() | st.just("") | st.just("{}") | st.just('{"minValues": {"id": 1}\n}') | st.builds(
    lambda lo, hi, n: json.dumps({"minValues": {"id": lo}, "maxValues": {"id": hi}, "nullCount": {"id": n}}),
    st.integers(-9, 9), st.integers(-9, 9), st.integers(0, 3)), min_size=1, max_size=12), st.integers(0, 2))
def test_stats_decode_the_same_from_a_column_as_from_strings(texts, offset):
    from lakeflow.pruning import json_stats

    columns = {"id": ("id", pa.int64())}
    column = pa.array(["pad"] * offset + texts, pa.string()).slice(offset)  # a slice: offsets start later
    expected, got = json_stats(texts, columns), json_stats(column, columns)
    if expected is None:
        assert got is None
    else:
        assert got is not None and {k: v.__dict__ for k, v in got.items()} == {
            k: v.__dict__ for k, v in expected.items()}


def test_a_checkpoint_that_adds_and_removes_a_path_keeps_the_file_as_a_commit_would(tmp_path):
    import pyarrow.parquet as pq

    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    t.append(pa.table({"id": [1]}))
    t.append(pa.table({"id": [2]}))
    t.checkpoint()
    path = tmp_path / "t" / "_delta_log" / "00000000000000000002.checkpoint.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    adds = [r["add"] for r in rows if r["add"] is not None]
    empty = {k: None for k in table.column_names}
    rows.append({**empty, "remove": {"path": adds[0]["path"], "deletionTimestamp": int(time.time() * 1000),
                                     "dataChange": True}})
    rows.append({**empty, "remove": {"path": "gone.parquet", "deletionTimestamp": int(time.time() * 1000),
                                     "dataChange": True}})
    rows.append({**empty, "add": {**adds[1], "size": 12345}})  # a later row of a path replaces an earlier one
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    state = LogReader(open_storage(uri)).head
    assert sorted(state.files) == sorted(a["path"] for a in adds) and state.files[adds[1]["path"]].size == 12345
    assert list(state.tombstones) == ["gone.parquet"]


def test_an_open_builds_no_add_and_a_pruned_read_only_the_kept_files(tmp_path, monkeypatch):
    import pyarrow.compute as pc

    from lakeflow import file_set

    uri = str(tmp_path / "t")
    t = lf.Table.create(uri, pa.schema([("id", pa.int64())]))
    for i in range(6):
        t.append(pa.table({"id": [i * 10, i * 10 + 1]}))
    t.checkpoint()
    built: list[int] = []
    real = file_set.decode_adds
    monkeypatch.setattr(file_set, "decode_adds", lambda table: built.append(table.num_rows) or real(table))
    handle = lf.Table(uri)
    assert handle.version == 6 and len(handle.state.files) == 6 and built == []
    assert handle.to_arrow(filter=pc.field("id") == 31).column("id").to_pylist() == [31]
    assert built == [1]  # the one file the statistics keep
    assert len(handle.snapshot().files) == 6 and built == [1, 6]  # all of them: one pass
