"""Writer features: lakeflow reads tables with domain metadata, row tracking, clustering and
Iceberg compatibility, and writes them only where it keeps what the feature requires;
vacuum honours vacuumProtocolCheck by checking the whole protocol before deleting a file."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_reader_features import WRITES, Log, _files, assert_same_rows, cm_table, every_read, field, oracle

import lakeflow as lf
from lakeflow.testing import copy_table


def protocol(*writer, reader=()) -> dict:
    return {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": list(reader),
            "writerFeatures": [*reader, *writer]}


def ids(n0: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(n0, n0 + n), pa.int64())})


def plain_table(root: Path, proto: dict, configuration=None, domains=(), add_extra=None) -> Log:
    """v1 and v2 each add a file of ids; `domains` are committed at v1."""
    log = Log(root, [field("id", "long")], proto, configuration)
    a = log.data("a.parquet", ids(0, 3), stats={"minValues": {"id": 0}, "maxValues": {"id": 2},
                                                "nullCount": {"id": 0}})
    log.commit({"add": {**a, **(add_extra or {})}}, *({"domainMetadata": d} for d in domains))
    log.commit({"add": {**log.data("b.parquet", ids(10, 2)), **(add_extra or {})}})
    return log


def row_tracking(root: Path) -> Log:
    return plain_table(root, protocol("domainMetadata", "rowTracking"), {"delta.enableRowTracking": "true"},
                       [{"domain": "delta.rowTracking", "configuration": json.dumps({"rowIdHighWaterMark": 4}),
                         "removed": False}], {"baseRowId": 0, "defaultRowCommitVersion": 1})


def clustered(root: Path) -> Log:
    return plain_table(root, protocol("domainMetadata", "clustering"), {},
                       [{"domain": "delta.clustering", "configuration": json.dumps({"clusteringColumns": ["id"]}),
                         "removed": False}], {"clusteringProvider": "liquid"})


def iceberg_compat(version: int):
    def make(root: Path) -> Log:
        feature = f"icebergCompatV{version}"
        return cm_table(root, protocol=protocol(feature, reader=["columnMapping"]))
    return make


REFUSED = {"rowTracking": row_tracking, "clustering": clustered,
           "icebergCompatV1": iceberg_compat(1), "icebergCompatV2": iceberg_compat(2)}


@pytest.mark.parametrize("feature", sorted(REFUSED))
def test_tables_with_these_writer_features_read_like_deltalake(tmp_path, table_uri, feature):
    src = tmp_path / "src"
    log = REFUSED[feature](src)
    copy_table(src, table_uri)
    t = lf.Table(table_uri)
    for v in range(log.version + 1):
        snap, expected = t.snapshot(version=v), oracle(src, v)
        for got in every_read(snap):
            assert_same_rows(got, expected)
    assert_same_rows(t.diff(-1).added, oracle(src, log.version))


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("feature", sorted(REFUSED))
def test_writes_to_tables_with_these_features_are_refused_naming_it(tmp_path, feature, write):
    REFUSED[feature](tmp_path)
    before = _files(tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match=feature):
        WRITES[write](lf.Table(str(tmp_path)))
    assert _files(tmp_path) == before


def test_iceberg_compat_is_the_unsupported_writer_feature_named_not_column_mapping(tmp_path):
    cm_table(tmp_path, protocol=protocol("icebergCompatV2", reader=["columnMapping"]))
    with pytest.raises(lf.UnsupportedFeatureError, match=r"feature\(s\) icebergCompatV2, which"):
        lf.Table(str(tmp_path)).append(lf.Table(str(tmp_path)).to_arrow())


def test_user_domains_are_kept_through_writes_and_checkpoints(tmp_path, table_uri):
    src = tmp_path / "src"
    domain = {"domain": "myapp", "configuration": json.dumps({"cursor": 7}), "removed": False}
    plain_table(src, protocol("domainMetadata"), domains=[domain])
    copy_table(src, table_uri)
    t = lf.Table(table_uri)
    t.append(ids(20, 2))
    t.delete(pc.field("id") == 0)
    t.compact()
    t.checkpoint()
    fresh = lf.Table(table_uri)
    assert {d: m.configuration for d, m in fresh.state.domains.items()} == {"myapp": domain["configuration"]}
    assert sorted(fresh.to_arrow()["id"].to_pylist()) == [1, 2, 10, 11, 20, 21]


# ---- vacuumProtocolCheck ----------------------------------------------------------------------

VACUUM_CHECK = protocol(reader=["vacuumProtocolCheck"])


def vacuum_all(t: lf.Table) -> lf.Table:
    t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    return t


def test_vacuum_protocol_check_tables_are_read_and_written(tmp_path, table_uri):
    # deltalake 1.6 refuses to read them ("not yet supported by the deltalake reader").
    src = tmp_path / "src"
    plain_table(src, VACUUM_CHECK)
    copy_table(src, table_uri)
    t = lf.Table(table_uri)
    for v, rows in enumerate([[], [0, 1, 2], [0, 1, 2, 10, 11]]):
        for got in every_read(t.snapshot(version=v)):
            assert sorted(got["id"].to_pylist()) == rows
    t.append(ids(20, 1))
    t.delete(pc.field("id") < 2)
    time.sleep(0.05)  # the tombstone must be older than the store's "now"
    result = t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    assert result.files == ("a.parquet",)  # rewritten by the delete
    assert sorted(lf.Table(table_uri).to_arrow()["id"].to_pylist()) == [2, 10, 11, 20]


def removed_file(root: Path, proto: dict) -> Log:
    """A table whose v3 removes a.parquet (vacuum would delete it), with `proto`."""
    log = plain_table(root, proto)
    first = json.loads((root / "_delta_log" / f"{1:020d}.json").read_text().splitlines()[1])["add"]
    log.commit({"remove": {"path": first["path"], "deletionTimestamp": 0, "dataChange": True}})
    return log


@pytest.mark.parametrize("proto, feature", [
    (protocol("rowTracking", "domainMetadata", reader=["vacuumProtocolCheck"]), "rowTracking"),
    (protocol("someFutureFeature", reader=["vacuumProtocolCheck"]), "someFutureFeature"),
    (protocol(reader=["vacuumProtocolCheck", "futureReaderFeature"]), "futureReaderFeature"),
])
def test_vacuum_refuses_tables_with_features_lakeflow_does_not_support(tmp_path, proto, feature):
    removed_file(tmp_path, proto)
    before = _files(tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match=feature):
        vacuum_all(lf.Table(str(tmp_path)))
    assert _files(tmp_path) == before


def test_vacuum_checks_the_protocol_it_finds_not_the_one_it_was_opened_with(tmp_path):
    log = removed_file(tmp_path, VACUUM_CHECK)
    t = lf.Table(str(tmp_path))
    # Another engine upgrades the table to a writer feature lakeflow does not know.
    log.commit({"protocol": protocol("someFutureFeature", reader=["vacuumProtocolCheck"])})
    before = _files(tmp_path)
    with pytest.raises(lf.UnsupportedFeatureError, match=r"vacuum refused.*someFutureFeature"):
        t.vacuum(retention=dt.timedelta(0), enforce_retention=False)
    assert _files(tmp_path) == before


# ---- every feature of the protocol: what lakeflow does (docs/compatibility.md's table) -------

READER_WRITER = {"columnMapping": "write", "deletionVectors": "write", "timestampNtz": "write",
                 "v2Checkpoint": "read", "vacuumProtocolCheck": "write", "variantType": "write",
                 "variantType-preview": "write", "typeWidening": "write", "typeWidening-preview": "write",
                 "variantShredding": "refused", "variantShredding-preview": "refused", "catalogManaged": "refused",
                 "catalogOwned-preview": "refused"}
WRITER_ONLY = {"appendOnly": "write", "invariants": "write", "checkConstraints": "write",
               "generatedColumns": "write", "allowColumnDefaults": "read", "changeDataFeed": "write",
               "identityColumns": "write", "rowTracking": "read", "domainMetadata": "write",
               "icebergCompatV1": "read", "icebergCompatV2": "read", "clustering": "read",
               "inCommitTimestamp": "write"}


@pytest.mark.parametrize("feature, status", sorted({**READER_WRITER, **WRITER_ONLY}.items()))
def test_what_lakeflow_does_with_each_protocol_feature(tmp_path, feature, status):
    # A table that lists the feature and uses nothing else (a variant-free schema, no mode).
    reader = [feature] if feature in READER_WRITER else []
    plain_table(tmp_path, protocol(reader=reader) if reader else protocol(feature))
    if status == "refused":
        with pytest.raises(lf.UnsupportedFeatureError, match=feature):
            lf.Table(str(tmp_path)).to_arrow()
        return
    assert sorted(lf.Table(str(tmp_path)).to_arrow()["id"].to_pylist()) == [0, 1, 2, 10, 11]
    if status == "read":
        with pytest.raises(lf.UnsupportedFeatureError, match=feature):
            lf.Table(str(tmp_path)).append(ids(20, 1))
    else:
        lf.Table(str(tmp_path)).append(ids(20, 1))
        assert lf.Table(str(tmp_path)).snapshot().num_rows == 6
