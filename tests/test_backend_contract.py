"""Every transport passes the one shipped contract suite, each checked against raw storage.

One subclass per backend: memory, file, s3 (moto), seaweedfs (a second real S3 server) and gs
(the emulator), each giving a transport factory and raw hooks that go around objstore — the
process's memory registry, the files, boto3, the emulator's JSON API. The last subclass is what
the README promises a user can do: a transport written outside the package (a dict-backed
``dictfs://`` store defined in this module), registered under its own scheme, proved by the
same suite.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from objstore.backends import (
    Buffer,
    LocalTransport,
    MemoryTransport,
    ObjectInfo,
    ObjectListing,
    Transport,
    open_backend,
    open_transport,
    register_transport,
    unregister_transport,
)
from objstore.backends import _memory as memory_module
from objstore.errors import AlreadyExistsError, NotFoundError, PreconditionFailedError
from objstore.testing.contract import BackendContract, TransportOpener
from tests.servers.gcs import GCSEmulator
from tests.servers.seaweedfs import SeaweedFS

MiB = 1024 * 1024


def _bucket_and_prefix(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.split("://", 1)[1].partition("/")
    return bucket, prefix


def _joined(*parts: str) -> str:
    return "/".join(part for part in parts if part)


# -- memory ------------------------------------------------------------------------------------


class TestMemoryContract(BackendContract):
    """``memory://NAME``; a root below it is the named store ``NAME/root``."""

    @pytest.fixture
    def transport_factory(self) -> Iterator[TransportOpener]:
        name = f"contract-{uuid.uuid4().hex}"
        opened: set[str] = set()

        def factory(root: str) -> Transport:
            opened.add(_joined(name, root))
            return MemoryTransport(_joined(name, root))

        yield factory
        for store in opened:
            MemoryTransport.discard(store)

    def _stores(self, transport: Transport) -> dict[str, Any]:
        name = transport.url.removeprefix("memory://")
        return {
            store[len(name) :].lstrip("/"): objects
            for store, objects in memory_module._registry.items()
            if store == name or store.startswith(name + "/")
        }

    def raw_get(self, transport: Transport, key: str) -> bytes | None:
        for root, store in self._stores(transport).items():
            if not root or key.startswith(root + "/"):
                obj = store.objects.get(key[len(root) + 1 :] if root else key)
                if obj is not None:
                    return bytes(obj.data)
        return None

    def _owner(self, transport: Transport, key: str) -> tuple[Any, str]:
        """The named store holding ``key`` (the deepest root above it) and its key there."""
        roots = [r for r in self._stores(transport) if r and key.startswith(r + "/")]
        if not roots:
            name = transport.url.removeprefix("memory://")
            return memory_module._named_store(name), key
        root = max(roots, key=len)
        return self._stores(transport)[root], key[len(root) + 1 :]

    def raw_put(self, transport: Transport, key: str, data: bytes) -> None:
        store, key = self._owner(transport, key)
        with store.lock:
            version = str(next(store.versions))
            store.objects[key] = memory_module._Object(data, version, time.time())

    def raw_list(self, transport: Transport) -> list[str]:
        return sorted(
            _joined(root, key)
            for root, store in self._stores(transport).items()
            for key in store.objects
        )

    def raw_delete(self, transport: Transport, key: str) -> None:
        store, key = self._owner(transport, key)
        with store.lock:
            store.objects.pop(key, None)

    # memory:// lives in one process (persistent = False, checked by
    # test_persistence_across_processes_is_what_the_transport_claims): no process can race.
    test_processes_racing_put_if_absent_have_one_winner = None  # type: ignore[assignment]
    test_processes_cas_counter_reaches_exact_total = None  # type: ignore[assignment]


# -- local directory ---------------------------------------------------------------------------


