"""Property tests of the log: snapshots equal the running sum of appends, and a
checkpoint is a cached replay: replay(checkpoint + tail) == replay(all commits)."""

from __future__ import annotations

import uuid

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeflow as lf
from lakeflow.checkpoint import read_checkpoint
from lakeflow.log import list_log, read_commit, replay
from lakeflow.testing import arrow_tables, assert_table_equal

SCHEMA = pa.schema([("k", pa.int32()), ("s", pa.string()), ("x", pa.float64()),
                    pa.field("p", pa.string(), nullable=False)])
PART_VALUES = st.sampled_from(["a", "b/c", "d=e", "ü ", "%41"])
batches = arrow_tables(pa.schema([("k", pa.int32()), ("s", pa.string()), ("x", pa.float64())]), max_rows=8)


@settings(max_examples=25)
@given(st.lists(st.tuples(batches, PART_VALUES), min_size=1, max_size=6), st.integers(1, 3))
def test_snapshots_are_running_sums_and_checkpoints_are_cached_replays(appends, interval):
    uri = f"memory://prop-{uuid.uuid4().hex}"
    t = lf.Table.create(uri, SCHEMA, partition_by=["p"],
                        properties={"delta.checkpointInterval": str(interval)})
    expected = {0: SCHEMA.empty_table()}
    for batch, part in appends:
        data = batch.append_column(SCHEMA.field("p"), pa.array([part] * len(batch), pa.string()))
        before = t.version
        v = t.append(data)
        assert v == before + (1 if len(data) else 0)  # an empty append commits nothing
        expected[v] = pa.concat_tables([expected[before], data.cast(SCHEMA)])
    fresh = lf.Table(uri)
    assert sorted(expected) == list(range(fresh.version + 1))
    for v, rows in expected.items():
        assert_table_equal(fresh.snapshot(version=v).to_arrow(), rows)
    listing = list_log(t.storage)
    full = replay(None, [(v, read_commit(t.storage, v)) for v in sorted(listing.commits)])
    for cp, names in listing.checkpoints.items():
        tail = [(v, read_commit(t.storage, v)) for v in sorted(listing.commits) if v > cp]
        cached = replay(replay(None, [(cp, read_checkpoint(t.storage, names))]), tail)
        assert cached.files == full.files
        assert cached.metadata == full.metadata and cached.protocol == full.protocol
        assert {k: v.version for k, v in cached.txns.items()} == {k: v.version for k, v in full.txns.items()}
