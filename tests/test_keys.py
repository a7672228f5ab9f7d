"""A declared key is enforced on append: no key twice in a batch, no key already in the table."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.testing import FaultyFileSystem, assert_table_equal, commit_after

from helpers import run_threads

SCHEMA = pa.schema([("id", pa.int64()), ("region", pa.string()), ("amount", pa.int64())])


def rows(ids, region="eu", amount=0):
    return pa.table({"id": pa.array(ids, pa.int64()), "region": [region] * len(ids),
                     "amount": pa.array([amount] * len(ids), pa.int64())}, schema=SCHEMA)


def data_files(t):
    return {f.path for f in lf.Table(t.uri).snapshot().files}


def stored_parquet(t):
    """Parquet files on storage (committed or not), relative to the table root."""
    fs, root = t.storage.arrow_fs()
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {i.path[len(root) + 1:] for i in infos if i.path.endswith(".parquet") and "_delta_log" not in i.path}


def test_append_refuses_a_key_the_table_holds(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1, 2, 3]))
    before = stored_parquet(t)
    with pytest.raises(lf.DuplicateKeyError, match=r"1 key\(s\) of \['id'\] are already in the table.*'id': 3"):
        t.append(rows([3, 4]))
    assert t.version == 1 and stored_parquet(t) == before
    assert t.append(rows([4])) == 2  # new keys pass
    assert sorted(t.to_arrow().column("id").to_pylist()) == [1, 2, 3, 4]


def test_append_refuses_a_key_twice_in_one_batch(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    with pytest.raises(lf.DuplicateKeyError, match=r"2 key\(s\).*more than once.*'id': 5.*'id': 6"):
        t.append(rows([5, 6, 5, 7, 6]))
    assert t.version == 0 and stored_parquet(t) == set()


def test_unkeyed_tables_take_repeated_rows(table_uri):
    t = lf.Table.create(table_uri, SCHEMA)
    t.append(rows([1, 1]))
    t.append(rows([1]))
    assert t.to_arrow().num_rows == 3


def test_composite_key_with_a_partition_column(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, partition_by=["region"], key=["region", "id"])
    t.append(rows([1, 2], "eu"))
    t.append(rows([1, 2], "us"))  # the same ids in another region are other keys
    with pytest.raises(lf.DuplicateKeyError, match="'region': 'us', 'id': 2"):
        t.append(pa.concat_tables([rows([3], "eu"), rows([2], "us")]))
    assert t.version == 2


def test_null_keys_are_values_like_any_other(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["region", "id"])
    t.append(pa.table({"id": pa.array([1, None], pa.int64()), "region": [None, "eu"], "amount": [0, 0]},
                      schema=SCHEMA))
    t.append(rows([1], "eu"))
    with pytest.raises(lf.DuplicateKeyError, match="'region': 'eu', 'id': None"):
        t.append(pa.table({"id": pa.array([None], pa.int64()), "region": ["eu"], "amount": [1]}, schema=SCHEMA))
    with pytest.raises(lf.DuplicateKeyError, match="more than once"):
        t.append(pa.table({"id": pa.array([None, None], pa.int64()), "region": ["us", "us"], "amount": [1, 1]},
                          schema=SCHEMA))
    # A keyed diff of what the appends made pairs every row.
    assert t.diff(0).summary.inserted == 3


def test_only_files_whose_key_range_overlaps_are_read(tmp_path):
    memory = fsspec.filesystem("memory")
    faulty = FaultyFileSystem(memory)
    uri = f"memory://keys-{tmp_path.name}"
    t = lf.Table.create(uri, SCHEMA, key=["id"], storage_options={"filesystem": faulty})
    for start in range(0, 1000, 100):  # 10 files: even ids 0-98, 100-198, ...
        t.append(rows(range(start, start + 100, 2)))
    faulty.calls.clear()
    t.append(rows([151, 1001]))  # 151 is in the second file's range only
    reads = {p for op, p in faulty.calls if op == "read" and p.endswith(".parquet")}
    assert len(reads) == 1
    commit = t.history(limit=1)[0]
    assert commit.info["isBlindAppend"] is False  # it read the table
    faulty.calls.clear()
    t.append(rows([5000]))  # beyond every file: none read
    assert not [p for op, p in faulty.calls if op == "read" and p.endswith(".parquet")]


def test_exactly_once_retries_stay_no_ops(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    v = t.append(rows([1, 2]), app_id="job", txn_version=7)
    assert t.append(rows([1, 2]), app_id="job", txn_version=7) == v
    other = lf.Table(table_uri)  # a retry racing the first attempt
    commit_after(other, lambda: t.append(rows([3]), app_id="job", txn_version=8))
    assert other.append(rows([3]), app_id="job", txn_version=8) == v + 1
    assert sorted(t.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert stored_parquet(t) == data_files(t)


def test_retry_racing_a_conflicting_commit_and_its_own_first_attempt(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    first, retry = lf.Table(table_uri), lf.Table(table_uri)

    def winners():
        t.append(rows([1, 9]))  # could hold the retry's key 5: a conflict
        first.append(rows([5]), app_id="job", txn_version=1)

    commit_after(retry, winners)
    assert retry.append(rows([5]), app_id="job", txn_version=1) == 2
    assert sorted(t.to_arrow().column("id").to_pylist()) == [1, 5, 9]
    assert stored_parquet(t) == data_files(t)


def test_concurrent_appends_of_one_new_key_commit_once(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    t.append(rows([1]))
    other = lf.Table(table_uri)
    commit_after(other, lambda: t.append(rows([7], amount=1)))
    with pytest.raises(lf.DuplicateKeyError, match="'id': 7"):
        other.append(rows([7], amount=2))
    assert_table_equal(t.to_arrow(), pa.concat_tables([rows([1]), rows([7], amount=1)]))
    assert stored_parquet(t) == data_files(t)  # the loser's file was deleted


def test_concurrent_appends_of_other_keys_both_commit(table_uri):
    t = lf.Table.create(table_uri, SCHEMA, key=["id"])
    other = lf.Table(table_uri)
    commit_after(other, lambda: t.append(rows([100])))  # outside the range: no conflict
    assert other.append(rows([7])) == 2
    commit_after(other, lambda: t.append(rows([5, 9])))  # overlapping range: checked again
    assert other.append(rows([8])) == 4
    assert sorted(t.to_arrow().column("id").to_pylist()) == [5, 7, 8, 9, 100]


def test_threads_appending_the_same_key(table_uri):
    lf.Table.create(table_uri, SCHEMA, key=["id"])
    outcomes: list[str] = []

    def append(n: int) -> None:
        try:
            lf.Table(table_uri).append(rows([42], amount=n))
            outcomes.append("committed")
        except lf.DuplicateKeyError:
            outcomes.append("duplicate")

    run_threads(append, [(n,) for n in range(4)])
    assert sorted(outcomes) == ["committed"] + ["duplicate"] * 3
    t = lf.Table(table_uri)
    assert t.to_arrow().column("id").to_pylist() == [42]
    assert stored_parquet(t) == data_files(t)