class TestFileContract(BackendContract):
    """A local directory; raw access is the files themselves (lock files left out)."""

    @pytest.fixture
    def transport_factory(self, tmp_path: Path) -> TransportOpener:
        return lambda root: LocalTransport(tmp_path / "store" / root)

    def _path(self, transport: Transport, key: str) -> Path:
        assert isinstance(transport, LocalTransport)
        return transport.root.joinpath(*key.split("/"))

    def raw_get(self, transport: Transport, key: str) -> bytes | None:
        path = self._path(transport, key)
        return path.read_bytes() if path.is_file() else None

    def raw_put(self, transport: Transport, key: str, data: bytes) -> None:
        path = self._path(transport, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def raw_list(self, transport: Transport) -> list[str]:
        assert isinstance(transport, LocalTransport)
        if not transport.root.exists():
            return []
        return sorted(
            path.relative_to(transport.root).as_posix()
            for path in transport.root.rglob("*")
            if path.is_file() and ".objstore-locks" not in path.parts
        )

    def raw_delete(self, transport: Transport, key: str) -> None:
        self._path(transport, key).unlink(missing_ok=True)


# -- S3: moto and SeaweedFS --------------------------------------------------------------------


class _S3Raw:
    """Raw hooks over a boto3 client (``self.client``, set by each subclass's fixture)."""

    client: Any

    def raw_get(self, transport: Transport, key: str) -> bytes | None:
        bucket, prefix = _bucket_and_prefix(transport.url)
        try:
            response = self.client.get_object(Bucket=bucket, Key=_joined(prefix, key))
        except self.client.exceptions.NoSuchKey:
            return None
        data: bytes = response["Body"].read()
        return data

    def raw_put(self, transport: Transport, key: str, data: bytes) -> None:
        bucket, prefix = _bucket_and_prefix(transport.url)
        self.client.put_object(Bucket=bucket, Key=_joined(prefix, key), Body=data)

    def raw_list(self, transport: Transport) -> list[str]:
        bucket, prefix = _bucket_and_prefix(transport.url)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/" if prefix else ""
        )
        start = len(prefix) + 1 if prefix else 0
        return sorted(item["Key"][start:] for page in pages for item in page.get("Contents", ()))

    def raw_delete(self, transport: Transport, key: str) -> None:
        bucket, prefix = _bucket_and_prefix(transport.url)
        self.client.delete_object(Bucket=bucket, Key=_joined(prefix, key))


STREAM_OPTIONS = {"part_size": 5 * MiB, "parts_in_flight": 1}
"""Small parts, one in flight: a streamed create holds about 10 MiB, well under half of the
bounded-memory test's 48 MiB."""


class TestS3Contract(_S3Raw, BackendContract):
    """S3 on the moto server (the AWS environment points boto3 and objstore at it)."""

    @pytest.fixture
    def transport_factory(self, s3_url: str, moto_server: str) -> TransportOpener:
        self.client = boto3.client("s3", endpoint_url=moto_server)
        return lambda root: open_transport(_joined(s3_url, root), **STREAM_OPTIONS)


class TestSeaweedFSContract(_S3Raw, BackendContract):
    """S3 on SeaweedFS, addressed by storage options only."""

    @pytest.fixture
    def transport_factory(self, seaweedfs_server: SeaweedFS) -> TransportOpener:
        self.client = seaweedfs_server.client()
        url = seaweedfs_server.fresh_url()
        options = {**seaweedfs_server.storage_options, **STREAM_OPTIONS}
        return lambda root: open_transport(_joined(url, root), **options)


# -- GCS (emulator) ----------------------------------------------------------------------------


class TestGCSContract(BackendContract):
    """GCS on the emulator that enforces preconditions; raw access is its JSON API."""

    @pytest.fixture
    def transport_factory(self, gs_url: str, gcs_emulator: GCSEmulator) -> TransportOpener:
        self.endpoint = gcs_emulator.endpoint_url
        return lambda root: open_transport(_joined(gs_url, root), chunk_size=MiB)

    endpoint: str

    def _call(self, method: str, path: str, data: bytes | None = None) -> bytes | None:
        request = urllib.request.Request(f"{self.endpoint}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def _object(self, transport: Transport, key: str) -> str:
        bucket, prefix = _bucket_and_prefix(transport.url)
        name = urllib.parse.quote(_joined(prefix, key), safe="")
        return f"/storage/v1/b/{bucket}/o/{name}"

    def raw_get(self, transport: Transport, key: str) -> bytes | None:
        return self._call("GET", self._object(transport, key) + "?alt=media")

    def raw_put(self, transport: Transport, key: str, data: bytes) -> None:
        bucket, prefix = _bucket_and_prefix(transport.url)
        query = urllib.parse.urlencode({"uploadType": "media", "name": _joined(prefix, key)})
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data)

    def raw_list(self, transport: Transport) -> list[str]:
        bucket, prefix = _bucket_and_prefix(transport.url)
        query = urllib.parse.urlencode({"prefix": prefix + "/" if prefix else ""})
        body = self._call("GET", f"/storage/v1/b/{bucket}/o?{query}")
        items = json.loads(body or b"{}").get("items") or []
        start = len(prefix) + 1 if prefix else 0
        return sorted(item["name"][start:] for item in items)

    def raw_delete(self, transport: Transport, key: str) -> None:
        self._call("DELETE", self._object(transport, key))


# -- a transport from outside the package ------------------------------------------------------


_DICT_STORES: dict[str, tuple[threading.Lock, dict[str, tuple[bytes, str]]]] = {}
_DICT_VERSIONS = itertools.count(1)
_DICT_LOCK = threading.Lock()


