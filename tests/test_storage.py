"""Storage guarantees: exclusive create on every store, S3 options and caching,
refusal of stores without atomic create, and secrets kept out of messages."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.storage import _s3_options, open_storage
from lakeflow.testing import Fault, FaultyFileSystem

from helpers import ID_SCHEMA as SCHEMA
from helpers import run_threads


def race(uri: str, path: str, writers: int, options=None) -> list[int]:
    """`writers` threads, each with its own storage handle, create `path` at once.

    Every loser must see FileExistsError (a lost race the commit loop retries), nothing else.
    """
    barrier = threading.Barrier(writers)
    winners: list[int] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        storage = open_storage(uri, options)
        barrier.wait()
        try:
            storage.write_if_absent(path, str(i).encode())
            winners.append(i)
        except FileExistsError:
            pass
        except Exception as e:
            errors.append(e)

    run_threads(write, [(i,) for i in range(writers)])
    assert errors == []
    return winners


def test_write_if_absent_has_exactly_one_winner(table_uri):
    for n in range(10):
        path = f"_delta_log/{n:020d}.json"
        winners = race(table_uri, path, writers=8)
        assert len(winners) == 1, winners
        assert open_storage(table_uri).read(path) == str(winners[0]).encode()


s3_only = pytest.mark.parametrize("backend", ["s3"], indirect=True)


@s3_only
def test_s3_lost_race_is_file_exists_although_the_412_names_no_condition(table_uri, s3_endpoint):
    """SeaweedFS answers a lost conditional put with a bare 412 (s3fs: EINVAL)."""
    path = "_delta_log/00000000000000000000.json"
    storage = open_storage(table_uri)
    storage.write_if_absent(path, b"first")
    with pytest.raises(FileExistsError):
        storage.write_if_absent(path, b"second")
    assert storage.read(path) == b"first"


CONFLICT_409 = (409, {"Content-Type": "application/xml"},
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ConditionalRequestConflict</Code>'
                "<Message>A conflicting operation occurred. If using PutObject you can retry the request."
                "</Message></Error>")


@dataclass
class Conflicts:
    """Makes moto answer the next `left` conditional PUTs with AWS's 409; when the last
    one is answered, `landing` (the write that was in flight) runs."""

    left: int = 0
    landing: Callable[[], object] | None = None
    puts: int = 0


@pytest.fixture
def conflicts(monkeypatch) -> Conflicts:
    from moto.s3.responses import S3Response

    state = Conflicts()
    original = S3Response.put_object

    def put_object(self):
        if self.headers.get("If-None-Match") != "*":
            return original(self)
        state.puts += 1
        if not state.left:
            return original(self)
        state.left -= 1
        if not state.left and state.landing is not None:
            state.landing()
        return CONFLICT_409

    monkeypatch.setattr(S3Response, "put_object", put_object)
    return state


def test_s3_409_conflict_retries_the_put_until_it_wins(moto_uri, conflicts):
    """The write in flight failed: the key is still absent, so the same key is tried again."""
    uri, options = moto_uri
    conflicts.left = 2
    storage = open_storage(uri, options)
    storage.write_if_absent("_delta_log/00000000000000000000.json", b"ours")
    assert storage.read("_delta_log/00000000000000000000.json") == b"ours"
    assert conflicts.puts == 3


def test_s3_409_conflict_then_the_other_write_lands_is_a_lost_race(moto_uri, conflicts):
    uri, options = moto_uri
    other = open_storage(uri, options)
    conflicts.left, conflicts.landing = 1, lambda: other.write_if_absent("x.json", b"theirs")
    with pytest.raises(FileExistsError):
        open_storage(uri, options).write_if_absent("x.json", b"ours")
    assert other.read("x.json") == b"theirs"


def test_s3_409_conflict_that_never_ends_fails_typed_and_writes_nothing(moto_uri, conflicts):
    uri, options = moto_uri
    conflicts.left = 1000
    storage = open_storage(uri, options)
    with pytest.raises(lf.StorageError, match="in flight") as excinfo:
        storage.write_if_absent("x.json", b"ours")
    assert "nothing was written" in str(excinfo.value)
    assert not storage.exists("x.json") and conflicts.puts == 7


def test_append_whose_commit_meets_a_409_commits_once_past_the_winner(moto_uri, conflicts):
    """Another writer's commit of version 1 is in flight (409), then lands: the append
    commits version 2 (deltalake's scan cannot read data from moto's server: the
    SeaweedFS concurrency tests check the same outcome against it)."""
    uri, options = moto_uri
    lf.Table.create(uri, SCHEMA, storage_options=options)
    here, elsewhere = lf.Table(uri, storage_options=options), lf.Table(uri, storage_options=options)
    landed: list[int] = []
    conflicts.left, conflicts.landing = 1, lambda: landed.append(elsewhere.append(pa.table({"id": [1]})))
    assert here.append(pa.table({"id": [2]})) == 2 and landed == [1]
    fresh = lf.Table(uri, storage_options=options)
    assert fresh.version == 2 and sorted(fresh.to_arrow().column("id").to_pylist()) == [1, 2]


@s3_only
@pytest.mark.parametrize("options", [{}, {"use_listings_cache": True}], ids=["default", "cache-on"])
def test_s3_listing_cache_never_hides_new_commits(table_uri, s3_endpoint, options):
    storage = open_storage(table_uri, options)
    storage.write_if_absent("_delta_log/00000000000000000000.json", b"0")
    assert [f.name for f in storage.list_dir("_delta_log")] == ["00000000000000000000.json"]
    # Another machine (its own S3 client) commits version 1 after that listing.
    other = fsspec.filesystem("s3", skip_instance_cache=True)
    root = table_uri.removeprefix("s3://")
    other.pipe_file(f"{root}/_delta_log/00000000000000000001.json", b"1", mode="create")
    assert storage.read("_delta_log/00000000000000000001.json") == b"1"
    assert storage.exists("_delta_log/00000000000000000001.json")
    assert len(storage.list_dir("_delta_log")) == 2


@s3_only
def test_s3_handles_see_commits_made_elsewhere(table_uri, s3_options):
    here = lf.Table.create(table_uri, SCHEMA)
    here.history()
    elsewhere = lf.Table(table_uri, storage_options=s3_options)  # another S3 client
    assert elsewhere.append(pa.table({"id": [1]})) == 1
    assert here.refresh() == 1 and lf.Table(table_uri).version == 1
    # A create that raced a create elsewhere loses, even though its listing was empty.
    late = open_storage(table_uri + "-x")
    assert late.list_dir("_delta_log") == []
    lf.Table.create(table_uri + "-x", SCHEMA, storage_options=s3_options)
    with pytest.raises(lf.TableExistsError):
        lf.Table.create(table_uri + "-x", SCHEMA)


def test_s3_option_names_map_to_s3fs():
    deltalake_style = {
        "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    assert _s3_options(deltalake_style) == ({
        "key": "id", "secret": "s", "token": "t", "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"region_name": "eu-west-1"}, "use_listings_cache": False}, True)
    s3fs_style = {"key": "id", "secret": "s", "endpoint_url": "http://e",
                  "client_kwargs": {"verify": False}, "region": "us-east-2"}
    assert _s3_options(s3fs_style) == ({
        "key": "id", "secret": "s", "endpoint_url": "http://e", "use_listings_cache": False,
        "client_kwargs": {"verify": False, "region_name": "us-east-2"}}, True)
    for value, honoured in [("etag", True), ("disabled", False), ("dynamo:locks", False)]:
        assert _s3_options({"AWS_CONDITIONAL_PUT": value})[1] is honoured
        assert _s3_options({"conditional_put": value})[1] is honoured


@s3_only
def test_explicit_storage_options_reach_s3(table_uri, s3_options, s3_endpoint, monkeypatch):
    from deltalake import DeltaTable

    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(name)
    t = lf.Table.create(table_uri, SCHEMA, storage_options=s3_options)
    t.append(pa.table({"id": [1, 2]}))
    s3fs_style = {"endpoint_url": s3_endpoint, "key": s3_options["AWS_ACCESS_KEY_ID"],
                  "secret": s3_options["AWS_SECRET_ACCESS_KEY"],
                  "client_kwargs": {"region_name": "us-east-1"}}
    again = lf.Table(table_uri, storage_options=s3fs_style)
    assert again.version == 1 and again.to_arrow().num_rows == 2
    assert DeltaTable(table_uri, storage_options=s3_options).to_pyarrow_table().num_rows == 2


UNSAFE = [
    pytest.param("local", {}, id="fsspec-local"),
    pytest.param("s3", {"AWS_CONDITIONAL_PUT": "disabled"}, id="s3-without-conditional-put"),
]


@pytest.fixture
def unsafe_uri(request, tmp_path, s3_endpoint, table_uri) -> str:
    return f"local://{tmp_path}/t" if request.param == "local" else table_uri


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
@pytest.mark.parametrize("unsafe_uri, options", UNSAFE, indirect=["unsafe_uri"])
def test_store_without_atomic_create_is_refused_unless_opted_in(unsafe_uri, options):
    fs, root = fsspec.core.url_to_fs(unsafe_uri)
    with pytest.raises(lf.StorageError, match="allow_unsafe_writes") as excinfo:
        lf.Table.create(unsafe_uri, SCHEMA, storage_options=options)
    assert "put-if-absent" in str(excinfo.value) and "lost" in str(excinfo.value)
    assert not fs.exists(root)
    opted_in = {**options, "allow_unsafe_writes": True}
    t = lf.Table.create(unsafe_uri, SCHEMA, storage_options=opted_in)
    assert t.append(pa.table({"id": [1]})) == 1
    files = set(fs.find(root))
    # A handle without the opt-in reads the table but writes nothing, not even data files.
    reader = lf.Table(unsafe_uri, storage_options=options)
    assert reader.to_arrow().num_rows == 1
    with pytest.raises(lf.StorageError, match="allow_unsafe_writes"):
        reader.append(pa.table({"id": [2]}))
    assert set(fs.find(root)) == files


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_secrets_are_masked_in_error_messages():
    """An SDK error that echoes a credential is reported with the credential masked."""
    echo = OSError(f"signature mismatch for secret {SECRET}")
    fs = FaultyFileSystem(fsspec.filesystem("memory"), [Fault("any", times=None, error=echo)])
    with pytest.raises(lf.StorageError) as excinfo:
        lf.Table("memory://masked", storage_options={"filesystem": fs, "aws_secret_access_key": SECRET})
    assert SECRET not in str(excinfo.value) and "***" in str(excinfo.value)
    assert excinfo.value.__cause__ is echo  # the original stays available to the caller


def _masked(message: str, secrets: dict) -> str:
    echo = OSError(message)
    fs = FaultyFileSystem(fsspec.filesystem("memory"), [Fault("any", times=None, error=echo)])
    with pytest.raises(lf.StorageError) as excinfo:
        lf.Table("memory://masked", storage_options={"filesystem": fs, **secrets})
    return str(excinfo.value).split(": OSError: ", 1)[1]


@pytest.mark.parametrize("message, secrets, shown", [
    # Values under 4 characters are never masked: they cannot be told from ordinary text.
    ("bucket prefix key", {"key": "k", "secret": "s"}, "bucket prefix key"),
    ("cannot reach abc.example.com", {"aws_secret_access_key": "abc"}, "cannot reach abc.example.com"),
    # A value is masked where it stands whole, never inside a longer word.
    ("Credential=AKIAEXAMPLE7/20261201/us-east-1 rejected", {"aws_access_key_id": "AKIAEXAMPLE7"},
     "Credential=***/20261201/us-east-1 rejected"),
    ("secret 'hunter22' is wrong; hunter22x and xhunter22 are other words", {"secret": "hunter22"},
     "secret '***' is wrong; hunter22x and xhunter22 are other words"),
    ("token abc+/def= expired.", {"token": "abc+/def="}, "token *** expired."),
    # Overlapping values: the longer one is masked whole.
    ("keys wJalrXUt and wJalrXUtnFEMI", {"key": "wJalrXUt", "secret": "wJalrXUtnFEMI"}, "keys *** and ***"),
])
def test_secret_masking_masks_whole_values_only(message, secrets, shown):
    assert _masked(message, secrets) == shown


@s3_only
def test_secrets_never_in_reprs_messages_or_logs(table_uri, s3_options, caplog):
    options = s3_options  # the server checks signatures: only the real secret works
    secret = options["AWS_SECRET_ACCESS_KEY"]
    with caplog.at_level(logging.DEBUG):
        t = lf.Table.create(table_uri, SCHEMA, storage_options=options)
        t.append(pa.table({"id": [1]}))
        assert t.to_arrow().num_rows == 1
        shown = [repr(t), str(t.storage), repr(t.storage), repr(t.history()), repr(t.snapshot())]
        failures = []
        for call in (lambda: lf.Table("s3://no-such-bucket/t", storage_options=options),
                     lambda: lf.Table.create("s3://no-such-bucket/t", SCHEMA, storage_options=options),
                     lambda: lf.Table(table_uri, storage_options={**options, "bogus_option": 1})):
            with pytest.raises(lf.LakeflowError) as excinfo:
                call()
            failures.append("".join(traceback.format_exception(excinfo.value)))
    assert any("no-such-bucket" in f for f in failures)
    for text in [*shown, *failures, caplog.text]:
        assert secret not in text
