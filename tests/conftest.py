"""Shared fixtures: every table test runs once per storage backend (memory, local, S3).

"S3" is a moto server on 127.0.0.1, started once per session. While it runs, the
standard AWS environment variables point at it, so tests open `s3://` tables with
no storage_options, exactly as a user with a configured environment would;
`s3_options` gives the same settings as explicit deltalake-style options.

Tests marked `slow` are deselected unless `-m` selects them (`pytest -m slow`).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ["memory", "local", "s3"]
S3_BUCKET = "lakeflow-tests"
S3_KEY_ID = "lakeflow-test-key-id"
S3_SECRET = "lakeflow-test-secret-Zq81"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave `slow` tests out of the default run; `-m slow` (or any -m) decides itself."""
    if config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def _serialized_moto_server() -> Any:
    """A moto server whose requests run one at a time.

    moto checks `If-None-Match: *` and then stores the object as two steps with no
    lock, so under concurrent requests two conditional PUTs of one key can both
    succeed (docs/reliability.md shows it). Real S3 makes the check and the write
    one atomic step; serializing requests gives the emulator that guarantee.
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerializedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def serialized(environ: Any, start_response: Any) -> list[bytes]:
                with lock:
                    return list(app(environ, start_response))

            self._server = make_server(self._ip_address, self._port, serialized, True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerializedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto, create the test bucket, and point the AWS environment at it."""
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = _serialized_moto_server()
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, str]:
    """Explicit deltalake-style storage options for the moto server (lakeflow and deltalake)."""
    return {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
    return str(request.param)


@pytest.fixture
def table_uri(backend: str, tmp_path) -> Iterator[str]:
    """A fresh, empty table location on the parametrized backend."""
    if backend == "memory":
        uri = f"memory://t-{uuid.uuid4().hex}"
        yield uri
        import fsspec

        fs = fsspec.filesystem("memory")
        root = "/" + uri.split("://", 1)[1]
        if fs.exists(root):
            fs.rm(root, recursive=True)
    elif backend == "s3":
        yield f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex}"
    else:
        yield str(tmp_path / "table")


@pytest.fixture
def local_uri(tmp_path) -> str:
    """A local table path (for tests that need deltalake or real files)."""
    return str(tmp_path / "table")
