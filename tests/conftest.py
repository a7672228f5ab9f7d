"""Shared fixtures: every table test runs once per storage backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ["memory", "local"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
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
    else:
        yield str(tmp_path / "table")


@pytest.fixture
def local_uri(tmp_path) -> str:
    """A local table path (for tests that need deltalake or real files)."""
    return str(tmp_path / "table")
