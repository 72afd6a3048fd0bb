"""Shared fixtures: one fresh store URL per test, on every backend.

The S3 (moto server), SeaweedFS and GCS (gcp-storage-emulator) fixtures start their servers
on 127.0.0.1 themselves; a missing dependency or a server that does not start is an error,
never a skip.

``seaweedfs`` (a second, real S3 server) is not in :data:`ALL_BACKENDS`: the backend contract
suite and the multi-process races (:data:`SHARED_BACKENDS`) run on it, the store tests do not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import (
    MemoryTransport,
    Transport,
    register_transport,
    unregister_transport,
)

pytest_plugins = ["tests.servers.s3", "tests.servers.seaweedfs", "tests.servers.gcs"]

ALL_BACKENDS = ["memory", "file", "s3", "gs"]
SHARED_BACKENDS = ["file", "s3", "seaweedfs", "gs"]


def make_store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of ``kind`` for the current test."""
    if kind == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if kind == "file":
        return str(tmp_path / "store")
    if kind == "s3":
        return str(request.getfixturevalue("s3_url"))
    if kind == "seaweedfs":
        return str(request.getfixturevalue("seaweedfs_url"))
    if kind == "gs":
        return str(request.getfixturevalue("gs_url"))
    raise AssertionError(kind)


@pytest.fixture(params=ALL_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each backend in turn."""
    return make_store_url(request.param, request, tmp_path)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store that other processes can reach (every backend but memory)."""
    return make_store_url(request.param, request, tmp_path)


@pytest.fixture(autouse=True)
def _reset_objstore_logging() -> Iterator[None]:
    """Undo what a CLI run did to the ``objstore`` logger (``-v`` sets DEBUG and adds a
    handler on the runner's stderr), so no test sees another test's logging set-up."""
    yield
    logger = logging.getLogger("objstore")
    for handler in [h for h in logger.handlers if getattr(h, "objstore_cli", False)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


class IgnoresPreconditions(MemoryTransport):
    """A store like some S3-compatible gateways: every conditional write just succeeds."""

    async def put_if_absent(self, key: str, data: Any) -> str:
        return await self.put(key, data)

    async def put_if_match(self, key: str, data: Any, version: str) -> str:
        return await self.put(key, data)

    async def delete(self, key: str, version: str | None = None) -> None:
        await super().delete(key, None)


def _open_lax(url: str, /, **storage_options: Any) -> Transport:
    if storage_options:
        raise ValueError(f"{url}: unused storage options {sorted(storage_options)}")
    return IgnoresPreconditions(url.split("://", 1)[1])


LAX_SCHEME = "lax"
"""URLs ``lax://name`` open an in-memory store that ignores preconditions, registered through
the public transport registry as a third-party transport would be."""


@pytest.fixture
def lax_url() -> Iterator[str]:
    """A fresh ``lax://…`` store URL: a store that ignores preconditions."""
    register_transport(LAX_SCHEME, _open_lax, replace=True)
    name = f"lax-{uuid.uuid4().hex}"
    try:
        yield f"{LAX_SCHEME}://{name}"
    finally:
        unregister_transport(LAX_SCHEME)
        MemoryTransport.discard(name)
