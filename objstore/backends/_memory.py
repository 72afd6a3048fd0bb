"""In-process object storage: a dict under a lock, one per named store.

``memory://NAME`` opened twice in one process gives the same objects (so a writer and a
reader in one test can meet, and a "restarted" store finds what the crashed one wrote); the
objects live until the process ends or :meth:`MemoryTransport.discard` is called.
``memory://`` alone is always a fresh, isolated store that lives as long as its transport. Unlike
fsspec's ``MemoryFileSystem`` there is no single global dict and every operation is atomic.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from objstore.backends._base import Buffer, ObjectInfo, ObjectListing, Transport
from objstore.errors import AlreadyExistsError, NotFoundError, PreconditionFailedError

__all__ = ["MemoryTransport"]


@dataclass(slots=True)
class _Object:
    data: bytes
    version: str
    mtime: float


@dataclass(slots=True, weakref_slot=True)
class _Objects:
    """The shared state of one named in-memory store."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, _Object] = field(default_factory=dict)
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


_registry: dict[str, _Objects] = {}
_registry_lock = threading.Lock()


_anonymous: weakref.WeakValueDictionary[str, _Objects] = weakref.WeakValueDictionary()
"""Anonymous stores by name, only so that a transport unpickled here finds its objects."""


def _reopen(name: str, anonymous: bool) -> MemoryTransport:
    if not anonymous:
        return MemoryTransport(name)
    transport = MemoryTransport()
    store = _anonymous.get(name)
    if store is not None:
        transport._name, transport._store = name, store
    return transport


def _named_store(name: str) -> _Objects:
    with _registry_lock:
        store = _registry.get(name)
        if store is None:
            store = _Objects()
            _registry[name] = store
        return store


class MemoryTransport(Transport):
    """Objects in this process's memory, shared by every transport opened with the name."""

    scheme = "memory"
    persistent = False

    def __init__(self, name: str = "") -> None:
        if name:
            self._name = name
            self._store = _named_store(name)
            self._anonymous = False
        else:
            self._name = f"anonymous-{uuid.uuid4().hex}"
            self._store = _Objects()
            self._anonymous = True
            _anonymous[self._name] = self._store

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the name: unpickled in this process, it reaches the same objects (an
        anonymous store only while some transport on it is alive); in another process,
        a store of that name there."""
        return (_reopen, (self._name, self._anonymous))

    @staticmethod
    def discard(name: str) -> None:
        """Forget the named store and its objects (transports already open keep theirs)."""
        with _registry_lock:
            _registry.pop(name, None)

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    def _new_object(self, data: Buffer) -> _Object:
        return _Object(bytes(data), str(next(self._store.versions)), time.time())

    async def get(self, key: str) -> tuple[bytes, str]:
        with self._store.lock:
            obj = self._store.objects.get(key)
        if obj is None:
            raise NotFoundError(key)
        return obj.data, obj.version

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        data, _ = await self.get(key)
        return data[start:end]

    async def get_range_stream(self, key: str, start: int, end: int) -> AsyncIterator[Buffer]:
        """One view of the stored object (immutable ``bytes``): no copy at all."""
        data, _ = await self.get(key)
        yield memoryview(data)[start:end]

    async def head(self, key: str) -> ObjectInfo:
        with self._store.lock:
            obj = self._store.objects.get(key)
        if obj is None:
            raise NotFoundError(key)
        return ObjectInfo(key, len(obj.data), obj.version, obj.mtime)

    async def put(self, key: str, data: Buffer) -> str:
        obj = self._new_object(data)
        with self._store.lock:
            self._store.objects[key] = obj
        return obj.version

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        obj = self._new_object(data)
        with self._store.lock:
            if key in self._store.objects:
                raise AlreadyExistsError(key)
            self._store.objects[key] = obj
        return obj.version

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        obj = self._new_object(data)
        with self._store.lock:
            current = self._store.objects.get(key)
            if current is None:
                raise NotFoundError(key)
            if current.version != version:
                raise PreconditionFailedError(
                    key, expected_version=version, actual_version=current.version
                )
            self._store.objects[key] = obj
        return obj.version

    async def list(self, prefix: str) -> ObjectListing:
        start = prefix + "/" if prefix else ""
        with self._store.lock:
            items = [
                ObjectInfo(key, len(obj.data), obj.version, obj.mtime)
                for key, obj in self._store.objects.items()
                if key.startswith(start)
            ]
        items.sort(key=lambda info: info.key)
        return items

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        start = prefix + "/" if prefix else ""
        with self._store.lock:
            keys = heapq.nsmallest(
                limit,
                (key for key in self._store.objects if key > start_after and key.startswith(start)),
            )
            chosen = [(key, self._store.objects[key]) for key in keys]
        return [ObjectInfo(key, len(obj.data), obj.version, obj.mtime) for key, obj in chosen]

    async def delete(self, key: str, version: str | None = None) -> None:
        with self._store.lock:
            current = self._store.objects.get(key)
            if current is None:
                return
            if version is not None and current.version != version:
                raise PreconditionFailedError(
                    key, expected_version=version, actual_version=current.version
                )
            del self._store.objects[key]