class DictTransport(Transport):
    """``dictfs://NAME[/prefix]``: objects in a module-level dict, one per NAME.

    Written only against objstore's public names, as a user would; it keeps the defaults of
    every capability but ``persistent`` (its objects live in this process).
    """

    scheme = "dictfs"
    persistent = False

    def __init__(self, name: str, prefix: str = "") -> None:
        self._name = name
        self._prefix = prefix.strip("/")
        with _DICT_LOCK:
            self._lock, self._objects = _DICT_STORES.setdefault(name, (threading.Lock(), {}))

    @classmethod
    def from_url(cls, url: str, /, **storage_options: Any) -> DictTransport:
        """The registered factory: ``dictfs://NAME/prefix``; it takes no options."""
        if storage_options:
            raise ValueError(f"dictfs takes no storage options, got {sorted(storage_options)}")
        parsed = urllib.parse.urlsplit(url)
        if not parsed.netloc:
            raise ValueError(f"{url!r} names no dict")
        return cls(parsed.netloc, parsed.path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DictTransport, (self._name, self._prefix))

    @property
    def url(self) -> str:
        return f"dictfs://{_joined(self._name, self._prefix)}"

    def _full(self, key: str) -> str:
        return _joined(self._prefix, key)

    def _version(self) -> str:
        with _DICT_LOCK:
            return f"v{next(_DICT_VERSIONS)}"

    async def get(self, key: str) -> tuple[bytes, str]:
        with self._lock:
            found = self._objects.get(self._full(key))
        if found is None:
            raise NotFoundError(key)
        return found

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return (await self.get(key))[0][start:end]

    async def head(self, key: str) -> ObjectInfo:
        data, version = await self.get(key)
        return ObjectInfo(key, len(data), version)

    async def put(self, key: str, data: Buffer) -> str:
        version = self._version()
        with self._lock:
            self._objects[self._full(key)] = (bytes(data), version)
        return version

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        version = self._version()
        with self._lock:
            if self._full(key) in self._objects:
                raise AlreadyExistsError(key)
            self._objects[self._full(key)] = (bytes(data), version)
        return version

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        new_version = self._version()
        with self._lock:
            current = self._objects.get(self._full(key))
            if current is None:
                raise NotFoundError(key)
            if current[1] != version:
                raise PreconditionFailedError(key, expected_version=version)
            self._objects[self._full(key)] = (bytes(data), new_version)
        return new_version

    async def list(self, prefix: str) -> ObjectListing:
        start = _joined(self._prefix, prefix) + "/" if (self._prefix or prefix) else ""
        cut = len(self._prefix) + 1 if self._prefix else 0
        with self._lock:
            found = [
                ObjectInfo(name[cut:], len(data), version)
                for name, (data, version) in self._objects.items()
                if name.startswith(start)
            ]
        return sorted(found, key=lambda info: info.key)

    async def delete(self, key: str, version: str | None = None) -> None:
        with self._lock:
            current = self._objects.get(self._full(key))
            if current is None:
                return
            if version is not None and current[1] != version:
                raise PreconditionFailedError(key, expected_version=version)
            del self._objects[self._full(key)]


class TestOutOfPackageTransportContract(BackendContract):
    """The README's promise: a transport defined outside objstore, registered under its own
    scheme and opened by URL, passes the shipped suite."""

    @pytest.fixture
    def transport_factory(self) -> Iterator[TransportOpener]:
        register_transport("dictfs", DictTransport.from_url)
        name = f"contract-{uuid.uuid4().hex}"
        try:
            yield lambda root: open_transport(f"dictfs://{_joined(name, root)}")
        finally:
            unregister_transport("dictfs")
            _DICT_STORES.pop(name, None)

    def _objects(self, transport: Transport) -> dict[str, tuple[bytes, str]]:
        assert isinstance(transport, DictTransport)
        return _DICT_STORES[transport.url.removeprefix("dictfs://").split("/")[0]][1]

    def raw_get(self, transport: Transport, key: str) -> bytes | None:
        found = self._objects(transport).get(key)
        return None if found is None else found[0]

    def raw_put(self, transport: Transport, key: str, data: bytes) -> None:
        self._objects(transport)[key] = (data, f"raw-{uuid.uuid4().hex}")

    def raw_list(self, transport: Transport) -> list[str]:
        return sorted(self._objects(transport))

    def raw_delete(self, transport: Transport, key: str) -> None:
        self._objects(transport).pop(key, None)

    # dictfs:// lives in one process (persistent = False, checked by
    # test_persistence_across_processes_is_what_the_transport_claims): no process can race.
    test_processes_racing_put_if_absent_have_one_winner = None  # type: ignore[assignment]
    test_processes_cas_counter_reaches_exact_total = None  # type: ignore[assignment]


def test_a_registered_scheme_opens_through_every_entry_point() -> None:
    """The out-of-package transport is reached by URL from the public openers too."""
    register_transport("dictfs", DictTransport.from_url)
    try:
        backend = open_backend("dictfs://reached/p")
        assert isinstance(backend.async_backend.transport, DictTransport)
        backend.put_if_absent("k", b"v")
        assert backend.get("k")[0] == b"v"
        with pytest.raises(ValueError, match="no storage options"):
            open_backend("dictfs://reached", colour="blue")
    finally:
        unregister_transport("dictfs")
        _DICT_STORES.pop("reached", None)
